"""The method protocol, the shared gradient pass and the engine that runs several methods at once.

Every method maps ``inputs [B, C, H, W]`` and a target (:mod:`lightning_saliency.targets`; class indices ``[B]``
are a :class:`~lightning_saliency.targets.ClassTarget`) to ``maps [B, 1, H, W]`` (float32, detached, each map
min-max normalised to [0, 1], never NaN). The kinds of methods, by type:

* :class:`GradientMethod`: computed from the ONE forward and ONE ``torch.autograd.grad`` call w.r.t.
  ``[input, layer activations...]`` that the engine shares between all such methods of a call (``gradient``,
  ``gradient_x_input``, every CAM method); each writes only :meth:`GradientMethod.from_pass`.
* :class:`LayerMethod`: reads a target layer's activations (``target_layer``, ``reshape``); :class:`CAMMethod` is
  both, and writes only its channel weights.
* any other :class:`SaliencyMethod` runs its own passes in :meth:`SaliencyMethod.compute` (SmoothGrad, Integrated
  Gradients, Score-CAM, CAMERAS).

The engine (:func:`compute_saliency`) does what is common to all of them: it runs them on a model put in eval mode
(each submodule's mode restored after), with training's RNG streams forked, with autograd on even under Lightning's
``torch.inference_mode``, and casts to float32, upsamples to the input size and normalises each map.

``torch.autograd.grad`` never writes parameter ``.grad``; nothing here calls ``.backward()``.
"""

from __future__ import annotations

import contextlib
import warnings
import weakref
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_saliency._checks import check_inputs
from lightning_saliency._reshape import Reshape, apply_reshape, check_reshape
from lightning_saliency._runtime import (
    FP32,
    OutputAdapter,
    Precision,
    Run,
    eval_mode,
    gradients_enabled,
    preserved_rng,
)
from lightning_saliency._shapes import interpolation, per_sample
from lightning_saliency.exceptions import SaliencyWarning
from lightning_saliency.layers import LayerSpec, capture_outputs, checked_output, resolve_target_layer, token_prefix
from lightning_saliency.targets import Target, TargetLike, as_target, resolved

__all__ = [
    "ActivationMethod",
    "AttributionMethod",
    "CAMMethod",
    "GradientMethod",
    "GradientPass",
    "LayerMethod",
    "Run",
    "SaliencyMethod",
    "compute_saliency",
    "graph_from",
    "normalize_maps",
]

_EPS = 1e-8


class SaliencyMethod(ABC):
    """A saliency method: ``method(model, inputs, targets) -> maps``.

    Subclasses set ``name`` (the registry key) and implement :meth:`compute`, returning a raw map
    ``[B, 1, h, w]`` (any float dtype, any resolution); the engine normalises it.

    Args:
        name: Label used in logs and result dicts; defaults to the class's registry name. Give two
            instances of the same method different names (e.g. Grad-CAM on two layers).
    """

    name: ClassVar[str] = ""
    uses_layer: ClassVar[bool] = False
    """Whether the method reads a target layer (``target_layer`` and ``reshape`` apply): see :class:`LayerMethod`."""
    needs: ClassVar[frozenset[str]] = frozenset()
    """What the model must have beyond a forward: ``"attention"`` (a vision transformer's self-attention blocks,
    :mod:`lightning_saliency._attention`); elsewhere the method raises an error naming it."""

    def __init__(self, *, name: str | None = None) -> None:
        if name is not None and (not isinstance(name, str) or not name):
            raise ValueError(f"name must be a non-empty string, got {name!r}.")
        self.label: str = name or type(self).name

    def __call__(
        self,
        model: nn.Module,
        inputs: Tensor,
        targets: TargetLike,
        *,
        precision: Precision | None = None,
        output_adapter: OutputAdapter | None = None,
    ) -> Tensor:
        """Maps ``[B, 1, H, W]`` in [0, 1] for ``inputs [B, C, H, W]`` and ``targets`` (class indices ``[B]``)."""
        return compute_saliency(model, inputs, targets, [self], precision=precision, output_adapter=output_adapter)[0]

    @abstractmethod
    def compute(self, model: nn.Module, inputs: Tensor, targets: Target, run: Run) -> Tensor:
        """Raw map ``[B, 1, h, w]``. Called in eval mode with autograd available; ``inputs`` is a normal tensor."""

    def layer_name(self, model: nn.Module, inputs: Tensor, run: Run | None = None) -> str | None:
        """The dotted name of the layer this method reads, ``None`` if it reads none (see :class:`LayerMethod`)."""
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.label!r})"

    def _warn_once(self, key: str, message: str) -> None:
        """A :class:`~lightning_saliency.SaliencyWarning`, once per method instance and ``key``."""
        warned: set[str] = self.__dict__.setdefault("_warned", set())
        if key not in warned:
            warned.add(key)
            warnings.warn(message, SaliencyWarning, stacklevel=3)


