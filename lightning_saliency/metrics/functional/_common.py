"""Private helpers shared by every score: argument checks, pixel ranking, chunked no-grad forwards, averaging."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor, nn

from lightning_saliency._checks import check_inputs
from lightning_saliency._chunking import run_chunked
from lightning_saliency._runtime import Run, eval_mode, preserved_rng
from lightning_saliency.targets import Target, TargetLike, as_target, resolved

__all__: list[str] = []

_TINY = 1e-12


def _check_batch_size(batch_size: int) -> None:
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int (images per forward), got {batch_size!r}.")


def _check_maps(
    maps: Tensor, inputs: Tensor | None = None, *, name: str = "maps", volumes: bool | None = None
) -> Tensor:
    """``maps`` as float32 ``[B, 1, H, W]`` (volumes: ``[B, 1, D, H, W]``) without NaN/inf.

    ``[B, H, W]`` is accepted too (``[B, D, H, W]`` for volumes: when ``inputs`` are volumes, or ``volumes``).
    """
    if volumes is None:
        volumes = (inputs is not None and inputs.ndim == 5) or (isinstance(maps, Tensor) and maps.ndim == 5)
    ok = isinstance(maps, Tensor) and (
        maps.ndim == (4 if volumes else 3) or (maps.ndim == (5 if volumes else 4) and maps.shape[1] == 1)
    )
    if not ok:
        got = f"shape {tuple(maps.shape)}" if isinstance(maps, Tensor) else type(maps).__name__
        want = "[B, 1, D, H, W] or [B, D, H, W]" if volumes else "[B, 1, H, W] or [B, H, W]"
        raise ValueError(f"{name} must be a Tensor {want}, got {got}.")
    if maps.ndim == (4 if volumes else 3):
        maps = maps[:, None]  # [B,1,H,W]
    if inputs is not None and (maps.shape[0] != inputs.shape[0] or maps.shape[2:] != inputs.shape[2:]):
        raise ValueError(
            f"{name} must match the inputs' batch and spatial size: inputs {tuple(inputs.shape)}, "
            f"{name} {tuple(maps.shape)}. Resize the maps to the input size first."
        )
    if inputs is not None:
        maps = maps.to(inputs.device)
    return torch.nan_to_num(maps.detach().float(), nan=0.0, posinf=0.0, neginf=0.0)


def _pixel_ranks(maps: Tensor) -> Tensor:
    """Rank of every pixel by saliency, ``[B, H*W]`` long, 0 = most salient.

    Ties (a constant or all-zero map included) are broken by raster order: the earlier pixel (row-major,
    top-left first) ranks first, so the ordering is deterministic.
    """
    return _stable_ranks(maps.flatten(1))[1]  # [B,HW]


def _stable_ranks(values: Tensor, descending: bool = True) -> tuple[Tensor, Tensor]:
    """``(order, ranks)`` along dim 1 of ``values [B, N]``, ties in index order: ``order[:, r]`` has rank ``r``."""
    order = torch.argsort(values, dim=1, descending=descending, stable=True)  # [B,N] indices, rank 0 first
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(values.shape[1], device=values.device).expand_as(order))
    return order, ranks


@contextlib.contextmanager
def _scoring(model: nn.Module, inputs: Tensor) -> Iterator[None]:
    """No-gradient scoring context: eval mode (restored per submodule), RNG preserved, ``inference_mode``."""
    with preserved_rng([inputs.device]), eval_mode(model), torch.inference_mode():
        yield


def _target_outputs(model: nn.Module, inputs: Tensor, targets: Target, run: Run, softmax: bool = True) -> Tensor:
    """Each input's target output ``[N]``; one forward.

    ``softmax``: the confidence, float32 (for a class: its softmax probability, Quantus' ``softmax=True``); else
    the score in the output's dtype (for a class: its logit).
    """
    logits = run.output(model, inputs)
    targets.check(logits)
    return targets.confidence(logits) if softmax else targets.score(logits)


def _chunked_target_outputs(
    model: nn.Module, inputs: Tensor, targets: Target, run: Run, batch_size: int, softmax: bool = True
) -> Tensor:
    """:func:`_target_outputs` in forwards of at most ``batch_size`` inputs."""
    out = run_chunked(
        lambda lo, hi: _target_outputs(model, inputs[lo:hi], targets[lo:hi], run, softmax),
        inputs.shape[0],
        batch_size,
        what="images",
    )  # on out-of-memory a chunk is retried at half the size
    return torch.cat(out) if out else inputs.new_zeros(0, dtype=torch.float32)


def _check_model_inputs(
    inputs: Tensor, targets: TargetLike, model: nn.Module | None = None, run: Run | None = None
) -> Target:
    """Checked inputs ``[B, C, ...]``, and ``targets`` as a :class:`~lightning_saliency.targets.Target` of ``B``.

    Given the ``model``, a target that needs it is resolved against its output on the clean inputs (a
    :class:`~lightning_saliency.targets.SegmentationTarget` without a mask: the pixels predicted as its category),
    so that perturbed inputs are scored on the same pixels.
    """
    check_inputs(inputs)
    target = as_target(targets, inputs.shape[0], inputs.device)
    if model is not None:
        with preserved_rng([inputs.device]):
            target = resolved(target, model, inputs, run or Run())
    return target


def _sum_update(values: Tensor) -> tuple[Tensor, Tensor]:
    """Sum and count of per-image values: the state every averaging metric keeps (DDP-reducible by ``sum``)."""
    values = values.detach().float()
    return values.sum(), torch.tensor(values.numel(), device=values.device)


def _mean_compute(total: Tensor, count: Tensor) -> Tensor:
    """``total / count``; 0 before any update (never NaN)."""
    return torch.where(count > 0, total / count.clamp_min(1), torch.zeros_like(total))
