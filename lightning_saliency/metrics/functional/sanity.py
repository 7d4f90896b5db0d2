"""Model-parameter randomisation sanity check (Adebayo et al. 2018), on a deep copy of the model."""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from lightning_saliency._runtime import Run, gradients_enabled, preserved_rng
from lightning_saliency.methods.base import SaliencyMethod, compute_saliency
from lightning_saliency.methods.registry import get_method
from lightning_saliency.metrics.functional._common import _check_maps, _check_model_inputs
from lightning_saliency.metrics.functional.correlation import spearman
from lightning_saliency.targets import Target, TargetLike

__all__ = ["model_randomisation_score", "randomisable_layers"]


def randomisable_layers(model: nn.Module) -> list[str]:
    """Dotted names of the modules the sanity check can re-initialise, bottom (input side) to top (output side).

    A module qualifies when it has a ``reset_parameters()`` method and parameters of its own. The order is
    ``model.named_modules()`` (registration) order, which for usual networks is the forward order; the *top*
    layers are the last ones.

    Example:
        >>> randomisable_layers(nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2, 3)))
        ['0', '3']
    """
    return [
        name
        for name, module in model.named_modules()
        if callable(getattr(module, "reset_parameters", None)) and any(True for _ in module.parameters(recurse=False))
    ]


def _seed(devices: Sequence[torch.device], seed: int) -> None:
    torch.default_generator.manual_seed(seed)
    for device in devices:
        if device.type == "cuda":
            with torch.cuda.device(device):
                torch.cuda.manual_seed(seed)


def _saliency(model: nn.Module, inputs: Tensor, targets: Target, method: SaliencyMethod, run: Run, seed: int) -> Tensor:
    _seed([inputs.device], seed)  # a stochastic method draws the same noise for both models
    return compute_saliency(
        model, inputs, targets, [method], precision=run.precision, output_adapter=run.output_adapter
    )[0]


def model_randomisation_score(
    model: nn.Module,
    inputs: Tensor,
    targets: TargetLike,
    method: SaliencyMethod | str,
    *,
    num_layers: int | None = 1,
    cascading: bool = False,
    absolute: bool = True,
    seed: int = 0,
    maps: Tensor | None = None,
    run: Run | None = None,
) -> Tensor:
    """Model-parameter randomisation test (Adebayo et al. 2018): how much do maps survive random weights?

    The method runs on ``model`` and on a deep copy whose top ``num_layers`` parametrised modules
    (:func:`randomisable_layers`) are re-initialised with their own ``reset_parameters()``, each under a seed
    derived from ``seed`` (so a layer gets the same random weights with or without ``cascading``);
    each image's two maps are compared by Spearman rank correlation (:func:`spearman`, a constant map scores 0).
    A method that explains the model decorrelates: **lower is better**; a score near 1 means the map does not
    depend on the weights (e.g. an edge detector). With ``cascading=True`` the layers are randomised one at a
    time from the top down, cumulatively (Adebayo's cascading randomisation), one row per stage. The live
    model is never modified (parameters, buffers, modes, ``.grad``, ``requires_grad``, global RNG); memory for
    one extra copy of the model is needed. Works under ``torch.inference_mode`` (gradients are re-enabled on
    cloned inputs).

    Args:
        model: The classifier.
        inputs: ``[B, C, H, W]`` float images.
        targets: ``[B]`` class indices.
        method: A :class:`~lightning_saliency.methods.SaliencyMethod` or a registry name.
        num_layers: How many top layers to randomise; ``None`` for all of them.
        cascading: One stage per layer (top down, cumulative) instead of one stage for all ``num_layers``.
        absolute: Return ``|rho|`` (Adebayo et al. report both; a sign flip is not a sane change) or ``rho``.
        seed: Seed of the re-initialisation (and of the method's own noise, the same for both models).
        maps: The method's maps on ``model`` if already computed (``[B, 1, H, W]``), to save one run.
        run: Precision and output adapter.

    Returns:
        ``[S, B]`` float32 correlations; ``S = 1`` (all ``num_layers`` at once), or ``S = num_layers`` with
        ``cascading=True``, row ``k`` having the top ``k + 1`` layers randomised.

    Raises:
        ValueError: If the model has no randomisable layer or fewer than ``num_layers``.

    Example:
        >>> from lightning_saliency.methods import Gradient
        >>> net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(64, 3))
        >>> model_randomisation_score(net, torch.rand(2, 1, 4, 4), torch.tensor([0, 2]), Gradient(),
        ...                           num_layers=None, cascading=True).shape
        torch.Size([2, 2])
    """
    target = _check_model_inputs(inputs, targets, model, run)
    method = get_method(method)
    run = run or Run()
    names = randomisable_layers(model)
    count = len(names) if num_layers is None else num_layers
    if not isinstance(count, int) or isinstance(count, bool) or count < 1 or count > len(names):
        raise ValueError(
            f"num_layers must be None or an int in [1, {len(names)}] (the model's randomisable layers: {names}), "
            f"got {num_layers!r}."
        )
    top = names[::-1][:count]  # top (output side) first
    with preserved_rng([inputs.device]), gradients_enabled():
        inputs, target = inputs.detach().clone(), target[:]  # normal tensors (copies outside inference mode)
        base = _check_maps(maps, inputs) if maps is not None else _saliency(model, inputs, target, method, run, seed)
        twin = copy.deepcopy(model)
        twin.requires_grad_(False)
        modules = dict(twin.named_modules())
        stages = [top[: k + 1] for k in range(count)] if cascading else [top]
        done: set[str] = set()
        rows = []
        for stage in stages:
            with torch.no_grad():
                for name in stage:
                    if name not in done:
                        _seed([inputs.device], seed + 1 + top.index(name))  # same weights, cascading or not
                        modules[name].reset_parameters()
                        done.add(name)
            rho = spearman(base, _saliency(twin, inputs, target, method, run, seed))
            rows.append(rho.abs() if absolute else rho)
        del twin
    return torch.stack(rows)  # [S,B]