class AttributionMethod(SaliencyMethod):
    """A method whose map reduces attributions on the input (captum's): it implements :meth:`_attributions`.

    :meth:`attributions` gives them to a user with the same guarantees as a map: eval mode and the RNG restored,
    gradients enabled, the inputs untouched.
    """

    @abstractmethod
    def _attributions(self, model: nn.Module, inputs: Tensor, targets: Target, run: Run) -> Tensor:
        """The attributions of ``inputs`` (float32), as :meth:`compute` computes them before reducing them."""

    def attributions(self, model: nn.Module, inputs: Tensor, targets: TargetLike, run: Run | None = None) -> Tensor:
        """The attributions ``[B, C, ...]`` (float32; ``[B, 1, ...]`` where they are a map), as in :meth:`compute`."""
        run = run or Run()
        target = as_target(targets, inputs.shape[0], inputs.device)
        with preserved_rng([inputs.device]), eval_mode(model), gradients_enabled():
            return self._attributions(model, inputs.detach().clone(), target[:], run)


@dataclass
class GradientPass:
    """One forward and one ``autograd.grad`` call, shared by every :class:`GradientMethod` of an engine call.

    Attributes:
        inputs: ``[B, C, H, W]`` the inputs the gradients are taken at.
        logits: The model output as targets read it (``[B, N]`` logits, ``[B]``, ``[B, N, H, W]``...), float32,
            detached.
        input_grads: ``[B, C, H, W]`` float32 d(target score)/d(input), or ``None`` if no method asked.
        activations: layer -> ``[B, K, h, w]`` float32 activations, detached.
        layer_grads: layer -> ``[B, K, h, w]`` float32 d(target score)/d(activation).
    """

    inputs: Tensor
    logits: Tensor
    input_grads: Tensor | None
    activations: dict[nn.Module, Tensor]
    layer_grads: dict[nn.Module, Tensor]


def run_gradient_pass(
    model: nn.Module,
    inputs: Tensor,
    targets: TargetLike,
    layers: Sequence[nn.Module],
    run: Run,
    *,
    input_grads: bool,
    gradients: bool = True,
) -> GradientPass:
    """Forward once with hooks on ``layers``, then one ``autograd.grad`` of the target logits w.r.t. all of them.

    The score differentiated is each image's :meth:`~lightning_saliency.targets.Target.score` (for a class: the
    pre-softmax logit, Simonyan et al. 2014), summed over the batch: in eval mode images do not interact, so each
    image's gradient is its own. With ``gradients=False``
    (only gradient-free methods such as EigenCAM asked) the forward runs without autograd and ``layer_grads`` is
    empty.
    """
    targets = as_target(targets, inputs.shape[0])
    if not gradients:
        with capture_outputs(layers) as captured, torch.no_grad():
            logits = run.output(model, inputs)
        targets.check(logits)
        missing = [type(layer).__name__ for layer, act in zip(layers, captured, strict=True) if act is None]
        if missing:
            raise RuntimeError(f"Target layer {missing[0]} did not run in the forward; choose a layer the model uses.")
        return GradientPass(
            inputs=inputs,
            logits=logits.float(),
            input_grads=None,
            activations={layer: a.detach().float() for layer, a in zip(layers, captured, strict=True) if a is not None},
            layer_grads={},
        )
    whole_graph = input_grads or len(layers) != 1  # else autograd need only record from the one layer on
    x = inputs.detach().clone().requires_grad_(whole_graph)
    with capture_outputs(layers) if whole_graph else graph_from(layers[0]) as captured:
        logits = run.output(model, x)
    targets.check(logits)
    _warn_non_finite(logits)
    if not logits.requires_grad:
        raise RuntimeError(
            f"The logits do not depend on target layer {type(layers[0]).__name__} with gradients; choose a layer on "
            "the path from the input to the logits."
        )
    score = targets.score(logits).sum()
    acts: list[Tensor] = []
    for layer, act in zip(layers, captured, strict=True):
        if act is None or not act.requires_grad:
            raise RuntimeError(
                f"Target layer {type(layer).__name__} did not run in the forward with gradients"
                f"{'' if act is None else ' (its output does not require grad)'}; choose a layer on the path from "
                "the input to the logits."
            )
        acts.append(act)
    wrt = ([x] if input_grads else []) + acts
    grads = torch.autograd.grad(score, wrt, allow_unused=True)
    _check_connected(model, grads, ["input"] * input_grads + list(layers))
    layer_grads = grads[1:] if input_grads else grads
    return GradientPass(
        inputs=inputs,
        logits=logits.detach().float(),
        input_grads=grads[0].float() if input_grads else None,
        activations={layer: a.detach().float() for layer, a in zip(layers, acts, strict=True)},
        layer_grads={layer: g.float() for layer, g in zip(layers, layer_grads, strict=True)},
    )


