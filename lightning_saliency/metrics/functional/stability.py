"""Robustness of explanations to small input changes, as Quantus 0.6 defines them, batched and seeded.

Local Lipschitz Estimate (Alvarez-Melis & Jaakkola 2018), Continuity (Montavon et al. 2018) and the relative
input, output and representation stabilities (Agarwal et al. 2022). Each explains every (image, perturbation)
pair again, ``batch_size`` pairs at a time. The random perturbations come from a private generator seeded with
``seed`` (on the CPU, then moved): one draw of ``n_samples`` perturbations ``[C, H, W]`` shared by every image, so
a score does not depend on which other images are in the batch and training's RNG streams are untouched.

Differences from Quantus, all on purpose: Quantus draws fresh noise per image from numpy's global RNG; its
``normalise_by_max`` divides by the largest value of the whole *batch* (ours: of each explanation, which is
Quantus with ``normalise_func_kwargs={"normalise_axes": [1, 2, 3]}`` or ``batch_size=1``); and where a
perturbation changes the prediction (``drop_changed``) Quantus sets it to NaN and then takes ``np.max``, so one
changed prediction makes the image's score NaN, while ours is the maximum over the perturbations that keep the
prediction (the papers' constraint), falling back to all of them, with a warning, if none does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import Tensor, nn

from lightning_saliency._checks import an_int, check_inputs, int_at_least
from lightning_saliency._runtime import Run
from lightning_saliency.metrics.functional._common import _check_batch_size, _scoring
from lightning_saliency.metrics.functional._perturbed import (
    _check_bounds,
    _Options,
    _perturbed_table,
    _reduce,
    _shifted,
    _uniform_perturbations,
)
from lightning_saliency.metrics.functional._quantus import Explainer
from lightning_saliency.metrics.functional.robustness import infidelity_perturbations
from lightning_saliency.targets import TargetLike

__all__ = ["continuity", "hidden_layers", "local_lipschitz_estimate", "relative_stability", "translations"]


def _check_common(inputs: Tensor, n: int, arg: str, seed: int, batch_size: int) -> None:
    check_inputs(inputs)
    int_at_least(n, 1, arg)
    an_int(seed, "seed")
    _check_batch_size(batch_size)


def _non_negative(value: Any, arg: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise ValueError(f"{arg} must be a float >= 0, got {value!r}.")
    return float(value)


def local_lipschitz_estimate(
    explain: Explainer,
    model: nn.Module,
    inputs: Tensor,
    targets: TargetLike,
    *,
    n_samples: int = 200,
    perturb_mean: float = 0.0,
    perturb_std: float = 0.1,
    normalise: bool = True,
    absolute: bool = False,
    drop_changed: bool = False,
    seed: int = 0,
    batch_size: int = 64,
    run: Run | None = None,
) -> Tensor:
    """Local Lipschitz Estimate per image (Alvarez-Melis & Jaakkola 2018; Quantus' ``LocalLipschitzEstimate``).

    ``max_j ||Phi(x_j) - Phi(x)||_2 / (||x_j - x||_2 + 1e-10)`` over ``n_samples`` seeded Gaussian perturbations
    ``x_j = x + N(perturb_mean, perturb_std^2)`` (Quantus' defaults: 200 samples, mean 0, std 0.1), ``Phi`` the
    explanation divided by its largest ``|value|`` (``normalise``) and made absolute if ``absolute``. Lower is
    better. With ``drop_changed``, perturbations that change the predicted class are left out.

    Args:
        explain: A saliency method (maps ``[B, 1, H, W]``) or ``f(model, inputs, targets) -> explanation``.
        model: The model.
        inputs: ``[B, C, H, W]`` float images.
        targets: What is explained (the same for the perturbed inputs).
        n_samples: Perturbations per image; each costs one explanation.
        perturb_mean: Mean of the noise.
        perturb_std: Standard deviation of the noise.
        normalise: Divide each explanation by its largest absolute value (Quantus' default for this metric).
        absolute: Take ``|Phi|``.
        drop_changed: Leave out perturbations that change the prediction (Quantus'
            ``return_nan_when_prediction_changes``; see the module docstring).
        seed: Seed of the perturbations.
        batch_size: Most (image, perturbation) pairs explained at once.
        run: Precision and output adapter.

    Returns:
        ``[B]`` float32.

    Example:
        >>> from lightning_saliency.methods import Gradient
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))  # linear: its gradient map does not move
        >>> local_lipschitz_estimate(Gradient(), net, torch.rand(2, 1, 2, 2), torch.tensor([0, 1]), n_samples=3)
        tensor([0., 0.])
    """
    _check_common(inputs, n_samples, "n_samples", seed, batch_size)
    _non_negative(perturb_std, "perturb_std")
    if isinstance(perturb_mean, bool) or not isinstance(perturb_mean, (int, float)):
        raise ValueError(f"perturb_mean must be a float, got {perturb_mean!r}.")
    noise = perturb_mean + infidelity_perturbations(tuple(inputs.shape[1:]), n_samples, perturb_std, seed)

    def value(rows: Tensor, x: Tensor, e: Tensor, e0: Tensor) -> Tensor:
        moved = (x.float() - inputs[rows].float()).flatten(1)  # [N,CHW]
        return torch.linalg.vector_norm(e - e0, dim=1) / (torch.linalg.vector_norm(moved, dim=1) + 1e-10)

    options = _Options("max" if normalise else None, absolute, drop_changed, batch_size, run)
    values, kept = _perturbed_table(explain, model, inputs, targets, n_samples, _shifted(inputs, noise), value, options)
    return _reduce(values, kept, "max", "local_lipschitz_estimate")


def translations(width: int, n_steps: int) -> list[int]:
    """Continuity's horizontal shifts in pixels, as Quantus steps them: ``-W + k * ((2W + 1) // n_steps)``.

    Example:
        >>> translations(8, 4)
        [-4, 0, 4, 8]
    """
    dx = (2 * width + 1) // n_steps
    return [-width + dx * (k + 1) for k in range(n_steps)]


def continuity(
    explain: Explainer,
    model: nn.Module,
    inputs: Tensor,
    targets: TargetLike,
    *,
    n_steps: int = 28,
    normalise: bool = True,
    absolute: bool = True,
    drop_changed: bool = False,
    batch_size: int = 64,
    run: Run | None = None,
) -> Tensor:
    """Continuity per image (Montavon et al. 2018; Quantus' ``Continuity``): the explanation under translation.

    The image is shifted horizontally by each of :func:`translations` (``n_steps`` shifts from ``-W`` to ``W``,
    Quantus' default 28), the uncovered columns filled with the image's minimum ("black"), and the score is
    ``max_t ||Phi(x_t) - Phi(x)||_1 / (||x_t - x||_2 + 1e-9)``, ``Phi`` normalised by its largest ``|value|`` and
    absolute (Quantus' defaults). Lower is better. No randomness.

    Args:
        explain: A saliency method or ``f(model, inputs, targets) -> explanation``.
        model: The model.
        inputs: ``[B, C, H, W]`` float images.
        targets: What is explained.
        n_steps: Number of shifts (``<= 2W + 1``).
        normalise: Divide each explanation by its largest absolute value.
        absolute: Take ``|Phi|``.
        drop_changed: Leave out shifts that change the prediction.
        batch_size: Most shifted images explained at once.
        run: Precision and output adapter.

    Returns:
        ``[B]`` float32.

    Example:
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
        >>> continuity(lambda m, x, t: x, net, torch.ones(1, 1, 4, 4), torch.tensor([0]), n_steps=3).shape
        torch.Size([1])
    """
    _check_common(inputs, n_steps, "n_steps", 0, batch_size)
    width = inputs.shape[-1]
    if n_steps > 2 * width + 1:
        raise ValueError(f"n_steps must be an int in [1, 2W + 1] = [1, {2 * width + 1}], got {n_steps!r}.")
    shifts = torch.tensor(translations(width, n_steps), device=inputs.device)

    def perturb(rows: Tensor, samples: Tensor) -> Tensor:
        x = inputs[rows]  # [N,C,H,W]
        source = torch.arange(width, device=x.device)[None] - shifts[samples][:, None]  # [N,W] source column
        inside = (source >= 0) & (source < width)  # [N,W]
        index = source.clamp(0, width - 1).view(-1, *([1] * (x.ndim - 2)), width).expand_as(x)
        black = x.flatten(1).amin(1).view(-1, *([1] * (x.ndim - 1)))  # [N,1,1,1] the image's minimum
        return torch.where(inside.view(index.shape[0], *([1] * (x.ndim - 2)), width), x.gather(-1, index), black)

    def value(rows: Tensor, x: Tensor, e: Tensor, e0: Tensor) -> Tensor:
        moved = (x.float() - inputs[rows].float()).flatten(1)
        return (e - e0).abs().sum(1) / (torch.linalg.vector_norm(moved, dim=1) + 1e-9)

    options = _Options("max" if normalise else None, absolute, drop_changed, batch_size, run)
    values, kept = _perturbed_table(explain, model, inputs, targets, n_steps, perturb, value, options)
    return _reduce(values, kept, "max", "continuity")


def hidden_layers(model: nn.Module) -> list[str]:
    """The layers whose outputs form the internal representation by default (Quantus' choice).

    Every module but ``nn.Sequential`` containers and the model itself (containers of other kinds are included
    with their children).

    Example:
        >>> hidden_layers(nn.Sequential(nn.Conv2d(1, 2, 3), nn.Sequential(nn.ReLU(), nn.Flatten())))
        ['0', '1.0', '1.1']
    """
    return [
        name for name, module in model.named_modules() if name and not isinstance(module, (type(model), nn.Sequential))
    ]


def _representation(
    model: nn.Module, x: Tensor, layers: Sequence[str], run: Run, strict: bool
) -> tuple[Tensor, Tensor]:
    """The outputs of ``layers`` on ``x``, each flattened, concatenated ``[N, R]`` float32, and the model's output.

    Read by forward hooks, removed after the forward (also on error).

    A layer whose output is not a Tensor ``[N, ...]`` is an error if ``strict`` (layers the user named), else
    left out (the default layers: e.g. attention modules returning tuples).
    """
    modules = dict(model.named_modules())
    captured: list[Tensor] = []

    def hook(module: nn.Module, args: Any, output: Any) -> None:
        if isinstance(output, Tensor) and output.ndim >= 1 and output.shape[0] == x.shape[0]:
            captured.append(output.detach().float().reshape(x.shape[0], -1))
        elif strict:
            name = next(n for n, m in modules.items() if m is module)
            got = tuple(output.shape) if isinstance(output, Tensor) else type(output).__name__
            raise TypeError(f"layer {name!r} returns {got}, not a Tensor [N={x.shape[0]}, ...]; choose other layers.")

    handles = [modules[name].register_forward_hook(hook) for name in layers]
    try:
        with _scoring(model, x):
            out = run.output(model, x)
    finally:
        for handle in handles:
            handle.remove()
    if not captured:
        raise ValueError(f"none of the layers {list(layers)} ran in the model's forward.")
    return torch.cat(captured, 1), out


def _relative(a: Tensor, a0: Tensor, eps_min: float) -> Tensor:
    """``||(a0 - a) / (a0 + (a0 == 0) * eps_min)||_2`` per row ``[N]`` (the stabilities' relative change)."""
    return torch.linalg.vector_norm((a0 - a) / (a0 + (a0 == 0) * eps_min), dim=1)


def _layer_names(model: nn.Module, layers: Sequence[str] | None) -> list[str]:
    names = hidden_layers(model) if layers is None else [layers] if isinstance(layers, str) else list(layers)
    known = dict(model.named_modules())
    if not names or any(not isinstance(n, str) or not n or n not in known for n in names):
        raise ValueError(
            f"layers must be None or names of the model's modules (e.g. {hidden_layers(model)[:6]}), got {layers!r}."
        )
    return names


Of = Literal["input", "output", "representation"]


def relative_stability(
    explain: Explainer,
    model: nn.Module,
    inputs: Tensor,
    targets: TargetLike,
    *,
    of: Of = "input",
    layers: Sequence[str] | None = None,
    n_samples: int = 200,
    lower_bound: float = 0.02,
    upper_bound: float | None = 0.2,
    eps_min: float = 1e-6,
    normalise: bool = False,
    absolute: bool = False,
    drop_changed: bool = True,
    seed: int = 0,
    batch_size: int = 64,
    run: Run | None = None,
) -> Tensor:
    """Relative input, output or representation stability per image (Agarwal et al. 2022).

    Quantus' ``RelativeInputStability``, ``RelativeOutputStability`` and ``RelativeRepresentationStability``:
    ``max_j ||(Phi(x) - Phi(x_j)) / Phi(x)||_2 / D_j`` over ``n_samples`` seeded perturbations
    ``x_j = x + U(0.02, 0.2)`` (Quantus' defaults) that keep the prediction, where ``D_j`` is

    * ``of="input"``: ``||(x - x_j) / x||_2``;
    * ``of="output"``: ``||h(x) - h(x_j)||_2``, ``h`` the model's output (logits);
    * ``of="representation"``: ``||(L(x) - L(x_j)) / L(x)||_2``, ``L`` the outputs of ``layers`` (default
      :func:`hidden_layers`, as Quantus: every non-``Sequential`` module, leaving out outputs that are not a
      Tensor with the batch first) flattened and concatenated, read by forward hooks that are removed after each
      forward, also on error.

    Zeros in ``Phi(x)``, ``x``, ``L(x)`` and ``D_j`` are replaced by ``eps_min``, as Quantus. Lower is better.

    Args:
        explain: A saliency method or ``f(model, inputs, targets) -> explanation``.
        model: The model.
        inputs: ``[B, C, H, W]`` float images.
        targets: What is explained.
        of: Which stability (see above).
        layers: For ``of="representation"``: dotted module names (Quantus' ``layer_names``).
        n_samples: Perturbations per image; each costs one explanation and one or two forwards.
        lower_bound: Noise ``U(lower_bound, upper_bound)``, or ``U(-lower_bound, lower_bound)`` without an upper
            bound.
        upper_bound: See ``lower_bound``.
        eps_min: Replaces zeros in the denominators.
        normalise: Divide each explanation by the root of its mean square first (Quantus'
            ``normalise_by_average_second_moment_estimate``; off by default, as in Quantus).
        absolute: Take ``|Phi|`` first.
        drop_changed: Leave out perturbations that change the prediction (on by default, as in Quantus; see the
            module docstring).
        seed: Seed of the perturbations.
        batch_size: Most (image, perturbation) pairs explained at once.
        run: Precision and output adapter.

    Returns:
        ``[B]`` float32.

    Example:
        >>> from lightning_saliency.methods import Gradient
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))  # linear: its gradient map does not move
        >>> x = torch.rand(2, 1, 2, 2)
        >>> relative_stability(Gradient(), net, x, torch.tensor([0, 1]), n_samples=3, drop_changed=False)
        tensor([0., 0.])
    """
    _check_common(inputs, n_samples, "n_samples", seed, batch_size)
    low, high = _check_bounds(lower_bound, upper_bound)
    if isinstance(eps_min, bool) or not isinstance(eps_min, (int, float)) or not eps_min > 0:
        raise ValueError(f"eps_min must be a float > 0, got {eps_min!r}.")
    run = run or Run()
    if of == "input":

        def denominator(rows: Tensor, x: Tensor) -> tuple[Tensor, Tensor | None]:
            return _relative(x.float().flatten(1), inputs[rows].float().flatten(1), eps_min), None

    elif of == "output":
        with _scoring(model, inputs):
            clean = run.output(model, inputs).float().flatten(1)  # [B,K]

        def denominator(rows: Tensor, x: Tensor) -> tuple[Tensor, Tensor | None]:
            with _scoring(model, x):
                out = run.output(model, x)
            return torch.linalg.vector_norm(clean[rows] - out.float().flatten(1), dim=1), out

    elif of == "representation":
        names = _layer_names(model, layers)
        strict = layers is not None
        clean, _ = _representation(model, inputs, names, run, strict)  # [B,R]

        def denominator(rows: Tensor, x: Tensor) -> tuple[Tensor, Tensor | None]:
            representation, out = _representation(model, x, names, run, strict)  # [N,R]
            return _relative(representation, clean[rows], eps_min), out

    else:
        raise ValueError(f"of must be 'input', 'output' or 'representation', got {of!r}.")
    deltas = _uniform_perturbations(tuple(inputs.shape[1:]), n_samples, low, high, seed)

    def value(rows: Tensor, x: Tensor, e: Tensor, e0: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        den, out = denominator(rows, x)  # [N], the output on x if the denominator ran the model
        ratio = _relative(e, e0, eps_min) / (den + (den == 0) * eps_min)
        return ratio if out is None else (ratio, out)

    options = _Options("second_moment" if normalise else None, absolute, drop_changed, batch_size, run)
    values, kept = _perturbed_table(
        explain, model, inputs, targets, n_samples, _shifted(inputs, deltas), value, options
    )
    return _reduce(values, kept, "max", f"relative_{of}_stability")
