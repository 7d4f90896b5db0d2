"""Layer-wise Relevance Propagation (Bach et al. 2015) for CNNs, through zennit's composites and canonizers.

An optional extra: ``pip install "lightning-saliency[lrp]"`` installs zennit. The package imports without it; an LRP
method raises an ``ImportError`` naming that command when it is constructed.

zennit changes the model for the duration of one pass: its canonizers merge each BatchNorm into the convolution
before it (the parameters' ``.data`` is swapped, then the original tensors are put back) and replace the residual
addition of torchvision ResNets by a module, and its rules are forward hooks. Here all of that happens inside a
``try``/``finally`` that removes the hooks and reverts the canonizers, and a snapshot of every module (parameters,
buffers, the tensors they hold, submodules, hook dicts, an overridden ``forward``) puts back whatever zennit would
leave behind, also when an exception interrupts it half-way: the original tensors come back (no arithmetic), so the
weights are bit-identical and the model needs no copy. The relevance is taken with ``torch.autograd.grad`` w.r.t. the
input, never ``.backward()``.
"""

from __future__ import annotations

import contextlib
import functools
import weakref
from abc import abstractmethod
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.instancenorm import _InstanceNorm
from torch.nn.parameter import is_lazy

from lightning_saliency._checks import positive_float
from lightning_saliency._runtime import Run
from lightning_saliency.methods.attribution import _autocast_in
from lightning_saliency.methods.base import AttributionMethod, run_gradient_pass
from lightning_saliency.methods.registry import register_method
from lightning_saliency.targets import Target

__all__ = ["LRP", "LRPAlphaBeta", "LRPEpsilonPlusFlat", "auto_canonizers", "check_lrp_model"]

INSTALL = 'pip install "lightning-saliency[lrp]"'

Canonizers = str | Sequence[Any] | None
"""``"auto"``, ``None`` (no canonizer) or a sequence of zennit ``Canonizer`` instances."""

_UNSUPPORTED: tuple[type[nn.Module], ...] = (
    nn.MultiheadAttention,  # zennit passes relevance through it as through an activation
    nn.LayerNorm,
    nn.GroupNorm,
    _InstanceNorm,
    nn.LocalResponseNorm,
    nn.Softmax,
    nn.LogSoftmax,
    nn.Softmin,
    nn.Softmax2d,
    nn.GLU,
    nn.RNNBase,
    nn.Bilinear,
)
"""Modules zennit has no rule for and whose gradient is not a relevance rule (products and normalisations)."""


def _zennit() -> Any:
    """The zennit modules the LRP methods use; a clear ``ImportError`` where the extra is not installed."""
    try:
        import zennit.canonizers
        import zennit.composites
        import zennit.core
        import zennit.rules
        import zennit.torchvision
        import zennit.types
    except ImportError as err:
        raise ImportError(f"The LRP methods need zennit, an optional dependency: {INSTALL}") from err
    return zennit


@functools.cache
def _merge_batch_norm() -> type:
    """Zennit's ``SequentialMergeBatchNorm`` for every BatchNorm class (``SyncBatchNorm`` too, as DDP converts)."""

    class SequentialMergeAnyBatchNorm(_zennit().canonizers.SequentialMergeBatchNorm):  # type: ignore[misc]
        batch_norm_type = (_BatchNorm,)

    return SequentialMergeAnyBatchNorm


def _batch_norm_pass() -> list[tuple[tuple[type, ...], Any]]:
    """Zennit's ``Pass`` rule for every BatchNorm class (its composites name BatchNorm1d/2d/3d, not SyncBatchNorm)."""
    return [((_BatchNorm,), _zennit().rules.Pass())]


def auto_canonizers(model: nn.Module) -> list[Any]:
    """The canonizers ``canonizers="auto"`` applies to ``model``.

    zennit's ``ResNetCanonizer`` (BatchNorm merged, the residual sum a module) where the model contains torchvision
    ResNet blocks, else ``SequentialMergeBatchNorm`` where it contains BatchNorm (VGG-style: each BatchNorm right
    after a convolution or linear layer in module order; zennit's ``VGGCanonizer`` is the same), else none. The merge
    covers every BatchNorm class, ``SyncBatchNorm`` included.

    Example:
        >>> from torchvision.models import resnet18
        >>> [type(c).__name__ for c in auto_canonizers(resnet18())]
        ['SequentialMergeAnyBatchNorm', 'ResNetBottleneckCanonizer', 'ResNetBasicBlockCanonizer']
        >>> auto_canonizers(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()))
        []
    """
    zennit = _zennit()
    from torchvision.models.resnet import BasicBlock, Bottleneck

    modules = list(model.modules())
    if any(isinstance(m, (BasicBlock, Bottleneck)) for m in modules):
        tv = zennit.torchvision
        return [_merge_batch_norm()(), tv.ResNetBottleneckCanonizer(), tv.ResNetBasicBlockCanonizer()]
    if any(isinstance(m, _BatchNorm) for m in modules):
        return [_merge_batch_norm()()]
    return []