@contextlib.contextmanager
def graph_from(layer: nn.Module) -> Iterator[list[Tensor | None]]:
    """Run the forward inside without autograd until ``layer``; from its output on, autograd records.

    The layer's output is recorded as a detached leaf that requires grad (the yielded list holds it) and a clone
    of it goes downstream with gradients switched on, so ``torch.autograd.grad(score, leaf)`` is the gradient
    w.r.t. the layer's output, while no graph (nor its saved activations) is kept for the layers before it:
    what differs from a full forward is memory and time, not the gradient. Grad mode is restored on exit; the hook
    never stays, also on error.

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 2), nn.Tanh(), nn.Linear(2, 1))
        >>> with graph_from(net[1]) as leaf:
        ...     out = net(torch.ones(1, 2))
        >>> leaf[0].is_leaf, leaf[0].requires_grad, out.requires_grad, torch.is_grad_enabled()
        (True, True, True, True)
    """
    captured: list[Tensor | None] = [None]

    def hook(module: nn.Module, _args: Any, output: Any) -> Any:
        leaf = checked_output(module, output, captured[0]).detach().requires_grad_(True)
        captured[0] = leaf
        torch.set_grad_enabled(True)  # for the rest of this forward; the no_grad below restores the caller's mode
        return leaf.clone()

    handle = layer.register_forward_hook(hook)
    try:
        with torch.no_grad():
            yield captured
    finally:
        handle.remove()


def _check_connected(model: nn.Module, grads: Sequence[Tensor | None], wrt: Sequence[str | nn.Module]) -> None:
    """A gradient that ``autograd.grad(..., allow_unused=True)`` returns as ``None`` is an error, never zeros.

    ``None`` means the logits do not depend, through autograd, on that tensor: zeros would be a silent wrong map.
    """
    missing = [what for what, g in zip(wrt, grads, strict=True) if g is None]
    if not missing:
        return
    names = {id(module): name for name, module in model.named_modules()}
    described = [
        "the input" if isinstance(w, str) else f"target layer {names.get(id(w), '?')!r} ({type(w).__name__})"
        for w in missing
    ]
    raise RuntimeError(
        f"The target logits of {type(model).__name__} do not depend through autograd on {', '.join(described)}: "
        "its gradient is undefined (autograd returned None), so its map would be wrong. The layer's output was "
        "recorded but the logits were computed from something else (a detached or replaced output, a layer "
        "outside the path from the input to the logits, or a graph compiled by a tool that bypasses hooks). "
        "Choose a layer on that path."
    )


def _warn_non_finite(output: Tensor) -> None:
    """Warn naming the images whose output (``[B]``, ``[B, N]``, ``[B, N, H, W]``, ...) has a NaN or Inf."""
    finite = torch.isfinite(output.detach()).reshape(output.shape[0], -1).all(1)  # [B]
    if not bool(finite.all()):
        rows = (~finite).nonzero().flatten().tolist()
        warnings.warn(
            f"The model's output is non-finite (NaN/Inf) for images {rows}; their saliency maps are set to 0.",
            SaliencyWarning,
            stacklevel=3,
        )


_EPS32 = torch.finfo(torch.float32).eps

