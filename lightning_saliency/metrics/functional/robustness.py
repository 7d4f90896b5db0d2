"""Infidelity and max-sensitivity (Yeh et al. 2019) as captum defines them, average sensitivity as Quantus; seeded.

Both draw their perturbations from a private generator seeded with ``seed`` (on the CPU, then moved): one draw of
``n_perturb_samples`` perturbations ``[C, H, W]`` shared by every image, so a score does not depend on which other
images are in the batch and training's RNG streams are untouched.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lightning_saliency._checks import an_int, check_inputs, int_at_least
from lightning_saliency._runtime import Run
from lightning_saliency.metrics.functional._common import (
    _check_batch_size,
    _check_model_inputs,
    _chunked_target_outputs,
    _scoring,
)
from lightning_saliency.metrics.functional._perturbed import (
    _check_bounds,
    _Options,
    _perturbed_table,
    _reduce,
    _shifted,
    _uniform_perturbations,
)
from lightning_saliency.metrics.functional._quantus import Explainer
from lightning_saliency.targets import TargetLike

__all__ = [
    "Explainer",
    "avg_sensitivity",
    "infidelity",
    "infidelity_perturbations",
    "sensitivity_max",
    "sensitivity_perturbations",
]


def _check_samples(n_perturb_samples: int) -> None:
    if not isinstance(n_perturb_samples, int) or isinstance(n_perturb_samples, bool) or n_perturb_samples < 1:
        raise ValueError(f"n_perturb_samples must be a positive int, got {n_perturb_samples!r}.")


def infidelity_perturbations(shape: tuple[int, ...], n_perturb_samples: int, noise_std: float, seed: int) -> Tensor:
    """The perturbations ``I ~ N(0, noise_std^2)``: ``[n_perturb_samples, C, H, W]`` float32 on the CPU.

    Example:
        >>> infidelity_perturbations((3, 4, 4), 10, 0.003, seed=0).shape
        torch.Size([10, 3, 4, 4])
    """
    generator = torch.Generator().manual_seed(seed)
    return torch.randn((n_perturb_samples, *shape), generator=generator) * noise_std


def sensitivity_perturbations(shape: tuple[int, ...], n_perturb_samples: int, radius: float, seed: int) -> Tensor:
    """The perturbations ``delta ~ U(-radius, radius)`` (an L-inf ball, captum's default): ``[n, C, H, W]`` float32.

    Example:
        >>> bool(sensitivity_perturbations((1, 2, 2), 5, 0.02, seed=0).abs().max() <= 0.02)
        True
    """
    generator = torch.Generator().manual_seed(seed)
    return (torch.rand((n_perturb_samples, *shape), generator=generator) * 2 - 1) * radius


def infidelity(
    model: nn.Module,
    inputs: Tensor,
    targets: TargetLike,
    attributions: Tensor,
    *,
    n_perturb_samples: int = 10,
    noise_std: float = 0.003,
    normalize: bool = False,
    seed: int = 0,
    batch_size: int = 64,
    run: Run | None = None,
) -> Tensor:
    """Infidelity per image (Yeh et al. 2019; captum's ``infidelity``): ``E_I[(I . Phi - (f(x) - f(x - I)))^2]``.

    ``f`` is the target's logit (captum reads the model output at ``target``), ``Phi`` the attributions and ``I``
    Gaussian noise ``N(0, noise_std^2)`` (the perturbation of captum's documented example, ``np.random.normal(0,
    0.003)``, returning ``(noise, inputs - noise)``), averaged over ``n_perturb_samples`` seeded draws (captum's
    default 10). ``normalize=True`` first rescales the attributions by the least-squares ``beta`` (captum's option).
    Lower is better; it scales with the squared magnitude of the attributions, so compare raw attributions of one
    kind (e.g. Integrated Gradients vs gradient x input), not min-max normalised maps.

    Args:
        model: Classifier returning logits.
        inputs: ``[B, C, H, W]`` float images.
        targets: ``[B]`` class indices.
        attributions: ``[B, C, H, W]``, or ``[B, 1, H, W]`` (broadcast over channels).
        n_perturb_samples: Perturbations per image.
        noise_std: Standard deviation of the perturbation.
        normalize: Rescale the attributions by the optimal scalar first.
        seed: Seed of the perturbations.
        batch_size: Most perturbed images per forward.
        run: Precision and output adapter.

    Returns:
        ``[B]`` float32.

    Example:
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
        >>> x = torch.rand(2, 1, 2, 2)
        >>> exact = net[1].weight[[0, 1]].view(2, 1, 2, 2).detach()  # a linear model's gradient is exact
        >>> bool(infidelity(net, x, torch.tensor([0, 1]), exact).max() < 1e-10)
        True
    """
    targets = _check_model_inputs(inputs, targets, model, run)
    _check_samples(n_perturb_samples)
    _check_batch_size(batch_size)
    if (
        not isinstance(attributions, Tensor)
        or attributions.ndim != inputs.ndim
        or attributions.shape[0] != inputs.shape[0]
    ):
        got = tuple(attributions.shape) if isinstance(attributions, Tensor) else type(attributions).__name__
        raise ValueError(f"attributions must be a Tensor [B, C, H, W] or [B, 1, H, W] like the inputs, got {got}.")
    try:
        attr = torch.broadcast_to(attributions.detach().float().to(inputs.device), inputs.shape)
    except RuntimeError as err:
        raise ValueError(
            f"attributions {tuple(attributions.shape)} do not broadcast to the inputs {tuple(inputs.shape)}."
        ) from err
    run = run or Run()
    b, n = inputs.shape[0], n_perturb_samples
    noise = infidelity_perturbations(tuple(inputs.shape[1:]), n, noise_std, seed).to(inputs.device)  # [n,C,H,W]
    with _scoring(model, inputs):
        f_x = _chunked_target_outputs(model, inputs, targets, run, batch_size, softmax=False)  # [B]
        perturbed = (inputs[:, None].float() - noise[None]).flatten(0, 1).to(inputs.dtype)  # [B*n,C,H,W] b-major
        repeated = targets[torch.arange(b * n, device=inputs.device) // n]  # [B*n] b-major, as the images
        f_p = _chunked_target_outputs(model, perturbed, repeated, run, batch_size, softmax=False).view(b, n)
    dot = (attr[:, None] * noise[None]).flatten(2).sum(2)  # [B,n] I . Phi
    diff = f_x[:, None] - f_p  # [B,n]
    if normalize:
        s_dd, s_df, s_ff = (dot * dot).sum(1), (dot * diff).sum(1), (diff * diff).sum(1)
        beta = torch.where(s_dd != 0, s_df / torch.where(s_dd != 0, s_dd, torch.ones_like(s_dd)), s_dd)
        return (beta * beta * s_dd - 2 * beta * s_df + s_ff) / n
    return (dot - diff).pow(2).sum(1) / n


def sensitivity_max(
    explain: Explainer,
    model: nn.Module,
    inputs: Tensor,
    targets: TargetLike,
    *,
    perturb_radius: float = 0.02,
    n_perturb_samples: int = 10,
    norm_ord: str | float = "fro",
    seed: int = 0,
    run: Run | None = None,
) -> Tensor:
    """Max-sensitivity per image (Yeh et al. 2019; captum's ``sensitivity_max``, same defaults).

    ``max_j ||Phi(x + delta_j) - Phi(x)|| / ||Phi(x)||`` over ``n_perturb_samples`` seeded ``delta_j`` uniform in the
    L-inf ball of radius ``perturb_radius`` (0.02), with the norm ``norm_ord`` (``"fro"``: Euclidean over the
    flattened explanation) and ``||Phi(x)|| = 0`` replaced by 1, as captum. Lower is better. ``Phi`` is
    ``explain``: a saliency method (its maps ``[B, 1, H, W]`` in [0, 1]) or any ``f(model, inputs, targets)``.

    Args:
        explain: The explanation to score.
        model: Classifier.
        inputs: ``[B, C, H, W]`` float images.
        targets: ``[B]`` class indices (the same for the perturbed inputs).
        perturb_radius: L-inf radius of the perturbations.
        n_perturb_samples: Perturbations per image; each costs one explanation of the batch.
        norm_ord: ``"fro"`` or a ``p`` of ``torch.linalg.vector_norm``.
        seed: Seed of the perturbations.
        run: Precision and output adapter (for a saliency method).

    Returns:
        ``[B]`` float32.

    Example:
        >>> from lightning_saliency.methods import Gradient
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))  # linear: its gradient map does not move
        >>> sensitivity_max(Gradient(), net, torch.rand(2, 1, 2, 2), torch.tensor([0, 1]), n_perturb_samples=3)
        tensor([0., 0.])
    """
    _check_samples(n_perturb_samples)
    if not (isinstance(perturb_radius, (int, float)) and perturb_radius >= 0):
        raise ValueError(f"perturb_radius must be a float >= 0, got {perturb_radius!r}.")
    deltas = sensitivity_perturbations(tuple(inputs.shape[1:]), n_perturb_samples, perturb_radius, seed)
    b = inputs.shape[0]  # one perturbation of the batch per explanation, as captum's max_examples_per_batch=B
    values, _ = _sensitivities(explain, model, inputs, targets, deltas, norm_ord, _Options(batch_size=b, run=run))
    return values.amax(1)


def _sensitivities(
    explain: Explainer,
    model: nn.Module,
    inputs: Tensor,
    targets: TargetLike,
    deltas: Tensor,
    norm_ord: str | float,
    options: _Options,
) -> tuple[Tensor, Tensor | None]:
    """``||Phi(x + delta_j) - Phi(x)|| / ||Phi(x)||`` ``[B, n]`` (zero norm -> 1), and which kept the prediction.

    ``options``: see :func:`_perturbed_table`.
    """
    check_inputs(inputs)
    ord_: float = 2.0 if norm_ord == "fro" else float(norm_ord)

    def value(rows: Tensor, x: Tensor, e: Tensor, e0: Tensor) -> Tensor:
        base_norm = torch.linalg.vector_norm(e0, ord=ord_, dim=1)
        base_norm = torch.where(base_norm == 0, torch.ones_like(base_norm), base_norm)
        return torch.linalg.vector_norm(e - e0, ord=ord_, dim=1) / base_norm

    return _perturbed_table(explain, model, inputs, targets, deltas.shape[0], _shifted(inputs, deltas), value, options)


def avg_sensitivity(
    explain: Explainer,
    model: nn.Module,
    inputs: Tensor,
    targets: TargetLike,
    *,
    n_samples: int = 200,
    lower_bound: float = 0.2,
    upper_bound: float | None = None,
    normalise: bool = False,
    absolute: bool = False,
    drop_changed: bool = False,
    seed: int = 0,
    batch_size: int = 64,
    run: Run | None = None,
) -> Tensor:
    """Average sensitivity per image (Yeh et al. 2019; Quantus' ``AvgSensitivity``, same defaults).

    ``mean_j ||Phi(x + delta_j) - Phi(x)||_2 / ||Phi(x)||_2``: :func:`sensitivity_max` with the mean instead of
    the maximum, over ``n_samples`` (200) seeded ``delta_j`` uniform in ``[-lower_bound, lower_bound]`` (0.2), or
    in ``[lower_bound, upper_bound]`` given an upper bound. ``||Phi(x)|| = 0`` is replaced by 1 (Quantus divides
    by it). Lower is better. With ``drop_changed``, perturbations that change the prediction are left out of the
    mean (Quantus' ``return_nan_when_prediction_changes`` with ``np.nanmean``).

    Args:
        explain: A saliency method (maps ``[B, 1, H, W]``) or ``f(model, inputs, targets) -> explanation``.
        model: The model.
        inputs: ``[B, C, H, W]`` float images.
        targets: What is explained (the same for the perturbed inputs).
        n_samples: Perturbations per image; each costs one explanation.
        lower_bound: See above.
        upper_bound: See above.
        normalise: Divide each explanation by its largest absolute value first (Quantus' ``normalise``).
        absolute: Take ``|Phi|`` first.
        drop_changed: Leave out perturbations that change the prediction.
        seed: Seed of the perturbations.
        batch_size: Most (image, perturbation) pairs explained at once.
        run: Precision and output adapter.

    Returns:
        ``[B]`` float32.

    Example:
        >>> from lightning_saliency.methods import Gradient
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))  # linear: its gradient map does not move
        >>> avg_sensitivity(Gradient(), net, torch.rand(2, 1, 2, 2), torch.tensor([0, 1]), n_samples=3)
        tensor([0., 0.])
    """
    int_at_least(n_samples, 1, "n_samples")
    an_int(seed, "seed")
    _check_batch_size(batch_size)
    low, high = _check_bounds(lower_bound, upper_bound)
    check_inputs(inputs)
    shape = tuple(inputs.shape[1:])
    if upper_bound is None:  # the draws of sensitivity_max
        deltas = sensitivity_perturbations(shape, n_samples, float(lower_bound), seed)
    else:
        deltas = _uniform_perturbations(shape, n_samples, low, high, seed)
    options = _Options("max" if normalise else None, absolute, drop_changed, batch_size, run)
    values, kept = _sensitivities(explain, model, inputs, targets, deltas, "fro", options)
    return _reduce(values, kept, "mean", "avg_sensitivity")