def check_lrp_model(model: nn.Module, merges_batch_norm: bool) -> None:
    """Raise a ``ValueError`` naming the modules LRP's rules do not cover.

    Not covered: attention, layer/group/instance/local response normalisation, softmax, GLU, recurrent and bilinear
    layers (zennit would take their plain gradient, which is no relevance rule), BatchNorm without running statistics
    (eval mode then normalises with the batch's statistics) and, where BatchNorm is merged, BatchNorm without affine
    parameters.
    """
    bad = []
    for name, module in model.named_modules():
        if isinstance(module, _UNSUPPORTED):
            bad.append(f"{name or 'model'!r} ({type(module).__name__})")
        elif isinstance(module, _BatchNorm) and module.running_mean is None:
            bad.append(f"{name or 'model'!r} ({type(module).__name__} without running statistics)")
        elif isinstance(module, _BatchNorm) and merges_batch_norm and not module.affine:
            bad.append(f"{name or 'model'!r} ({type(module).__name__} with affine=False, which zennit cannot merge)")
    if bad:
        raise ValueError(
            f"LRP's rules are defined for networks of convolutions, linear layers, pooling, BatchNorm and element-wise "
            f"activations; {type(model).__name__} has modules they do not cover: {', '.join(bad[:5])}"
            f"{' and more' if len(bad) > 5 else ''}. Use a gradient method (e.g. 'integrated_gradients') instead."
        )