_AUTO_LAYERS: weakref.WeakKeyDictionary[nn.Module, dict[tuple[int, ...], tuple[str, nn.Module]]] = (
    weakref.WeakKeyDictionary()
)
"""What ``"auto"`` resolved to, per model and input shape, shared by every method (one dry forward, not one each)."""


class _LayerCache:
    """Remembers which module a layer spec resolved to, per model and input shape (``"auto"`` costs a forward)."""

    def __init__(self, spec: LayerSpec) -> None:
        self.spec = spec
        self._cache: weakref.WeakKeyDictionary[nn.Module, tuple[tuple[int, ...], str, nn.Module]] = (
            weakref.WeakKeyDictionary()
        )

    def get(self, model: nn.Module, inputs: Tensor, run: Run) -> tuple[str, nn.Module]:
        shape = tuple(inputs.shape[1:])
        hit = self._cache.get(model)
        if hit is not None and hit[0] == shape:
            return hit[1], hit[2]
        shared = _AUTO_LAYERS.setdefault(model, {}) if self.spec == "auto" else {}
        if shape in shared:
            name, module = shared[shape]
        else:
            name, module = resolve_target_layer(model, self.spec, inputs, run.precision)
            shared[shape] = (name, module)
        self._cache[model] = (shape, name, module)
        return name, module


class LayerMethod(SaliencyMethod):
    """A method that reads the activations of a target layer (every CAM method, Score-CAM, CAMERAS).

    Args:
        target_layer: ``"auto"`` (the last feature map before global pooling), a dotted module name, or the module.
        reshape: How the layer's output and its gradient become ``[B, K, h, w]``: ``"auto"`` (ViT tokens
            ``[B, 1 + h*w, D]`` and channels-last Swin ``[B, h, w, C]`` are recognised from the input size, see
            :mod:`lightning_saliency._reshape`; conv feature maps are left as they are), ``None``, or a callable.
        name: Label in logs.
    """

    uses_layer = True

    def __init__(self, *, target_layer: LayerSpec = "auto", reshape: Reshape = "auto", name: str | None = None) -> None:
        super().__init__(name=name)
        if not isinstance(target_layer, (str, nn.Module)):
            raise TypeError(f"target_layer must be 'auto', a dotted module name or an nn.Module, got {target_layer!r}.")
        self.target_layer = target_layer
        self.reshape = check_reshape(reshape)
        self._layers = _LayerCache(target_layer)

    def layer(self, model: nn.Module, inputs: Tensor, run: Run) -> nn.Module:
        """The module whose activation this method reads."""
        return self._layers.get(model, inputs, run)[1]

    def layer_name(self, model: nn.Module, inputs: Tensor, run: Run | None = None) -> str | None:
        """The dotted name of :meth:`layer` (handy to check what ``"auto"`` chose)."""
        return self._layers.get(model, inputs, run or Run())[0]

    def reshaped(self, tensor: Tensor, layer: nn.Module, size: tuple[int, int]) -> Tensor:
        """A layer's activation (or its gradient) through ``reshape``, for inputs of ``size`` (not checked)."""
        return apply_reshape(self.reshape, tensor, size, token_prefix(layer))

    def feature_map(self, tensor: Tensor, layer: nn.Module, size: tuple[int, int]) -> Tensor:
        """A layer's activation (or its gradient) as ``[B, K, h, w]`` through ``reshape``, for inputs of ``size``."""
        out = self.reshaped(tensor, layer, size)
        _check_feature_map(out, layer)
        return out


class GradientMethod(SaliencyMethod):
    """A method computed from the shared :class:`GradientPass`: ONE forward and ONE ``autograd.grad`` for all.

    The engine gives every such method of a :func:`compute_saliency` call the same pass; subclasses say what they
    read (``uses_input_grad``, :meth:`layers`, :attr:`uses_gradients`) and implement :meth:`from_pass` only.
    """

    uses_input_grad: ClassVar[bool] = False
    """Whether :meth:`from_pass` reads the gradient with respect to the input."""

    @property
    def uses_gradients(self) -> bool:
        """``False`` for methods that read activations only (EigenCAM): a pass of such methods alone skips autograd."""
        return True

    def layers(self, model: nn.Module, inputs: Tensor, run: Run) -> list[nn.Module]:
        """The modules whose activations (and gradients) :meth:`from_pass` reads; none by default."""
        return []

    @abstractmethod
    def from_pass(self, p: GradientPass, layers: Sequence[nn.Module]) -> Tensor:
        """Raw map ``[B, 1, h, w]`` from the shared pass; ``layers`` are this method's :meth:`layers`."""

    def compute(self, model: nn.Module, inputs: Tensor, targets: Target, run: Run) -> Tensor:
        """Run a pass for this method alone (the engine shares one pass between several)."""
        layers = self.layers(model, inputs, run)
        p = run_gradient_pass(
            model, inputs, targets, layers, run, input_grads=self.uses_input_grad, gradients=self.uses_gradients
        )
        return self.from_pass(p, layers)


