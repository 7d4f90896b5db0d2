"""Finding the target layer of a CAM method, and capturing its activations with hooks that never stay.

``"auto"`` runs one dry forward (eval mode, no gradients) on a single probe image and picks the module that
finishes last before the model's last adaptive (global) pooling module or, without one, the last module whose
output is a feature map ``[B, K, h, w]`` (``[B, K, d, h, w]`` for volumes) larger than 1x1. On torchvision
classifiers that is the end of the convolutional trunk: ``layer4`` on ResNets, ``features`` on VGG, MobileNet,
EfficientNet, DenseNet and ConvNeXt; ``permute`` (the channels-first view of the last stage) on torchvision's Swin.
On timm's: ``layer4`` (ResNet), ``stages`` (ConvNeXt; its ``norm_pre`` is an ``nn.Identity``, never the pick),
``bn2`` (EfficientNet: ``conv_head`` -> BatchNorm -> SiLU) and ``norm`` (Swin: the channels-last ``[B, h, w, C]``
that its head pools). Submodules of attention modules (timm's per-head ``q_norm`` and ``k_norm``, a window
attention's ``softmax``: 4-D but no feature maps) are never considered.
A vision transformer without global pooling (torchvision/timm ViT: its last 4-D output is the patch embedding) gets
the LayerNorm that feeds the last self-attention (``encoder.layers.encoder_layer_{L-1}.ln_1``, timm's
``blocks[-1].norm1``): after the last block only the class token reaches the logits, so the patch tokens of later
layers have zero gradient (pytorch-grad-cam's recommendation).
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any
from weakref import WeakKeyDictionary

import torch
from torch import Tensor, nn

from lightning_saliency._reshape import grid_size
from lightning_saliency._runtime import FP32, Precision, eager, eval_mode, preserved_rng, to_output

__all__ = [
    "LayerSpec",
    "capture_outputs",
    "find_target_layer",
    "resolve_target_layer",
    "spatial_layers",
    "token_prefix",
]

LayerSpec = str | nn.Module
"""``"auto"``, a dotted module name such as ``"layer4"`` or ``"features.7"``, or the module itself."""

_GLOBAL_POOLS = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool3d)


def spatial_layers(model: nn.Module, inputs: Tensor, precision: Precision = FP32) -> list[tuple[str, tuple[int, ...]]]:
    """Named submodules with a 4-D output, in the order they finish during one forward of ``inputs[:1]``.

    The forward runs in eval mode without gradients; the model's modes, buffers and the RNG streams are left as found.

    Returns:
        ``[(name, output_shape), ...]``. Modules that run more than once in the forward (one activation module
        shared by several stages, as in EfficientNet-Lite's ``_swish``, or a ResNet block's ``relu``) are left
        out: their activation is ambiguous. So are the submodules of attention modules (timm's ``q_norm``, a
        window attention's ``softmax``): their 4-D outputs are per-head ``[B, heads, T, d]``, not feature maps.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        >>> spatial_layers(net, torch.zeros(1, 3, 8, 8))
        [('0', (1, 4, 6, 6)), ('1', (1, 4, 6, 6)), ('2', (1, 4, 1, 1))]
    """
    return _dry_forward(model, inputs, precision).spatial


@dataclass
class _Trace:
    """What one dry forward saw, in finishing order."""

    spatial: list[tuple[str, tuple[int, ...]]]
    """Modules that ran once with a 4-D output, and its shape."""
    finished: list[tuple[str, tuple[int, ...] | None]]
    """Every module that ran once, with its output shape (``None`` if not a Tensor)."""
    repeated: list[tuple[str, int]]
    """Modules with a 4-D output that ran more than once, and how often: never candidates."""
    output: tuple[int, ...] | None = None
    """The model's output shape (read as targets read it), ``None`` if it could not be read."""
    identities: frozenset[str] = frozenset()
    """``nn.Identity`` modules (timm ConvNeXt's ``norm_pre``): their output is their input, never ``"auto"``'s pick."""
    size: tuple[int, ...] = ()
    """The input's spatial size."""


def _dry_forward(model: nn.Module, inputs: Tensor, precision: Precision) -> _Trace:
    order: dict[str, tuple[int, ...]] = {}
    runs: dict[str, int] = {}
    finished: dict[str, tuple[int, ...] | None] = {}
    identities: set[str] = set()

    def record(name: str) -> Any:
        def hook(module: nn.Module, _args: Any, output: Any) -> None:
            runs[name] = runs.get(name, 0) + 1
            if isinstance(output, Tensor) and output.ndim == inputs.ndim:  # [B,K,h,w], or [B,K,d,h,w] for volumes
                order.pop(name, None)
                order[name] = tuple(output.shape)
            finished[name] = tuple(output.shape) if isinstance(output, Tensor) else None
            if isinstance(module, nn.Identity):
                identities.add(name)

        return hook

    named = [(name, module) for name, module in model.named_modules() if name and not _inside_attention(model, name)]
    handles = [module.register_forward_hook(record(name)) for name, module in named]
    try:
        # Eval mode: a train-mode dry forward would update BatchNorm statistics (and fail on a 1x1 map with B=1).
        with preserved_rng([inputs.device]), eval_mode(model), torch.no_grad(), eager(), precision.forward_context():
            raw = model(precision.convert_input(inputs[:1]))
    finally:
        for handle in handles:
            handle.remove()
    try:
        output: tuple[int, ...] | None = tuple(to_output(raw, 1).shape)
    except (TypeError, ValueError):  # an output only an adapter can read: the classifier rules apply
        output = None
    return _Trace(
        spatial=[(name, shape) for name, shape in order.items() if runs[name] == 1],
        finished=[(name, shape) for name, shape in finished.items() if runs[name] == 1],
        repeated=[(name, runs[name]) for name in order if runs[name] > 1],
        output=output,
        identities=frozenset(identities),
        size=tuple(inputs.shape[2:]),
    )


def _inside_attention(model: nn.Module, name: str) -> bool:
    """Whether ``name`` is a submodule of an attention module (its outputs are per-head, not feature maps)."""
    parts = name.split(".")
    for i in range(1, len(parts)):
        parent = model.get_submodule(".".join(parts[:i]))
        if _is_attention(parent) or "attention" in type(parent).__name__.lower():  # timm's AttentionPoolLatent too
            return True
    return False


def _candidates(trace: _Trace) -> str:
    """The modules a CAM could read, with their output shapes, for error messages.

    Feature maps larger than 1x1, and the token ``[B, T, D]`` and channels-last outputs that ``reshape="auto"``
    reads as a grid; without any, the last modules to finish with their output shapes.
    """
    if len(trace.size) == 2:  # images: what reshape="auto" reads as a grid of more than one location
        size = (trace.size[0], trace.size[1])
        grids = [(n, s, grid_size(s, size)) for n, s in trace.finished if s is not None]
        readable = [(n, s) for n, s, g in grids if g is not None and g[0] * g[1] > 1]
    else:  # volumes: feature maps
        readable = [(n, s) for n, s in trace.spatial if _area(s) > 1]
    if readable:
        shown = ", ".join(f"{n!r} {s}" for n, s in readable[-12:])
        return f" Modules whose output reads as a feature map (name, output shape), first to last: {shown}."
    last = ", ".join(f"{n!r} {s}" for n, s in trace.finished[-6:] if s is not None)
    return f" No module's output reads as a feature map; the last to finish: {last or 'none'}."


def _excluded(trace: _Trace) -> str:
    """Why modules with a 4-D output are not candidates (ran more than once), for error messages."""
    if not trace.repeated:
        return ""
    shown = ", ".join(f"{name!r} ({count} times)" for name, count in trace.repeated[-8:])
    return (
        f" Left out because they run more than once per forward (their activation is ambiguous): {shown}. A "
        "module shared by several stages (one activation module called after every block, or a block applied "
        "repeatedly) cannot be a target layer: name a module that runs once, e.g. target_layer='<dotted name>' "
        "of a convolution or a block's output, or give each call its own module instance."
    )


def find_target_layer(model: nn.Module, inputs: Tensor, precision: Precision = FP32) -> str:
    """The name of the layer ``"auto"`` picks: the end of the convolutional trunk.

    That is the last module to finish before the model's last adaptive (global) pooling module; without one, the last
    module with a 4-D output larger than 1x1 (or the last 4-D output if all are 1x1). On inputs so small that the trunk
    ends at 1x1 the map carries no spatial information: use larger inputs or name an earlier layer.

    A model with a per-pixel output ``[B, N, H, W]`` (segmentation) has no classifier pooling: its trunk ends at the
    backbone's last feature map, as pytorch-grad-cam's segmentation tutorial takes it (``backbone.layer4`` of
    torchvision's FCN and DeepLabV3): the last module of a ``backbone`` submodule with a 4-D output if the model has
    one, else the last module at the coarsest resolution that is not the ``N``-channel logits (an encoder-decoder's
    bottleneck).

    Raises:
        ValueError: If the model has no module with a 4-D output (CAM methods need one).

    Example:
        >>> from torchvision.models import resnet18
        >>> find_target_layer(resnet18(), torch.zeros(1, 3, 64, 64))
        'layer4'
    """
    found = _dry_forward(model, inputs, precision)
    # An Identity (timm ConvNeXt's `norm_pre`) is named after the module that produced its input. (Not any module
    # returning its input: an in-place ReLU does, after changing it.)
    trace = dataclasses.replace(found, spatial=[(n, s) for n, s in found.spatial if n not in found.identities])
    layers, finished = trace.spatial, trace.finished
    dense = _dense_trunk(model, trace)
    if dense is not None:
        return dense
    pools = [i for i, (n, _) in enumerate(layers) if _is_global_pool(model, n)]
    token_layer = None if pools else _token_layer(model, layers, finished)
    if token_layer is not None:
        return token_layer
    candidates = [(n, s) for n, s in layers if not _is_global_pool(model, n)]
    if pools:
        # The classifier's global pooling is the last one to finish (squeeze-excitation pools finish earlier); what
        # finished just before it is the end of the trunk, whatever its size. Shape-based guessing can pick a
        # channels-last [B, h, w, C] tensor (ConvNeXt blocks) or a LayerNorm after the pooling on small inputs.
        before = [(n, s) for n, s in layers[: pools[-1]] if not _is_global_pool(model, n)]
        if before:
            return before[-1][0]
    if not candidates:
        raise ValueError(
            f"target_layer='auto' found no module of {type(model).__name__} with a 4-D [B, K, h, w] output for an "
            f"input of shape {tuple(inputs.shape[1:])} that runs once per forward. CAM methods (gradcam, gradcam++, "
            "...) need a spatial feature map; name a layer (with reshape='auto' for token or channels-last outputs), "
            "or use the 'gradient' family of methods for this model." + _candidates(trace) + _excluded(trace)
        )
    larger = [(n, s) for n, s in candidates if _area(s) > 1]
    return (larger or candidates)[-1][0]


def resolve_target_layer(
    model: nn.Module, layer: LayerSpec, inputs: Tensor, precision: Precision = FP32
) -> tuple[str, nn.Module]:
    """Turn ``"auto"``, a dotted name or a module into ``(name, module)``.

    Raises:
        ValueError: If a name does not exist in ``model`` (the message lists the spatial candidates), or a
            given module is not part of ``model``.
        TypeError: If ``layer`` is neither a string nor a module.
    """
    if isinstance(layer, nn.Module):
        for name, module in model.named_modules():
            if module is layer:
                return _noted(model, name, module)
        raise ValueError(
            f"target_layer={type(layer).__name__} module is not a submodule of {type(model).__name__}. Pass a "
            "module taken from the model being trained (e.g. `model.layer4`) or its dotted name."
        )
    if not isinstance(layer, str):
        raise TypeError(f"target_layer must be 'auto', a dotted module name or an nn.Module, got {layer!r}.")
    if layer == "auto":
        name = find_target_layer(model, inputs, precision)
        return _noted(model, name, model.get_submodule(name))
    modules = dict(model.named_modules())
    if layer in modules and layer:
        return _noted(model, layer, modules[layer])
    trace = _dry_forward(model, inputs, precision)
    close = difflib.get_close_matches(layer, list(modules), n=5)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise ValueError(
        f"target_layer={layer!r} is not a module of {type(model).__name__}.{hint}{_candidates(trace)}{_excluded(trace)}"
    )


_PREFIX_TOKENS: WeakKeyDictionary[nn.Module, int] = WeakKeyDictionary()
"""Resolved target layer -> the prefix-token count its model declares (filled by :func:`resolve_target_layer`)."""


def _noted(model: nn.Module, name: str, module: nn.Module) -> tuple[str, nn.Module]:
    """``(name, module)``, remembering the ``num_prefix_tokens`` of the innermost module holding it that has one."""
    parts = name.split(".") if name else []
    for i in range(len(parts), -1, -1):  # the layer itself, its parents, ..., the model
        count = getattr(model.get_submodule(".".join(parts[:i])), "num_prefix_tokens", None)
        if isinstance(count, int) and not isinstance(count, bool):
            _PREFIX_TOKENS[module] = count
            break
    return name, module


def token_prefix(layer: nn.Module) -> int | None:
    """How many prefix tokens precede the patch tokens in ``layer``'s output, as its model declares it.

    timm's vision transformers declare ``num_prefix_tokens`` (class, distillation and register tokens); that count
    is used by ``reshape="auto"`` before inferring one from the token count. ``None`` for a layer whose model
    declares none, or one :func:`resolve_target_layer` has not resolved.

    Example:
        >>> class Tokens(nn.Module):
        ...     num_prefix_tokens = 5  # a class token and 4 registers
        ...     def __init__(self) -> None:
        ...         super().__init__()
        ...         self.norm = nn.LayerNorm(8)
        >>> model = Tokens()
        >>> _ = resolve_target_layer(model, "norm", torch.zeros(1, 3, 8, 8))
        >>> token_prefix(model.norm)
        5
    """
    return _PREFIX_TOKENS.get(layer)


def _dense_trunk(model: nn.Module, trace: _Trace) -> str | None:
    """The end of a segmentation model's trunk (see :func:`find_target_layer`); ``None`` for other outputs."""
    out, layers = trace.output, trace.spatial
    if out is None or len(out) != len(layers[0][1] if layers else ()) or not layers:
        return None
    backbone = getattr(model, "backbone", None)
    if isinstance(backbone, nn.Module):
        inside = [n for n, _ in layers if n.startswith("backbone.")]
        if inside:
            return inside[-1]
    features = [(n, s) for n, s in layers if s[1] != out[1]] or layers  # not the logits at a coarse resolution
    coarsest = min(_area(s) for _, s in features)
    return [n for n, s in features if _area(s) == coarsest][-1]


def _is_attention(module: nn.Module) -> bool:
    kind = type(module).__name__.lower()
    return isinstance(module, nn.MultiheadAttention) or kind.endswith(("attention", "attn"))


def _token_layer(
    model: nn.Module, layers: list[tuple[str, tuple[int, ...]]], finished: list[tuple[str, tuple[int, ...] | None]]
) -> str | None:
    """ViT rule: the last LayerNorm with a token output ``[B, T, D]`` that finishes before the last attention module.

    Only applies when an attention module finishes after the last 4-D output (the patch embedding); else ``None``.
    """
    names = [n for n, _ in finished]
    start = names.index(layers[-1][0]) + 1 if layers and layers[-1][0] in names else 0
    after = finished[start:]
    attention = [i for i, (n, _) in enumerate(after) if _is_attention(model.get_submodule(n))]
    if not attention:
        return None
    norms = [
        n
        for n, s in after[: attention[-1]]
        if s is not None and len(s) == 3 and isinstance(model.get_submodule(n), nn.LayerNorm)
    ]
    return norms[-1] if norms else None


def _area(shape: tuple[int, ...]) -> int:
    """The number of locations of a feature map's shape ``(B, K, *spatial)``."""
    return math.prod(shape[2:])


def _is_global_pool(model: nn.Module, name: str) -> bool:
    return isinstance(model.get_submodule(name), _GLOBAL_POOLS)


def checked_output(module: nn.Module, output: Any, earlier: Tensor | None) -> Tensor:
    """``output`` of a hooked target layer, checked: a Tensor, and the first one of this forward (``earlier`` None).

    Raises:
        TypeError: If the layer returned something else than a Tensor.
        RuntimeError: If the layer already ran in this forward (its activation would be ambiguous).
    """
    if not isinstance(output, Tensor):
        raise TypeError(
            f"Target layer {type(module).__name__} returned {type(output).__name__}; CAM methods need a layer whose "
            "output is a Tensor [B, K, h, w]."
        )
    if earlier is not None:
        raise RuntimeError(
            f"Target layer {type(module).__name__} ran more than once in one forward, so its activation is "
            "ambiguous. Choose a layer that runs once per forward."
        )
    return output


@contextlib.contextmanager
def capture_outputs(modules: Sequence[nn.Module]) -> Iterator[list[Tensor | None]]:
    """Record each module's output during the forwards run inside; hooks are removed on exit, also on error.

    The hook hands a clone downstream, so an in-place op after the layer (``ReLU(inplace=True)``) cannot change
    the recorded activation nor its gradient. Yields a list aligned with ``modules``, filled as they run.

    Raises:
        RuntimeError: If a module runs more than once in one forward (its activation would be ambiguous).

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 2), nn.ReLU(inplace=True))
        >>> with capture_outputs([net[0]]) as outs:
        ...     _ = net(torch.ones(1, 2))
        >>> outs[0].shape, len(net[0]._forward_hooks)
        (torch.Size([1, 2]), 0)
    """
    outputs: list[Tensor | None] = [None] * len(modules)

    def make_hook(index: int) -> Any:
        def hook(module: nn.Module, _args: Any, output: Any) -> Any:
            outputs[index] = checked_output(module, output, outputs[index])
            return output.clone()

        return hook

    handles = [module.register_forward_hook(make_hook(i)) for i, module in enumerate(modules)]
    try:
        yield outputs
    finally:
        for handle in handles:
            handle.remove()