class LRP(AttributionMethod):
    """Base of the LRP methods: a zennit composite, canonizers, and the relevance of the input as attributions.

    Subclasses implement :meth:`composite`. The attributions are zennit's relevance ``R [B, C, H, W]`` of the input,
    that of ``zennit.attribution.Gradient(model, composite)`` seeded with the gradient of the target's score w.r.t.
    the model output (for a class: the one-hot vector of zennit's examples); the map is ``|sum_c R_c|``, as for the
    other input attributions (Gradient x Input, Integrated Gradients, DeepLift).

    Requirements on the model (a clear error says which are broken): every nonlinearity a module (zennit's rules are
    module hooks; a functional ``F.relu`` gets its plain gradient); only convolutions, linear layers, pooling,
    BatchNorm and element-wise activations (:func:`check_lrp_model`); each module with a rule (convolutions, linear
    layers, average pooling) run once per forward (zennit keeps one input per module); the layers registered in the
    order the forward runs them (zennit gives the flat rule to the first one registered); residual additions as
    modules, which the canonizers of torchvision ResNets arrange (other residual networks need their own canonizer,
    else the two branches each get the relevance of the sum). The canonized model must compute what the model does:
    on the first call per model the output of the canonized model is compared with the model's own (one extra
    forward without gradients) and a mismatch (a BatchNorm merged into a layer it does not follow) is an error.

    Cost: one forward and one backward per image, the backward dearer than a plain one (each rule re-runs its layer:
    1 to 4 times; on a CPU 2.7x / 3.3x a forward+backward for VGG-11-BN / ResNet-18 with epsilon-plus-flat, 3.9x /
    5.9x with alpha-beta, as much as calling zennit directly: ``benchmarks/bench_lrp.py``), plus one forward
    without gradients on the first call per model where canonizers apply. No copy of the model.

    Args:
        epsilon: The epsilon rule's stabiliser in linear layers.
        stabilizer: The other rules' stabiliser of their denominators.
        canonizers: ``"auto"`` (:func:`auto_canonizers`: ``ResNetCanonizer`` for torchvision ResNets,
            ``SequentialMergeBatchNorm`` for other models with BatchNorm, such as VGG), ``None`` (none; BatchNorm then
            passes relevance through unchanged, zennit's ``Pass`` rule), or a sequence of zennit canonizers.
        name: Label in logs.
    """

    def __init__(
        self,
        epsilon: float = 1e-6,
        stabilizer: float = 1e-6,
        canonizers: Canonizers = "auto",
        *,
        name: str | None = None,
    ) -> None:
        super().__init__(name=name)
        self.epsilon = positive_float(epsilon, "epsilon")
        self.stabilizer = positive_float(stabilizer, "stabilizer")
        zennit = _zennit()
        if canonizers is not None and canonizers != "auto":
            if isinstance(canonizers, str) or not isinstance(canonizers, Sequence):
                raise ValueError(f"canonizers must be 'auto', None or a list of zennit canonizers, got {canonizers!r}.")
            wrong = [c for c in canonizers if not isinstance(c, zennit.canonizers.Canonizer)]
            if wrong:
                raise ValueError(f"canonizers must be zennit.canonizers.Canonizer instances, got {wrong[0]!r}.")
            canonizers = list(canonizers)
        self.canonizers = canonizers
        self._verified: weakref.WeakSet[nn.Module] = weakref.WeakSet()

    @abstractmethod
    def composite(self, canonizers: list[Any]) -> Any:
        """A new zennit ``Composite`` with these canonizers (one per call: a composite holds its hooks)."""

    def canonizers_for(self, model: nn.Module) -> list[Any]:
        """The canonizers applied to ``model``: :func:`auto_canonizers`, none, or those given."""
        if self.canonizers == "auto":
            return auto_canonizers(model)
        return list(self.canonizers or [])

    def _attributions(self, model: nn.Module, inputs: Tensor, targets: Target, run: Run) -> Tensor:
        zennit = _zennit()
        canonizers = self.canonizers_for(model)
        merges = any(isinstance(c, zennit.canonizers.MergeBatchNorm) for c in canonizers)
        check_lrp_model(model, merges)
        verify = bool(canonizers) and model not in self._verified
        if verify:
            with torch.no_grad():
                plain = run.output(model, inputs).detach().float()
        composite = self.composite(canonizers)
        with _restored(model):
            try:
                composite.register(model)
                with _rules_checked(model, zennit), run.precision.forward_context():
                    # the rules re-run their layer in the backward: in the forward's autocast, like the forward
                    p = run_gradient_pass(model, inputs, targets, [], run, input_grads=True)
            finally:
                composite.remove()
        if verify:
            # zennit's merged BatchNorm still divides by sqrt(1 + eps): each scales its output by ~(1 - eps / 2)
            drift = sum(m.eps for m in model.modules() if isinstance(m, _BatchNorm)) if merges else 0.0
            _check_canonized(model, plain, p.logits, canonizers, (1e-3 if _float32(run, inputs) else 5e-2) + drift)
            self._verified.add(model)
        assert p.input_grads is not None
        return p.input_grads

    def compute(self, model: nn.Module, inputs: Tensor, targets: Target, run: Run) -> Tensor:
        """``|sum_c R_c|``, ``[B, 1, H, W]``."""
        return self._attributions(model, inputs, targets, run).sum(1, keepdim=True).abs()


@register_method("lrp_epsilon_plus_flat")
class LRPEpsilonPlusFlat(LRP):
    """LRP with zennit's ``EpsilonPlusFlat`` composite, the recommended one for CNNs.

    The rules of Kohlbrenner et al. 2020 ("Towards best practice in explaining neural network decisions with LRP",
    zennit's default in its documentation): LRP-epsilon in linear (dense) layers, LRP-z+ (alpha 1, beta 0) in
    convolutions, the flat rule in the first layer (relevance spread evenly over its receptive field: it needs no
    bounds of the input domain, which ``EpsilonGammaBox``'s z-box rule does), sum-normalisation through average
    pooling, relevance passed through activations and (unmerged) BatchNorm.

    Args:
        epsilon: The epsilon rule's stabiliser in linear layers.
        stabilizer: The other rules' stabiliser of their denominators.
        canonizers: ``"auto"``, ``None`` or zennit canonizers (see :class:`LRP`).
        name: Label in logs.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        ...                     nn.Flatten(), nn.Linear(4, 3))
        >>> LRPEpsilonPlusFlat()(net, torch.rand(2, 3, 8, 8), torch.tensor([0, 2])).shape
        torch.Size([2, 1, 8, 8])
    """

    def composite(self, canonizers: list[Any]) -> Any:
        """Zennit's ``EpsilonPlusFlat(epsilon, stabilizer, canonizers=canonizers)``."""
        zennit = _zennit()
        return zennit.composites.EpsilonPlusFlat(
            epsilon=self.epsilon, stabilizer=self.stabilizer, layer_map=_batch_norm_pass(), canonizers=canonizers
        )