class ActivationMethod(GradientMethod, LayerMethod):
    """A map read from a target layer's activations (and their gradients) in the shared pass.

    Subclasses implement :meth:`from_pass`, reading :meth:`feature_maps` (EigenCAM, multi-layer fusion); CAMs that
    are a weighted sum of channels subclass :class:`CAMMethod` and write only their weights.

    Args:
        target_layer: ``"auto"``, a dotted module name, or the module.
        reshape: How the layer's output and its gradient become ``[B, K, h, w]`` (see :class:`LayerMethod`).
        name: Label in logs.
    """

    def layers(self, model: nn.Module, inputs: Tensor, run: Run) -> list[nn.Module]:
        """The target layer."""
        return [self.layer(model, inputs, run)]

    def feature_maps(self, p: GradientPass, layer: nn.Module) -> tuple[Tensor, Tensor | None]:
        """Activations and gradients of ``layer`` as float32 ``[B, K, h, w]`` (gradients ``None`` if not taken)."""
        size = (p.inputs.shape[-2], p.inputs.shape[-1])  # what a token layer's grid is inferred from
        acts = self.feature_map(p.activations[layer], layer, size)
        grads = p.layer_grads.get(layer)
        return acts, None if grads is None else self.reshaped(grads, layer, size)


class CAMMethod(ActivationMethod):
    """Class activation maps: ``ReLU(sum_k w_k A_k)`` on a target layer; subclasses write only the weights ``w``.

    The weights are per channel ``[B, K]`` (Grad-CAM, Grad-CAM++, XGrad-CAM) or per channel and location
    ``[B, K, h, w]`` (HiResCAM, LayerCAM): the sum over channels broadcasts either.

    Args:
        target_layer: ``"auto"``, a dotted module name, or the module.
        reshape: How the layer's output and its gradient become ``[B, K, h, w]`` (see :class:`LayerMethod`).
        name: Label in logs.
    """

    @abstractmethod
    def channel_weights(self, activations: Tensor, grads: Tensor) -> Tensor:
        """Weights ``[B, K]`` or ``[B, K, h, w]`` from activations and gradients ``[B, K, h, w]`` (float32)."""

    def from_pass(self, p: GradientPass, layers: Sequence[nn.Module]) -> Tensor:
        """``ReLU(sum_k w_k A_k)``, ``[B, 1, h, w]``."""
        acts, grads = self.feature_maps(p, layers[0])
        assert grads is not None  # a CAM uses gradients: the pass took them
        weights = self.channel_weights(acts, grads)  # [B,K] or [B,K,h,w] ([B,K,d,h,w] for volumes)
        return F.relu((per_sample(weights, acts) * acts).sum(1, keepdim=True))  # [B,1,h,w]


def _check_feature_map(acts: Tensor, layer: nn.Module) -> None:
    if acts.ndim not in (4, 5):
        raise ValueError(
            f"Target layer {type(layer).__name__} outputs shape {tuple(acts.shape)}; CAM methods need a 4-D feature "
            "map [B, K, h, w] (5-D [B, K, d, h, w] for volumes). Pick a convolutional layer (the error of "
            "target_layer='auto' lists candidates)."
        )


