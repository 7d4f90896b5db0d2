"""Randomisation checks of explanations, as Quantus 0.6 defines them: Random Logit, Smooth MPRT, Efficient MPRT.

Random Logit (Sixt et al. 2020) compares the explanation of the target class with that of a random other class.
The model-parameter randomisation tests (Hedström et al. 2023) re-initialise the layers of a *deep copy* of the
model (never the live one) one after another, as Quantus' ``get_random_layer_generator`` does: every module with a
``reset_parameters()`` (BatchNorm included), in registration order (``"bottom_up"``) or reversed
(``"top_down"``), cumulatively, each under ``torch.manual_seed(seed + 1)``. The global RNG is restored after.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any, Literal

import torch
from torch import Tensor, nn

from lightning_saliency._checks import an_int, check_inputs, int_at_least
from lightning_saliency._chunking import run_chunked
from lightning_saliency._runtime import Run, gradients_enabled, preserved_rng
from lightning_saliency.methods.registry import get_method
from lightning_saliency.metrics.functional._common import _check_batch_size, _check_model_inputs, _scoring
from lightning_saliency.metrics.functional._perturbed import Phi, _explainer
from lightning_saliency.metrics.functional._quantus import Explainer, _normalised
from lightning_saliency.metrics.functional.correlation import spearman
from lightning_saliency.metrics.functional.sanity import _seed
from lightning_saliency.targets import ClassTarget, Target, TargetLike, UndefinedForTarget

__all__ = [
    "discrete_entropy",
    "efficient_mprt",
    "random_logit",
    "random_off_classes",
    "randomised_models",
    "smooth_mprt",
    "smooth_mprt_noise",
    "structural_similarity",
]

LayerOrder = Literal["bottom_up", "top_down"]


def random_off_classes(targets: Tensor, num_classes: int, seed: int) -> Tensor:
    """A seeded random class other than each target ``[B]``: ``k`` uniform in ``[0, K - 2]``, skipping the target.

    Quantus draws ``k = np.random.randint(0, K - 1)`` and takes the ``k``-th class without the target, the same map.

    Example:
        >>> off = random_off_classes(torch.tensor([0, 1, 2]), 3, seed=0)
        >>> bool((off != torch.tensor([0, 1, 2])).all())
        True
    """
    generator = torch.Generator().manual_seed(seed)
    k = torch.randint(0, num_classes - 1, (targets.shape[0],), generator=generator).to(targets.device)
    return k + (k >= targets).long()


def structural_similarity(a: Tensor, b: Tensor, win_size: int = 7) -> Tensor:
    """SSIM per row of flattened ``a``, ``b`` ``[B, D]``, as ``skimage.metrics.structural_similarity`` on 1-D arrays.

    Quantus' ``ssim`` calls skimage on each flattened explanation pair with ``data_range`` the range of both
    together; skimage's defaults: a uniform window of ``win_size`` (7), ``K1 = 0.01``, ``K2 = 0.03``, sample
    covariances, the mean over the positions whose window lies inside the row. Computed in float64 (skimage: in the
    inputs' float32). Two equal constant rows score 1 (skimage: NaN).

    Example:
        >>> a = torch.rand(2, 20, generator=torch.Generator().manual_seed(0))
        >>> structural_similarity(a, a)
        tensor([1., 1.], dtype=torch.float64)
    """
    a, b = a.detach().double().flatten(1), b.detach().double().flatten(1)
    if a.shape != b.shape or a.shape[1] < win_size:
        raise ValueError(f"structural_similarity needs rows of equal length >= win_size={win_size}, got "
                         f"{tuple(a.shape)} and {tuple(b.shape)}.")  # fmt: skip
    both = torch.cat([a, b], 1)
    data_range = both.amax(1, keepdim=True) - both.amin(1, keepdim=True)  # [B,1]
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    wa, wb = a.unfold(1, win_size, 1), b.unfold(1, win_size, 1)  # [B,P,w] the windows inside the row
    ux, uy = wa.mean(2), wb.mean(2)
    cov_norm = win_size / (win_size - 1)
    vx = cov_norm * ((wa * wa).mean(2) - ux * ux)
    vy = cov_norm * ((wb * wb).mean(2) - uy * uy)
    vxy = cov_norm * ((wa * wb).mean(2) - ux * uy)
    num = (2 * ux * uy + c1) * (2 * vxy + c2)
    den = (ux * ux + uy * uy + c1) * (vx + vy + c2)
    return torch.where(den == 0, torch.ones_like(num), num / torch.where(den == 0, torch.ones_like(den), den)).mean(1)


def _class_target(target: Target, score: str) -> ClassTarget:
    if not isinstance(target, ClassTarget):
        raise UndefinedForTarget(f"{score} explains another class, so it needs class targets, not {target!r}.")
    return target


def random_logit(
    explain: Explainer,
    model: nn.Module,
    inputs: Tensor,
    targets: TargetLike,
    *,
    num_classes: int | None = None,
    normalise: bool = True,
    absolute: bool = False,
    seed: int = 0,
    run: Run | None = None,
) -> Tensor:
    """Random Logit per image (Sixt et al. 2020; Quantus' ``RandomLogit``): SSIM with a random class's explanation.

    The other class is :func:`random_off_classes` (seeded); both explanations are divided by their largest
    ``|value|`` (``normalise``, Quantus' default; Quantus divides by the batch's) and compared by
    :func:`structural_similarity` on the flattened explanations, as Quantus. Lower is better: a class-sensitive
    explanation changes with the class.

    Args:
        explain: A saliency method or ``f(model, inputs, classes) -> explanation``.
        model: A classifier.
        inputs: ``[B, C, H, W]`` float images.
        targets: ``[B]`` class indices (or a :class:`~lightning_saliency.targets.ClassTarget`).
        num_classes: Classes to draw from; default: the model's number of outputs.
        normalise: Divide each explanation by its largest absolute value.
        absolute: Take ``|Phi|``.
        seed: Seed of the class draw.
        run: Precision and output adapter.

    Returns:
        ``[B]`` float32.

    Raises:
        UndefinedForTarget: For targets other than classes.

    Example:
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(64, 3))
        >>> class_blind = lambda m, x, t: x  # the same explanation for every class: SSIM 1
        >>> random_logit(class_blind, net, torch.rand(2, 1, 8, 8), torch.tensor([0, 1]))
        tensor([1., 1.])
    """
    check_inputs(inputs)
    an_int(seed, "seed")
    run = run or Run()
    target = _class_target(_check_model_inputs(inputs, targets, model, run), "random_logit")
    if num_classes is None:
        with _scoring(model, inputs):
            num_classes = int(run.output(model, inputs[:1]).shape[1])
    int_at_least(num_classes, 2, "num_classes")
    off = random_off_classes(target.classes, num_classes, seed)  # [B]
    rows = torch.arange(inputs.shape[0], device=inputs.device)
    with preserved_rng([inputs.device]):
        mode = "max" if normalise else None
        e = _normalised(_explainer(explain, model, target, targets, run)(inputs, rows), mode, absolute)
        e_off = _normalised(_explainer(explain, model, ClassTarget(off), off, run)(inputs, rows), mode, absolute)
    return structural_similarity(e, e_off).float()


def _resettable(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Quantus' randomisable layers: every named module with a ``reset_parameters`` attribute, registration order."""
    return [(name, m) for name, m in model.named_modules() if hasattr(m, "reset_parameters")]


def randomised_models(
    model: nn.Module, order: LayerOrder = "bottom_up", seed: int = 42
) -> Iterator[tuple[str, nn.Module]]:
    """``(layer name, copy)`` with one more layer re-initialised at each step (cascading), as Quantus.

    The copy is one ``copy.deepcopy`` of ``model`` (with ``requires_grad`` off), re-initialised in place; each
    layer under ``torch.manual_seed(seed + 1)`` (Quantus' seeding: every layer the same seed). Run it inside
    :func:`~lightning_saliency.preserved_rng`.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2, 3))
        >>> [name for name, _ in randomised_models(net, "top_down")]
        ['3', '0']
    """
    if order not in ("bottom_up", "top_down"):
        raise ValueError(f"order must be 'bottom_up' or 'top_down', got {order!r}.")
    twin = copy.deepcopy(model)
    twin.requires_grad_(False)
    layers = _resettable(twin)
    if not layers:
        raise ValueError(f"the model has no module with reset_parameters() to randomise: {type(model).__name__}.")
    for name, module in layers[::-1] if order == "top_down" else layers:
        torch.manual_seed(seed + 1)
        with torch.no_grad():
            module.reset_parameters()  # type: ignore[operator]
        yield name, twin


def _phi(method: Explainer | str, model: nn.Module, target: Target, targets: Any, run: Run) -> Phi:
    return _explainer(get_method(method) if isinstance(method, str) else method, model, target, targets, run)


def smooth_mprt_noise(shape: tuple[int, ...], n_samples: int, seed: int) -> Tensor:
    """Smooth MPRT's standard-normal draws ``[n_samples - 1, *shape]`` (the last sample is noise-free), float32.

    Example:
        >>> smooth_mprt_noise((3, 4, 4), 5, seed=0).shape
        torch.Size([4, 3, 4, 4])
    """
    generator = torch.Generator().manual_seed(seed)
    return torch.randn((n_samples - 1, *shape), generator=generator)


def _smoothed(phi: Phi, inputs: Tensor, noise: Tensor, magnitude: float, batch_size: int) -> Tensor:
    """The explanation averaged over ``x + noise_j * std`` and ``x`` itself ``[B, D]``, std = magnitude * range."""
    b, n = inputs.shape[0], noise.shape[0] + 1
    flat = inputs.float().flatten(1)
    std = (magnitude * (flat.amax(1) - flat.amin(1))).view(b, *([1] * (inputs.ndim - 1)))  # [B,1,1,1]
    noise = torch.cat([noise.to(inputs.device), torch.zeros_like(noise[:1], device=inputs.device)])  # [n,C,H,W]
    pairs = torch.arange(b * n, device=inputs.device)  # perturbation-major, as Quantus' loop
    total: list[Tensor] = []

    def chunk(lo: int, hi: int) -> None:
        rows, samples = pairs[lo:hi] % b, pairs[lo:hi] // b
        x = (inputs[rows].float() + noise[samples] * std[rows]).to(inputs.dtype)
        e = phi(x, rows) / n  # [N,D]
        if not total:
            total.append(torch.zeros(b, e.shape[1], device=e.device))
        for s in samples.unique().tolist():  # in sample order, as Quantus adds them
            here = samples == s
            total[0][rows[here]] += e[here]

    run_chunked(chunk, b * n, batch_size, what="noisy inputs")
    return total[0]


def smooth_mprt(
    model: nn.Module,
    inputs: Tensor,
    targets: TargetLike,
    method: Explainer | str,
    *,
    layer_order: LayerOrder = "bottom_up",
    n_samples: int = 50,
    noise_magnitude: float = 0.1,
    absolute: bool = True,
    seed: int = 0,
    batch_size: int = 64,
    run: Run | None = None,
) -> Tensor:
    """Smooth Model Parameter Randomisation Test (Hedström et al. 2023; Quantus' ``SmoothMPRT``), per layer.

    Explanations are denoised by averaging over ``n_samples`` inputs ``x + N(0, std^2)``, ``std = noise_magnitude
    * (max(x) - min(x))`` per image, the last sample noise-free (Quantus' defaults 50 and 0.1), with the same
    seeded draws (:func:`smooth_mprt_noise`) for every model (Quantus draws afresh each time). The layers of a copy
    are randomised one after another (:func:`randomised_models`, ``layer_order``), and after each the Spearman
    rank correlation of the smoothed explanation (``|.|`` if ``absolute``) with the original model's is taken
    (Quantus' default result: one row per layer; its normalisation does not change ranks). Lower is better.

    Args:
        model: The model (never modified).
        inputs: ``[B, C, H, W]`` float images.
        targets: What is explained.
        method: A saliency method, a registry name, or ``f(model, inputs, targets)``.
        layer_order: ``"bottom_up"`` (Quantus' default) or ``"top_down"``.
        n_samples: Noisy copies averaged per explanation (the last one noise-free).
        noise_magnitude: Noise standard deviation as a fraction of each image's value range.
        absolute: Compare ``|explanations|`` (Quantus' default).
        seed: Seed of the noise and of the re-initialisation (``seed + 1``, as Quantus).
        batch_size: Most noisy inputs explained at once.
        run: Precision and output adapter.

    Returns:
        ``[L, B]`` float32: row ``l`` with the first ``l + 1`` layers in ``layer_order`` randomised.

    Example:
        >>> from lightning_saliency.methods import Gradient
        >>> net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(64, 3))
        >>> smooth_mprt(net, torch.rand(2, 1, 4, 4), torch.tensor([0, 2]), Gradient(), n_samples=3).shape
        torch.Size([2, 2])
    """
    check_inputs(inputs)
    int_at_least(n_samples, 1, "n_samples")
    an_int(seed, "seed")
    _check_batch_size(batch_size)
    if isinstance(noise_magnitude, bool) or not isinstance(noise_magnitude, (int, float)) or noise_magnitude < 0:
        raise ValueError(f"noise_magnitude must be a float >= 0, got {noise_magnitude!r}.")
    run = run or Run()
    target = _check_model_inputs(inputs, targets, model, run)
    noise = smooth_mprt_noise(tuple(inputs.shape[1:]), n_samples, seed)
    rows = []
    with preserved_rng([inputs.device]), gradients_enabled():
        inputs = inputs.detach().clone()  # a normal tensor (a copy outside inference mode)

        def smoothed(m: nn.Module) -> Tensor:
            _seed([inputs.device], seed)  # a stochastic method draws the same noise for every model
            e = _smoothed(_phi(method, m, target, targets, run), inputs, noise, float(noise_magnitude), batch_size)
            return e.abs() if absolute else e

        base = smoothed(model)
        for _, twin in randomised_models(model, layer_order, seed):
            rows.append(spearman(base, smoothed(twin)))
    return torch.stack(rows)  # [L,B]


def discrete_entropy(a: Tensor, n_bins: int = 100) -> Tensor:
    """Entropy (nats) of the histogram of each row of ``a`` ``[B, ...]`` in ``n_bins`` equal bins over its range.

    Quantus' ``discrete_entropy``: ``scipy.stats.entropy(np.histogram(a, bins=n_bins)[0])``, with numpy's binning
    (the last bin closed; a constant row in one bin: entropy 0).

    Example:
        >>> discrete_entropy(torch.tensor([[0.0, 1.0, 2.0, 3.0], [1.0, 1.0, 1.0, 1.0]]), n_bins=4)
        tensor([1.3863, 0.0000], dtype=torch.float64)
    """
    a = a.detach().double().flatten(1)
    lo, hi = a.amin(1, keepdim=True), a.amax(1, keepdim=True)
    flat = hi == lo
    lo, hi = torch.where(flat, lo - 0.5, lo), torch.where(flat, hi + 0.5, hi)  # numpy widens an empty range
    steps = torch.linspace(0, 1, n_bins + 1, dtype=torch.float64, device=a.device)
    edges = lo + (hi - lo) * steps  # [B,n+1] as np.linspace(lo, hi, n + 1)
    index = ((a - lo) * (n_bins / (hi - lo))).floor().long().clamp(0, n_bins - 1)
    index = index - (a < edges.gather(1, index)).long()  # numpy's corrections at the edges
    index = index + ((a >= edges.gather(1, index + 1)) & (index != n_bins - 1)).long()
    counts = torch.zeros(a.shape[0], n_bins, dtype=torch.float64, device=a.device).scatter_add_(
        1, index, torch.ones_like(a)
    )
    p = counts / counts.sum(1, keepdim=True)
    return (p * torch.where(p > 0, -p.log(), torch.zeros_like(p))).sum(1)


def efficient_mprt(
    model: nn.Module,
    inputs: Tensor,
    targets: TargetLike,
    method: Explainer | str,
    *,
    layer_order: LayerOrder = "bottom_up",
    n_bins: int = 100,
    normalise: bool = False,
    absolute: bool = False,
    seed: int = 0,
    run: Run | None = None,
) -> Tensor:
    """Efficient Model Parameter Randomisation Test (Hedström et al. 2023; Quantus' ``EfficientMPRT``) per image.

    The relative rise in complexity of the explanation when *every* layer of a copy is randomised
    (:func:`randomised_models`): ``(H(Phi_random) - H(Phi)) / H(Phi)``, ``H`` the :func:`discrete_entropy` of the
    explanation in ``n_bins`` bins (Quantus' default 100, no bin rule), ``Phi`` divided by its largest ``|value|``
    if ``normalise`` and made absolute if ``absolute`` (both off, as Quantus). Higher is better: randomising the
    model should make the explanation noisier. An explanation of entropy 0 (constant) gives 0, not infinity.

    Args:
        model: The model (never modified).
        inputs: ``[B, C, H, W]`` float images.
        targets: What is explained.
        method: A saliency method, a registry name, or ``f(model, inputs, targets)``.
        layer_order: Order of the re-initialisation (all layers end up random either way, but seeds apply in order).
        n_bins: Histogram bins of the entropy.
        normalise: Divide each explanation by its largest absolute value first.
        absolute: Take ``|Phi|`` first.
        seed: Seed of the re-initialisation (``seed + 1``, as Quantus).
        run: Precision and output adapter.

    Returns:
        ``[B]`` float32.

    Example:
        >>> from lightning_saliency.methods import Gradient
        >>> net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(64, 3))
        >>> efficient_mprt(net, torch.rand(2, 1, 4, 4), torch.tensor([0, 2]), Gradient()).shape
        torch.Size([2])
    """
    check_inputs(inputs)
    int_at_least(n_bins, 1, "n_bins")
    an_int(seed, "seed")
    run = run or Run()
    target = _check_model_inputs(inputs, targets, model, run)
    all_rows = torch.arange(inputs.shape[0], device=inputs.device)
    mode = "max" if normalise else None
    with preserved_rng([inputs.device]), gradients_enabled():
        inputs = inputs.detach().clone()
        phi = _phi(method, model, target, targets, run)
        _seed([inputs.device], seed)  # a stochastic method draws the same noise for both models
        before = discrete_entropy(_normalised(phi(inputs, all_rows), mode, absolute), n_bins)
        *_, (_, twin) = randomised_models(model, layer_order, seed)  # cascading: the last has every layer random
        phi = _phi(method, twin, target, targets, run)
        _seed([inputs.device], seed)
        after = discrete_entropy(_normalised(phi(inputs, all_rows), mode, absolute), n_bins)
    rise = (after - before) / torch.where(before == 0, torch.ones_like(before), before)
    return torch.where(before == 0, torch.zeros_like(rise), rise).float()