@register_method("lrp_alpha_beta")
class LRPAlphaBeta(LRP):
    """LRP-alpha-beta in convolutions (Bach et al. 2015): zennit's ``EpsilonAlpha2Beta1Flat`` with ``alpha``, ``beta``.

    Positive contributions are weighted by ``alpha``, negative ones by ``beta`` (``alpha - beta = 1``, so relevance
    is conserved); LRP-epsilon in linear layers and the flat rule in the first layer, as in
    :class:`LRPEpsilonPlusFlat` (``alpha=1, beta=0`` is that method). The default ``alpha=2, beta=1`` is zennit's
    ``EpsilonAlpha2Beta1Flat``, whose maps also show negative evidence.

    Args:
        alpha: Weight of the positive contributions, ``>= 1``.
        beta: Weight of the negative contributions, ``alpha - 1``.
        epsilon: The epsilon rule's stabiliser in linear layers.
        stabilizer: The other rules' stabiliser of their denominators.
        canonizers: ``"auto"``, ``None`` or zennit canonizers (see :class:`LRP`).
        name: Label in logs.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.ReLU(),
        ...                     nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
        >>> LRPAlphaBeta(alpha=1.0, beta=0.0)(net, torch.rand(2, 3, 8, 8), torch.tensor([0, 2])).shape
        torch.Size([2, 1, 8, 8])
    """

    def __init__(
        self,
        alpha: float = 2.0,
        beta: float = 1.0,
        epsilon: float = 1e-6,
        stabilizer: float = 1e-6,
        canonizers: Canonizers = "auto",
        *,
        name: str | None = None,
    ) -> None:
        super().__init__(epsilon, stabilizer, canonizers, name=name)
        for value, arg in ((alpha, "alpha"), (beta, "beta")):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
                raise ValueError(f"{arg} must be a float >= 0, got {value!r}.")
        if alpha - beta != 1:
            raise ValueError(
                f"alpha - beta must be 1 (so that relevance is conserved, Bach et al. 2015), got alpha={alpha!r} and "
                f"beta={beta!r}."
            )
        self.alpha, self.beta = float(alpha), float(beta)

    def composite(self, canonizers: list[Any]) -> Any:
        """Zennit's ``EpsilonAlpha2Beta1Flat`` with ``AlphaBeta(alpha, beta)`` in its convolutions."""
        zennit = _zennit()
        rule = zennit.rules.AlphaBeta(alpha=self.alpha, beta=self.beta, stabilizer=self.stabilizer)
        return zennit.composites.EpsilonAlpha2Beta1Flat(
            epsilon=self.epsilon,
            stabilizer=self.stabilizer,
            layer_map=[(zennit.types.Convolution, rule), *_batch_norm_pass()],  # before its own AlphaBeta(2, 1)
            canonizers=canonizers,
        )


# ------------------------------------------------------------------------------------------- what must stay intact

_HOOK_DICTS = (
    "_forward_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_hooks_always_called",
    "_forward_pre_hooks",
    "_forward_pre_hooks_with_kwargs",
    "_backward_hooks",
    "_backward_pre_hooks",
)
_MISSING = object()


def _same_items(now: dict[str, Any], saved: dict[str, Any]) -> bool:
    return now.keys() == saved.keys() and all(now[k] is saved[k] for k in saved)


def _same_view(tensor: Tensor, data: Tensor) -> bool:
    return (
        tensor.data_ptr() == data.data_ptr()
        and tensor.shape == data.shape
        and tensor.stride() == data.stride()
        and tensor.dtype == data.dtype
        and tensor.device == data.device
    )


