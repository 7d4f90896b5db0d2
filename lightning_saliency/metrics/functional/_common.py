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
    flat = maps.flatten(1)  # [B,HW]
    order = torch.argsort(flat, dim=1, descending=True, stable=True)  # [B,HW] pixel indices, most salient first
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(flat.shape[1], device=flat.device).expand_as(order))
    return ranks


@contextlib.contextmanager
def _scoring(model: nn.Module, inputs: Tensor) -> Iterator[None]:
    """No-gradient scoring context: eval mode (restored per submodule), RNG preserved, ``inference_mode``."""
    with preserved_rng([inputs.device]), eval_mode(model), torch.inference_mode():
        yield


def _target_probs(model: nn.Module, inputs: Tensor, targets: Target, run: Run) -> Tensor:
    """Each input's target confidence ``[N]`` float32 (for a class: its softmax probability); one forward."""
    logits = run.output(model, inputs)
    targets.check(logits)
    return targets.confidence(logits)


def _chunked_target_probs(model: nn.Module, inputs: Tensor, targets: Target, run: Run, batch_size: int) -> Tensor:
    """:func:`_target_probs` in forwards of at most ``batch_size`` inputs."""
    out = run_chunked(
        lambda lo, hi: _target_probs(model, inputs[lo:hi], targets[lo:hi], run),
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
