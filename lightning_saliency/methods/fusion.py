"""Multi-layer fusion of any CAM method, on ONE shared gradient pass for all its layers."""

from __future__ import annotations

import weakref
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_saliency._reshape import Reshape, grid_size
from lightning_saliency._runtime import Run
from lightning_saliency._shapes import interpolation
from lightning_saliency.layers import LayerSpec, find_target_layer, resolve_target_layer, spatial_layers
from lightning_saliency.methods.base import ActivationMethod, GradientPass, normalize_maps
from lightning_saliency.methods.registry import METHODS, register_method

__all__ = ["FusedCAM"]

_FUSE = ("mean", "max")


# Modules whose output is not a stage's feature map: padding in front of a strided conv (EfficientNet's
# `static_padding`) finishes last at the finer grid, but only pads the previous stage's output.
_NOT_A_STAGE = (
    nn.modules.padding._ConstantPadNd,
    nn.modules.padding._ReflectionPadNd,
    nn.modules.padding._ReplicationPadNd,
    nn.Identity,
)


def _holds_stages(module: nn.Module) -> bool:
    """A plain ``nn.Sequential``/``nn.ModuleList`` whose every child has children: stages, not one block's layers.

    Exact types: torchvision DenseNet's ``_Transition`` subclasses ``nn.Sequential``; a ConvNeXt downsampling
    ``nn.Sequential(LayerNorm2d, Conv2d)`` holds layers.
    """
    children = list(module.children())
    return type(module) in (nn.Sequential, nn.ModuleList) and all(
        next(c.children(), None) is not None for c in children
    )


def auto_fusion_layers(model: nn.Module, inputs: Tensor, run: Run | None = None) -> list[str]:
    """The layers ``layers="auto"`` fuses: the previous stage and the ``"auto"`` layer (``layer3``, ``layer4``).

    The previous stage is the module that finishes last at a finer grid than the ``"auto"`` layer, skipping padding
    and identity modules (they only pass the previous output on) and modules inside a block that itself ends at the
    coarser grid (such as a block's expansion conv before its strided conv).

    Grids are read as CAM methods read them (channels-last and token outputs included). When no earlier 4-D output
    has a finer grid (a ViT, whose tokens all share one grid), only the ``"auto"`` layer is returned: name the
    layers to fuse on such models.

    Example:
        >>> from torchvision.models import resnet18
        >>> auto_fusion_layers(resnet18(), torch.zeros(1, 3, 64, 64))
        ['layer3', 'layer4']
    """
    run = run or Run()
    last = find_target_layer(model, inputs, run.precision)
    size = (inputs.shape[-2], inputs.shape[-1])
    order = spatial_layers(model, inputs, run.precision)
    shapes = dict(order)
    last_grid = grid_size(shapes[last], size) if last in shapes else None
    if last_grid is None:
        return [last]
    names = [n for n, _ in order]
    earlier = order[: names.index(last)]

    def is_finer(name: str) -> bool:
        grid = grid_size(shapes[name], size) if name in shapes else None
        return grid is not None and grid[0] * grid[1] > last_grid[0] * last_grid[1]

    def ancestors(name: str) -> list[str]:
        parts = name.split(".")
        return [".".join(parts[:i]) for i in range(1, len(parts))]

    finer = [n for n, _ in earlier if is_finer(n) and not isinstance(model.get_submodule(n), _NOT_A_STAGE)]

    # Not inside a block that itself ends at the coarser grid (its expansion conv, say): that is no stage output.
    # A plain container of stages is no block (timm's `blocks` on EfficientNet, `layers` on Swin, next to the "auto"
    # layer). (When that leaves nothing, as on Swin whose `features` container ends before the `"auto"` layer, keep
    # all.)
    def is_block(name: str) -> bool:
        return name in shapes and name not in (last, *ancestors(last)) and not _holds_stages(model.get_submodule(name))

    outside = [n for n in finer if all(is_finer(a) for a in ancestors(n) if is_block(a))]
    finer = outside or finer
    return [finer[-1], last] if finer else [last]