def normalize_maps(raw: Tensor, size: tuple[int, ...]) -> Tensor:
    """Float32, NaN-free, resized to ``size`` (bilinear; trilinear for volumes) and min-max normalised to [0, 1].

    A constant map (no evidence; or constant up to float32 rounding: a span within 16 ulps of its magnitude) becomes
    all zeros rather than NaN.

    Example:
        >>> normalize_maps(torch.tensor([[[[1.0, 3.0]]]]), (1, 4))
        tensor([[[[0.0000, 0.2500, 0.7500, 1.0000]]]])
    """
    maps = torch.nan_to_num(raw.detach().float(), nan=0.0, posinf=0.0, neginf=0.0)
    if tuple(maps.shape[2:]) != tuple(size):
        maps = F.interpolate(maps, size=size, mode=interpolation(len(size)), align_corners=False)  # [B,1,H,W]
    flat = maps.flatten(1)
    lo, hi = per_sample(flat.min(1).values, maps), per_sample(flat.max(1).values, maps)  # [B,1,1,1]
    span = hi - lo
    # Constant up to rounding: a span within 16 float32 ulps of the map's magnitude (relative, so that maps of tiny
    # raw values, as VarGrad's, keep their structure), or no span at all.
    flat_map = span <= torch.maximum(16 * _EPS32 * torch.maximum(lo.abs(), hi.abs()), torch.full_like(span, 1e-30))
    return torch.where(flat_map, torch.zeros_like(maps), (maps - lo) / torch.where(flat_map, 1.0, span))


def compute_saliency(
    model: nn.Module,
    inputs: Tensor,
    targets: TargetLike,
    methods: Sequence[SaliencyMethod],
    *,
    precision: Precision | None = None,
    output_adapter: OutputAdapter | None = None,
) -> list[Tensor]:
    """Run several methods on one batch, sharing one gradient pass between all :class:`GradientMethod` s.

    Args:
        model: The classifier; left exactly as found (modes, parameters, ``.grad``, buffers, RNG).
        inputs: ``[B, C, H, W]`` float.
        targets: What to explain: a :class:`~lightning_saliency.targets.Target`, or ``[B]`` class indices on the
            inputs' device.
        methods: Method instances.
        precision: Forward context and input cast (default plain fp32).
        output_adapter: Turns the model output into logits, if it is not a tensor/tuple/dict/``.logits``.

    Returns:
        One ``[B, 1, H, W]`` float32 map per method, in [0, 1], detached.

    Example:
        >>> from lightning_saliency.methods import GradCAM, Gradient
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        >>> maps = compute_saliency(net, torch.rand(2, 3, 8, 8), torch.tensor([0, 3]), [Gradient(), GradCAM()])
        >>> [tuple(m.shape) for m in maps]
        [(2, 1, 8, 8), (2, 1, 8, 8)]
    """
    check_inputs(inputs)
    target = as_target(targets, inputs.shape[0], inputs.device)
    run = Run(precision or FP32, output_adapter)
    size = tuple(inputs.shape[2:])  # (H, W), or (D, H, W) for volumes
    raw: list[Tensor | None] = [None] * len(methods)
    with preserved_rng([inputs.device]), eval_mode(model), gradients_enabled():
        inputs = inputs.detach().clone()  # a normal tensor, even if handed an inference-mode tensor
        target = resolved(target, model, inputs, run)[:]  # likewise (a copy made outside inference mode)
        shared = [(i, m) for i, m in enumerate(methods) if isinstance(m, GradientMethod)]
        if shared:
            method_layers = [m.layers(model, inputs, run) for _, m in shared]
            layers = list({id(layer): layer for read in method_layers for layer in read}.values())
            need_input = any(m.uses_input_grad for _, m in shared)
            need_grads = any(m.uses_gradients for _, m in shared)
            p = run_gradient_pass(model, inputs, target, layers, run, input_grads=need_input, gradients=need_grads)
            for (i, m), read in zip(shared, method_layers, strict=True):
                raw[i] = m.from_pass(p, read)
            del p
        for i, method in enumerate(methods):
            if raw[i] is None:
                raw[i] = method.compute(model, inputs, target, run)
        for method, r in zip(methods, raw, strict=True):
            ones = (1,) * len(size)
            if r is not None and tuple(r.shape[2:]) == ones and size != ones:
                sides = "x".join(map(str, size))
                method._warn_once(
                    "flat",
                    f"{method.label}: the target layer's feature map is {'x'.join('1' * len(size))} for inputs of "
                    f"{sides}, so the map is flat. Use larger inputs or an earlier target_layer.",
                )
        # Still outside inference mode: the maps are normal tensors even when the caller is in inference mode.
        return [normalize_maps(r, size) for r in raw if r is not None]
