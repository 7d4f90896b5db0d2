"""Axiomatic properties of explanations, as Quantus 0.6 tests them: completeness, non-sensitivity, input invariance.

All three run the model (batched, chunked, in ``inference_mode`` with the model in eval mode and the RNG kept;
input invariance explains a second time). Attributions go through Quantus' preprocessing first (``normalise``
then ``absolute``, per image: see :mod:`._quantus`), with Quantus' defaults for each metric.

Baselines are Quantus' ``perturb_baseline`` values: ``"black"`` (each image's minimum over all its values),
``"white"`` (its maximum), ``"mean"`` (its mean over all values), a float, or a tensor broadcastable to the inputs.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from lightning_saliency._chunking import run_chunked
from lightning_saliency._runtime import Run
from lightning_saliency.metrics.functional._common import (
    _check_batch_size,
    _check_model_inputs,
    _chunked_target_outputs,
    _scoring,
)
from lightning_saliency.metrics.functional._quantus import (
    Explainer,
    _baseline_values,
    _check_flag,
    _explained,
    _prepared,
)
from lightning_saliency.targets import TargetLike

__all__ = ["QuantusBaseline", "completeness", "input_invariance", "non_sensitivity", "quantus_baseline"]

QuantusBaseline = str | float | Tensor
"""``"black"``, ``"white"``, ``"mean"``, a float, or a tensor broadcastable to the inputs (Quantus' names)."""


def quantus_baseline(inputs: Tensor, perturb_baseline: QuantusBaseline) -> Tensor:
    """The reference ``[B, C, H, W]`` that Quantus' ``perturb_baseline`` names, per image (its ``batched`` mode).

    Example:
        >>> quantus_baseline(torch.tensor([[[[1.0, 3.0]]], [[[0.0, 8.0]]]]), "black").flatten().tolist()
        [1.0, 1.0, 0.0, 0.0]
    """
    if isinstance(perturb_baseline, Tensor):
        try:
            return torch.broadcast_to(perturb_baseline.to(inputs), inputs.shape).clone()
        except RuntimeError as err:
            shapes = f"{tuple(perturb_baseline.shape)} does not broadcast to the inputs {tuple(inputs.shape)}"
            raise ValueError(f"perturb_baseline must be a Tensor broadcastable to the inputs: {shapes}.") from err
    number = isinstance(perturb_baseline, (int, float)) and not isinstance(perturb_baseline, bool)
    if not number and perturb_baseline not in ("black", "white", "mean"):
        raise ValueError(
            f"perturb_baseline must be 'black', 'white', 'mean', a float or a Tensor, got {perturb_baseline!r}."
        )
    flat = inputs.flatten(1)  # [B,F]
    value = _baseline_values(flat, perturb_baseline)[:, None]  # [B,1] in the inputs' dtype
    return value.expand_as(flat).reshape(inputs.shape).clone()


def _attributions_like(attributions: Tensor, inputs: Tensor) -> Tensor:
    """``attributions`` checked against ``inputs``: batch first, as many dimensions, broadcastable.

    Not :func:`._quantus._broadcast_attributions`: completeness sums the map as given (a ``[B, 1, H, W]`` map is
    not repeated over the channels), so it is checked but not expanded.
    """
    ok = isinstance(attributions, Tensor) and attributions.ndim == inputs.ndim
    if ok:
        try:
            torch.broadcast_shapes(attributions.shape, inputs.shape)
        except RuntimeError:
            ok = False
    if not ok or attributions.shape[0] != inputs.shape[0]:
        got = tuple(attributions.shape) if isinstance(attributions, Tensor) else type(attributions).__name__
        raise ValueError(
            f"attributions must be a Tensor [B, C, H, W] or [B, 1, H, W] like the inputs {tuple(inputs.shape)}, "
            f"got {got}."
        )
    return attributions.to(inputs.device)


def completeness(
    model: nn.Module,
    inputs: Tensor,
    targets: TargetLike,
    attributions: Tensor,
    *,
    perturb_baseline: QuantusBaseline = "black",
    absolute: bool = False,
    normalise: bool = True,
    rtol: float = 0.0,
    atol: float = 0.0,
    batch_size: int = 64,
    run: Run | None = None,
) -> Tensor:
    """Completeness per image (Sundararajan et al. 2017; Quantus' ``Completeness``): ``sum(a) = f(x) - f(x')``?

    ``f`` is the target's score (a class's logit: Quantus' ``softmax=False``), ``x'`` the ``perturb_baseline``.
    Quantus tests exact equality, which is the default here (``rtol = atol = 0``); pass a tolerance to test
    ``|sum(a) - (f(x) - f(x'))| <= atol + rtol * |f(x) - f(x')|`` (the Integrated Gradients paper checks 5 %).
    Quantus' default ``normalise=True`` divides the attributions by their maximum, after which they rarely sum to
    the gap: pass raw attributions (:meth:`~lightning_saliency.methods.AttributionMethod.attributions`, not the
    methods' maps in [0, 1]) with ``normalise=False``.

    Args:
        model: Classifier.
        inputs: ``[B, C, H, W]`` float images.
        targets: What the attributions explain (``[B]`` class indices, or a target).
        attributions: ``[B, C, H, W]`` or ``[B, 1, H, W]``; each image's values are summed.
        perturb_baseline: ``x'``: ``"black"`` (Quantus' default), ``"white"``, ``"mean"``, a float or a tensor.
        absolute: Take magnitudes first (Quantus' default ``False``).
        normalise: Divide by the largest magnitude first (Quantus' default ``True``).
        rtol: Relative tolerance (0: exact, as Quantus).
        atol: Absolute tolerance (0: exact, as Quantus).
        batch_size: Most images per forward.
        run: Precision and output adapter.

    Returns:
        ``[B]`` float32, 1 where complete, 0 elsewhere.

    Raises:
        ValueError: For a bad argument (named in the message).

    Example:
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2, bias=False))
        >>> with torch.no_grad():
        ...     _ = net[1].weight.fill_(1.0)
        >>> x = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
        >>> completeness(net, x, torch.tensor([0]), x, perturb_baseline=0.0, normalise=False)  # 10 = 10 - 0
        tensor([1.])
    """
    target = _check_model_inputs(inputs, targets, model, run)
    for value, arg in ((rtol, "rtol"), (atol, "atol")):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
            raise ValueError(f"{arg} must be a number >= 0, got {value!r}.")
    _check_batch_size(batch_size)
    attributions = _attributions_like(attributions, inputs)
    total = (
        _prepared(attributions, absolute=absolute, normalise=normalise, arg="attributions").flatten(1).double().sum(1)
    )
    reference = quantus_baseline(inputs, perturb_baseline)
    run = run or Run()
    with _scoring(model, inputs):
        f_x = _chunked_target_outputs(model, inputs, target, run, batch_size, softmax=False).float()  # [B]
        f_reference = _chunked_target_outputs(model, reference, target, run, batch_size, softmax=False).float()
    gap = (f_x - f_reference).double()  # [B] the difference in float32, as Quantus; then compared exactly
    return ((total - gap).abs() <= atol + rtol * gap.abs()).float()


def non_sensitivity(
    model: nn.Module,
    inputs: Tensor,
    targets: TargetLike,
    attributions: Tensor,
    *,
    eps: float = 1e-5,
    features_in_step: int = 1,
    perturb_baseline: QuantusBaseline = "black",
    absolute: bool = True,
    normalise: bool = True,
    softmax: bool = True,
    batch_size: int = 64,
    run: Run | None = None,
) -> Tensor:
    """Non-sensitivity per image (Nguyen & Martinez 2020), as Quantus' ``NonSensitivity``: violations, lower is better.

    The input's values (every channel of every pixel, flattened channel-first) are replaced by ``perturb_baseline``
    in consecutive groups of ``features_in_step``, one group per forward; a group is a violation when the model's
    output (the target's probability: Quantus' ``softmax=True``) moves by less than ``eps`` although its
    attributions are not all below ``eps``, or moves by ``eps`` or more although they all are. A ``[B, 1, H, W]``
    map counts for every channel of its pixel (broadcast, as Quantus). The score is the number of violations.

    Quantus 0.6 computes this for ``features_in_step=1`` only (larger steps fail with a shape error there); a group
    of several values is here a non-feature when all its attributions are below ``eps``, which is the same rule for
    one value. Cost: ``ceil(C * H * W / features_in_step)`` forwards per image (3072 for a 3 x 32 x 32 image).

    Args:
        model: Classifier.
        inputs: ``[B, C, H, W]`` float images.
        targets: What the attributions explain.
        attributions: ``[B, C, H, W]`` or ``[B, 1, H, W]``.
        eps: Threshold on the attributions (after preprocessing) and on the change of the output (``1e-5``).
        features_in_step: Values replaced per forward.
        perturb_baseline: What they are replaced by (``"black"``: the image's minimum).
        absolute: Take magnitudes first (Quantus' default ``True``).
        normalise: Divide by the largest magnitude first (Quantus' default ``True``).
        softmax: Compare probabilities (``True``, Quantus' default) or scores (a class's logit).
        batch_size: Most perturbed images per forward.
        run: Precision and output adapter.

    Returns:
        ``[B]`` float32 counts of violating groups.

    Raises:
        ValueError: For a bad argument (named in the message).

    Example:
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
        >>> with torch.no_grad():
        ...     _ = net[1].weight.copy_(torch.tensor([[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]))
        >>> x = torch.ones(1, 1, 2, 2) * 2
        >>> non_sensitivity(net, x, torch.tensor([0]), torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]]), perturb_baseline=0.0)
        tensor([1.])
    """
    target = _check_model_inputs(inputs, targets, model, run)
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps >= 0:
        raise ValueError(f"eps must be a number >= 0, got {eps!r}.")
    if isinstance(features_in_step, bool) or not isinstance(features_in_step, int) or features_in_step < 1:
        raise ValueError(f"features_in_step must be an int >= 1 (values per forward), got {features_in_step!r}.")
    _check_flag(softmax, "softmax")
    _check_batch_size(batch_size)
    attributions = _attributions_like(attributions, inputs)
    a = _prepared(attributions, absolute=absolute, normalise=normalise, arg="attributions")
    unattributed = torch.broadcast_to(a, inputs.shape).flatten(1) < eps  # [B,F]
    b, f = unattributed.shape
    groups = math.ceil(f / features_in_step)
    group_of = torch.arange(f, device=inputs.device) // features_in_step  # [F]
    flat = inputs.flatten(1)  # [B,F]
    reference = quantus_baseline(inputs, perturb_baseline).flatten(1)  # [B,F]
    run = run or Run()

    def changes(lo: int, hi: int) -> Tensor:
        item = torch.arange(lo, hi, device=inputs.device)
        image, group = item // groups, item % groups  # [n] image-major
        replaced = group_of[None] == group[:, None]  # [n,F]
        perturbed = torch.where(replaced, reference[image], flat[image]).view(-1, *inputs.shape[1:])
        return _chunked_target_outputs(model, perturbed, target[image], run, hi - lo, softmax).float()

    with _scoring(model, inputs):
        clean = _chunked_target_outputs(model, inputs, target, run, batch_size, softmax).float()  # [B]
        moved = torch.cat(run_chunked(changes, b * groups, batch_size, what="perturbed images")).view(b, groups)
    insensitive = (moved - clean[:, None]).abs() < eps  # [B,G]
    non_feature = torch.ones(b, groups, dtype=torch.bool, device=inputs.device)
    non_feature.scatter_reduce_(1, group_of.expand(b, -1), unattributed, "amin")  # all of the group's values
    return (insensitive ^ non_feature).sum(1).float()


def input_invariance(
    explain: Explainer,
    model: nn.Module,
    inputs: Tensor,
    targets: TargetLike,
    attributions: Tensor | None = None,
    *,
    input_shift: float = -1.0,
    absolute: bool = False,
    normalise: bool = False,
    run: Run | None = None,
) -> Tensor:
    """Input invariance per image (Kindermans et al. 2017; Quantus' ``InputInvariance``): does a shift change it?

    Is the explanation unchanged when the input is shifted by a constant and the model compensates the shift?

    The explanation of ``x + input_shift`` by a model that first subtracts ``input_shift`` (the same function of
    ``x``) is compared with the explanation of ``x`` by the model: invariant (1) when every value agrees within
    ``1e-4 + 1e-5 * |shifted value|`` (Quantus' ``np.isclose(..., atol=1e-4)``). Quantus compensates the shift in
    the bias of the model's first module (a convolution with a bias, in a deep copy); here a forward pre-hook on
    ``model`` subtracts it from the input (removed afterwards, also on error), which is that compensation wherever
    Quantus' is exact (a first convolution without padding) and needs no bias or copy. Gradients are invariant;
    gradient x input and Integrated Gradients with a zero baseline are not.

    Args:
        explain: A saliency method, or ``f(model, inputs, targets) -> attributions``.
        model: Classifier.
        inputs: ``[B, C, H, W]`` float images.
        targets: What to explain.
        attributions: The explanation of ``inputs`` (default: ``explain`` computes it; e.g. the maps already made).
        input_shift: The constant added to the inputs (Quantus' default ``-1``).
        absolute: Take magnitudes of both explanations first (Quantus' default ``False``).
        normalise: Divide both by their largest magnitude first (Quantus' default ``False``).
        run: Precision and output adapter (for a saliency method).

    Returns:
        ``[B]`` float32, 1 where invariant, 0 elsewhere.

    Raises:
        ValueError: For a bad argument, or explanations of different shapes.

    Example:
        >>> from lightning_saliency.methods import Gradient, GradientXInput
        >>> net = nn.Sequential(nn.Conv2d(1, 2, 2), nn.Flatten(), nn.Linear(8, 2))
        >>> x, y = torch.rand(2, 1, 3, 3), torch.tensor([0, 1])
        >>> input_invariance(Gradient(), net, x, y), input_invariance(GradientXInput(), net, x, y)
        (tensor([1., 1.]), tensor([0., 0.]))
    """
    target = _check_model_inputs(inputs, targets, model, run)
    if isinstance(input_shift, bool) or not isinstance(input_shift, (int, float)) or not math.isfinite(input_shift):
        raise ValueError(f"input_shift must be a finite number, got {input_shift!r}.")
    run = run or Run()
    rows = torch.arange(inputs.shape[0], device=inputs.device)
    if attributions is None:
        attributions = _explained(explain, model, inputs, rows, target, targets, run)
    shift = float(input_shift)

    def unshift(_module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
        return (args[0] - shift, *args[1:])

    handle = model.register_forward_pre_hook(unshift)
    try:
        moved = _explained(explain, model, inputs + shift, rows, target, targets, run)
    finally:
        handle.remove()
    if not isinstance(attributions, Tensor) or tuple(attributions.shape) != tuple(moved.shape):
        got = tuple(attributions.shape) if isinstance(attributions, Tensor) else type(attributions).__name__
        raise ValueError(
            f"attributions must have the shape of the explanation {tuple(moved.shape)} of the shifted inputs, got "
            f"{got}."
        )
    a = _prepared(attributions.to(moved.device), absolute=absolute, normalise=normalise, arg="attributions").flatten(1)
    m = _prepared(moved, absolute=absolute, normalise=normalise, arg="attributions").flatten(1)
    return ((a - m).abs() <= 1e-4 + 1e-5 * m.abs()).all(1).float()