@register_method("fused_cam")
class FusedCAM(ActivationMethod):
    """A CAM method on several layers, fused by mean or max; all layers from ONE shared gradient pass.

    Each layer's map is min-max normalised at its own resolution, upsampled bilinearly to the input size, then the
    maps are averaged (``fuse="mean"``) or their maximum is taken.

    ``fuse="mean"`` is pytorch-grad-cam's multi-layer rule (``target_layers=[...]``: per-layer ReLU, min-max
    normalisation and resize, then the mean); LayerCAM's paper fuses shallow and deep layers the same way. All layers
    are read from ONE forward and ONE ``autograd.grad`` (shared with the other gradient methods of the batch).

    Args:
        method: The CAM to fuse: a registry name (``"gradcam"``, ``"layercam"``, ``"eigencam"``, ...) or an
            :class:`~lightning_saliency.methods.base.ActivationMethod` instance (its ``reshape`` and weights are used;
            its ``target_layer`` is ignored).
        layers: ``"auto"`` (the last two spatial stages, see :func:`auto_fusion_layers`; one layer on a ViT) or a
            sequence of layer specs (``"auto"``, dotted names, modules).
        fuse: ``"mean"`` (default) or ``"max"``.
        reshape: ``reshape`` of the method built from a name (ViT/Swin), see :class:`CAMMethod`.
        name: Label in logs (default ``"fused_cam"``).

    Example:
        >>> from torchvision.models import resnet18
        >>> cam = FusedCAM("gradcam", layers=["layer3", "layer4"], fuse="max")
        >>> cam(resnet18(num_classes=3), torch.rand(1, 3, 64, 64), torch.tensor([2])).shape
        torch.Size([1, 1, 64, 64])
    """

    def __init__(
        self,
        method: str | ActivationMethod = "gradcam",
        layers: str | Sequence[LayerSpec] = "auto",
        fuse: str = "mean",
        *,
        reshape: Reshape = "auto",
        name: str | None = None,
    ) -> None:
        super().__init__(reshape=reshape, name=name)
        if isinstance(method, str):
            cls = METHODS.get(method.lower())
            if cls is None or not issubclass(cls, ActivationMethod) or cls is FusedCAM:
                cams = sorted(n for n, c in METHODS.items() if issubclass(c, ActivationMethod) and c is not FusedCAM)
                raise ValueError(
                    f"method must name a CAM method ({', '.join(cams)}) or be a CAMMethod, got {method!r}."
                )
            method = cls(reshape=reshape)
        if not isinstance(method, ActivationMethod) or isinstance(method, FusedCAM):
            raise TypeError(f"method must be a CAM method name or a CAMMethod instance, got {method!r}.")
        if isinstance(layers, str):
            if layers != "auto":
                raise ValueError(f"layers must be 'auto' or a sequence of layer names/modules, got {layers!r}.")
        elif len(layers) == 0 or not all(isinstance(layer, (str, nn.Module)) for layer in layers):
            raise ValueError(f"layers must be 'auto' or a non-empty sequence of layer names/modules, got {layers!r}.")
        if fuse not in _FUSE:
            raise ValueError(f"fuse must be one of {_FUSE}, got {fuse!r}.")
        self.method: ActivationMethod = method
        self.layer_specs, self.fuse = layers, fuse
        self._cache: weakref.WeakKeyDictionary[nn.Module, tuple[tuple[int, ...], list[nn.Module]]] = (
            weakref.WeakKeyDictionary()
        )

    @property
    def uses_gradients(self) -> bool:
        """As the fused method (EigenCAM needs none)."""
        return self.method.uses_gradients

    def layers(self, model: nn.Module, inputs: Tensor, run: Run) -> list[nn.Module]:
        """The fused modules, in order (resolved once per model and input shape); :meth:`from_pass` reads these."""
        shape = tuple(inputs.shape[1:])
        hit = self._cache.get(model)
        if hit is None or hit[0] != shape:
            specs = auto_fusion_layers(model, inputs, run) if isinstance(self.layer_specs, str) else self.layer_specs
            modules = [resolve_target_layer(model, spec, inputs, run.precision)[1] for spec in specs]
            hit = (shape, list({id(m): m for m in modules}.values()))
            self._cache[model] = hit
        return list(hit[1])

    def layer(self, model: nn.Module, inputs: Tensor, run: Run) -> nn.Module:
        """The last fused layer."""
        return self.layers(model, inputs, run)[-1]

    def layer_names(self, model: nn.Module, inputs: Tensor, run: Run | None = None) -> list[str]:
        """Dotted names of the fused layers (handy to check what ``"auto"`` chose)."""
        names = {id(m): n for n, m in model.named_modules()}
        return [names[id(m)] for m in self.layers(model, inputs, run or Run())]

    def from_pass(self, p: GradientPass, layers: Sequence[nn.Module]) -> Tensor:
        """Fused map ``[B, 1, H, W]`` from every fused layer's activations in the pass."""
        size = tuple(p.inputs.shape[2:])
        maps = []
        for module in layers:
            raw = self.method.from_pass(p, [module])  # [B,1,h,w]
            scaled = normalize_maps(raw, tuple(raw.shape[2:]))  # min-max at the layer's resolution
            mode = interpolation(len(size))
            maps.append(F.interpolate(scaled, size=size, mode=mode, align_corners=False))  # [B,1,H,W]
        stacked = torch.stack(maps)  # [L,B,1,H,W]
        return stacked.mean(0) if self.fuse == "mean" else stacked.amax(0)