@contextlib.contextmanager
def _restored(model: nn.Module) -> Iterator[None]:
    """Put every module back as it was on exit, whatever zennit did or failed to undo.

    Saved per module: its parameter, buffer and submodule dicts (which objects they hold), the tensor each parameter
    and buffer holds (``.data``: the canonizers swap it), its hook dicts and an instance ``forward``. Restoring puts
    back the saved objects; nothing is recomputed.
    """
    saved = [
        (
            m,
            dict(m._parameters),
            dict(m._buffers),
            dict(m._modules),
            m.__dict__.get("forward", _MISSING),
            {attr: dict(getattr(m, attr)) for attr in _HOOK_DICTS if hasattr(m, attr)},
        )
        for m in model.modules()
    ]
    data = [
        (t, t.data)
        for m, params, buffers, *_ in saved
        for t in (*params.values(), *buffers.values())
        if t is not None and not is_lazy(t)
    ]
    try:
        yield
    finally:
        for m, params, buffers, modules, forward, hooks in saved:
            restores: tuple[tuple[dict[str, Any], dict[str, Any]], ...] = (
                (m._parameters, params),
                (m._buffers, buffers),
                (m._modules, modules),
            )
            for now, before in restores:
                if not _same_items(now, before):
                    now.clear()
                    now.update(before)
            for attr, before in hooks.items():
                now = getattr(m, attr)
                if now.keys() != before.keys():
                    now.clear()
                    now.update(before)
            if forward is _MISSING:
                m.__dict__.pop("forward", None)
            elif m.__dict__.get("forward") is not forward:
                m.__dict__["forward"] = forward
        with torch.no_grad():
            for tensor, held in data:
                if not _same_view(tensor, held):
                    tensor.data = held


def _hooked_by(module: nn.Module, kind: type) -> bool:
    """Whether one of ``module``'s forward hooks belongs to a zennit rule of class ``kind``."""
    return any(isinstance(getattr(h, "__self__", None), kind) for h in module._forward_hooks.values())


@contextlib.contextmanager
def _rules_checked(model: nn.Module, zennit: Any) -> Iterator[None]:
    """Inside, a forward raises where zennit's rules would silently be wrong.

    * A module with a rule runs a second time: the rules keep the module's last input and re-run the layer on it in
      the backward, so the relevance of its first use would come from its second input.
    * The first layer to run is not the one the first-layer rule (flat) went to: zennit picks the first convolution
      or linear layer in module registration order, not in the order of the forward.
    """
    names = {id(m): name for name, m in model.named_modules()}
    ruled = [m for m in model.modules() if _hooked_by(m, zennit.core.BasicHook)]
    first = next((m for m in ruled if _hooked_by(m, zennit.rules.Flat)), None)
    counts: dict[int, int] = {}

    def name(module: nn.Module) -> str:
        return f"{names.get(id(module), '?')!r} ({type(module).__name__})"

    linear_ran = [False]

    def count(module: nn.Module, _args: Any) -> None:
        if isinstance(module, zennit.types.Linear):
            if not linear_ran[0] and first is not None and module is not first:
                raise RuntimeError(
                    f"LRP: the first layer of the forward is {name(module)}, but zennit gave the first-layer (flat) "
                    f"rule to {name(first)}, the first registered: it picks the first layer in module registration "
                    "order. Register the modules in the order the forward runs them."
                )
            linear_ran[0] = True
        counts[id(module)] = counts.get(id(module), 0) + 1
        if counts[id(module)] > 1:
            raise RuntimeError(
                f"LRP: module {name(module)} ran more than once in one forward; zennit's rules keep one input per "
                "module, so the relevance of a module applied several times would be wrong. Give each use its own "
                "module."
            )

    handles = [m.register_forward_pre_hook(count) for m in ruled]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _float32(run: Run, inputs: Tensor) -> bool:
    return run.precision.convert_input(inputs[:1]).dtype == torch.float32 and not _autocast_in(run)


def _check_canonized(model: nn.Module, plain: Tensor, canonized: Tensor, canonizers: list[Any], tol: float) -> None:
    """The canonized model's output must be the model's own (within ``tol`` of its largest magnitude)."""
    finite = torch.isfinite(plain) & torch.isfinite(canonized)
    gap = float(torch.where(finite, (plain - canonized).abs(), 0.0).max()) if plain.numel() else 0.0
    scale = float(torch.where(finite, plain.abs(), 0.0).max()) if plain.numel() else 0.0
    if gap > tol * max(scale, 1e-6) or not torch.equal(torch.isfinite(plain), torch.isfinite(canonized)):
        raise RuntimeError(
            f"LRP: the canonizers {[type(c).__name__ for c in canonizers]} change what {type(model).__name__} "
            f"computes (outputs differ by up to {gap:.3g}, largest output {scale:.3g}): a BatchNorm was merged into "
            "a layer whose output it does not normalise (SequentialMergeBatchNorm follows module registration order), "
            "or a canonizer does not fit this architecture. Pass canonizers=None, or canonizers that fit the model."
        )
