"""Ablation-CAM (Desai & Ramaswamy, WACV 2020), batched over images and channels with a memory bound.

"Ablation-CAM: Visual Explanations for Deep Convolutional Network via Gradient-free Localization". Each channel
``A_k`` of the target layer is ablated (set to zero) and the rest of the network is run on the ablated activations;
the relative drop of the target score weighs the channel: ``w_k = (S - S_k) / S``, ``L = ReLU(sum_k w_k A_k)``. No
gradient is needed, one forward per (image, non-zero channel).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn

from lightning_saliency._checks import int_at_least
from lightning_saliency._chunking import is_out_of_memory, run_chunked
from lightning_saliency._reshape import Reshape
from lightning_saliency._runtime import Run, eager, to_output
from lightning_saliency.distributed import agreed
from lightning_saliency.layers import LayerSpec, capture_outputs
from lightning_saliency.methods.registry import register_method
from lightning_saliency.methods.smoothing import OwnPassCAM
from lightning_saliency.targets import Target

__all__ = ["AblationCAM"]


@contextlib.contextmanager
def _replaced_output(layer: nn.Module, replacement: Tensor) -> Iterator[None]:
    """Inside, ``layer`` returns ``replacement`` instead of what it computes; the hook never stays."""

    def hook(module: nn.Module, _args: Any, computed: Any) -> Tensor:
        if not isinstance(computed, Tensor):
            raise TypeError(
                f"Target layer {type(module).__name__} returned {type(computed).__name__}; Ablation-CAM needs a layer "
                "whose output is a Tensor."
            )
        return replacement

    handle = layer.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def _output_with_one_front(model: nn.Module, inputs: Tensor, run: Run) -> Tensor:
    """``run.output(model, inputs)`` for ``inputs`` of identical rows, the layers that take them run on one row.

    Every leaf module (one without submodules) that receives the (converted) input tensor itself gets its first row
    instead, so the layers before the replaced target layer compute one copy of the image; the model's own code
    still sees ``n`` rows (``x.view(x.size(0), -1)`` with the input's batch works), and a tensor from before the
    layer that meets the ``n`` ablated rows (a residual connection) broadcasts. Hooks never stay.
    """
    converted = run.precision.convert_input(inputs)

    def first_row(_module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
        return (converted[:1], *args[1:]) if args and args[0] is converted else None

    handles = [m.register_forward_pre_hook(first_row) for m in model.modules() if next(m.children(), None) is None]
    try:
        with eager(), run.precision.forward_context():
            output = model(converted)
    finally:
        for handle in handles:
            handle.remove()
    return to_output(output, inputs.shape[0], run.output_adapter)


def _channel_axis(raw: Tensor, feature_map: Tensor) -> int:
    """Where the channels of the feature map ``[B, K, h, w]`` are in the layer's own output ``raw``.

    Dim 1 when the feature map is the output itself (a conv layer); the last dim for tokens ``[B, T, D]`` and
    channels-last maps ``[B, h, w, C]`` (what ``reshape="auto"`` turns into feature maps).
    """
    if raw.shape == feature_map.shape:
        return 1
    if raw.ndim >= 3 and raw.shape[-1] == feature_map.shape[1]:
        return raw.ndim - 1
    raise ValueError(
        f"Ablation-CAM ablates channels in the target layer's output, but could not find the {feature_map.shape[1]} "
        f"channels of its feature map {tuple(feature_map.shape)} in the output {tuple(raw.shape)} (neither dim 1 nor "
        "the last dim). Choose a convolutional layer, or a token/channels-last layer with reshape='auto'."
    )


@register_method("ablationcam")
class AblationCAM(OwnPassCAM):
    """Ablation-CAM: ``w_k = (S - S_k) / S``, the relative drop of the target score when channel ``k`` is zeroed.

    ``S`` is the target's :meth:`~lightning_saliency.targets.Target.score` (a class's logit) and ``S_k`` the same with
    channel ``k`` of the target layer's output set to zero; the map is ``ReLU(sum_k w_k A_k)`` at the layer's
    resolution. As in pytorch-grad-cam's ``AblationCAM`` the layer's output is computed once and the ablated copies
    replace it in the following forwards (the layers before it still run: their result is discarded). A channel
    that is zero everywhere is not ablated (its weight is exactly 0: the forward would be the original one). On a
    ViT/Swin layer (``reshape="auto"``) a channel is the last dim of the tokens, zeroed in every token (the class
    token too), as pytorch-grad-cam's ``AblationLayerVit``.

    Equals pytorch-grad-cam's ``AblationCAM`` (``ratio_channels_to_ablate=1``) wherever the layer's smallest
    activation is 0 (ReLU outputs such as ResNet's ``layer4``): pgc ablates to 0 there too. Where activations can be
    negative pgc writes ``min - 1e7`` instead (cascading over the rows of a batch); here the paper's 0 is always used.
    ``S = 0`` (a weight would be infinite) divides by 1 instead.

    Cost: one forward of the batch, then one forward of the layers after the target layer per (image, non-zero
    channel) of the target layer (512 per image on a ResNet-18's ``layer4``, at most), ``batch_size`` per forward
    (halved on out-of-memory), without autograd. The layers before the target layer run once per forward (so
    ``ceil(K / batch_size)`` times per image), on one copy of the image (the modules that receive the input get its
    first row), and the target layer's output is
    replaced by the ``batch_size`` ablated copies (a residual connection that skips over the layer broadcasts); a
    model where that fails (an error) runs the copies through the whole network instead, as pytorch-grad-cam always
    does (ResNet-18, ``layer4``, 2 images of 64 px: 5x faster than pytorch-grad-cam). Peak memory beyond the
    model: the activations of ``batch_size`` copies after the target layer and the ablated outputs of one chunk.

    Args:
        target_layer: ``"auto"`` (the last feature map before global pooling), a dotted name, or a module.
        batch_size: Ablated copies of one image per forward. Each forward also runs the layers before the target
            layer once, so a larger chunk amortises them (the copies only go through the layers after it).
        eigen_smooth: First principal component of ``w_k A_k`` instead of their sum (pytorch-grad-cam's option).
        reshape: How the layer's output becomes ``[B, K, h, w]`` (ViT/Swin: ``"auto"``).
        name: Label in logs (default ``"ablationcam"``).

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        >>> AblationCAM(batch_size=8)(net, torch.rand(2, 3, 8, 8), torch.tensor([0, 3])).shape
        torch.Size([2, 1, 8, 8])
    """

    def __init__(
        self,
        target_layer: LayerSpec = "auto",
        batch_size: int = 64,
        *,
        eigen_smooth: bool = False,
        reshape: Reshape = "auto",
        name: str | None = None,
    ) -> None:
        super().__init__(target_layer=target_layer, reshape=reshape, eigen_smooth=eigen_smooth, name=name)
        int_at_least(batch_size, 1, "batch_size", "ablated copies per forward")
        self.batch_size = batch_size

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.label!r}, batch_size={self.batch_size})"

    def channel_weights(self, model: nn.Module, inputs: Tensor, targets: Target, run: Run) -> tuple[Tensor, Tensor]:
        """The layer's feature map ``A [B, K, h, w]`` and the weights ``w [B, K]`` (float32)."""
        layer = self.layer(model, inputs, run)
        size = (inputs.shape[-2], inputs.shape[-1])  # what a token layer's grid is inferred from
        with torch.inference_mode(), capture_outputs([layer]) as captured:
            logits = run.output(model, inputs)
        targets.check(logits)
        if captured[0] is None:
            raise RuntimeError(
                f"Target layer {type(layer).__name__} did not run in the forward; choose a layer on the path from the "
                "input to the logits."
            )
        raw = captured[0].clone()  # [B,...] the layer's own output (its dtype), a normal tensor again
        acts = self.feature_map(raw.float(), layer, size)  # [B,K,h,w]
        axis = _channel_axis(raw, acts)
        original = targets.score(logits.clone()).float()  # [B]
        per_channel = raw.movedim(axis, 1).flatten(2)  # [B,K,...]
        active = per_channel.abs().amax(2) > 0  # [B,K] a channel that is zero everywhere is not ablated
        active = agreed(active)  # it sets the number of forwards: under a sharded model every rank takes rank 0's
        img_idx, ch_idx = active.nonzero(as_tuple=True)  # [P], [P]
        scores = original[:, None].expand(acts.shape[:2]).clone()  # [B,K] unablated channels: S_k = S
        shared_front = [True]  # the layers before the target layer run on one copy of the image, while that works

        def ablated_logits(image: Tensor, copies: Tensor) -> Tensor:
            """Logits ``[n, N]`` with the target layer's output replaced by ``copies [n, ...]`` of ``image``'s."""
            n = copies.shape[0]
            repeated = image[None].expand(n, *image.shape).contiguous()  # [n,C,H,W]
            with torch.inference_mode(), _replaced_output(layer, copies):
                if shared_front[0]:
                    try:
                        return _output_with_one_front(model, repeated, run)
                    except (RuntimeError, ValueError) as error:  # a model that mixes the rows before the layer
                        if is_out_of_memory(error):
                            raise
                        shared_front[0] = False
                return run.output(model, repeated)

        for i in range(acts.shape[0]):
            channels = ch_idx[img_idx == i]  # [P_i] this image's non-zero channels

            def ablate_chunk(start: int, stop: int, i: int = i, channels: Tensor = channels) -> None:
                chunk = channels[start:stop]  # [n]
                copies = raw[i : i + 1].repeat(chunk.numel(), *([1] * (raw.ndim - 1)))  # [n,...]
                copies.movedim(axis, 1)[torch.arange(chunk.numel(), device=raw.device), chunk] = 0  # a view
                out = ablated_logits(inputs[i], copies)
                rows = targets[torch.full((chunk.numel(),), i, device=inputs.device)]
                scores[i, chunk] = rows.score(out.clone()).float()  # written by index: a retry overwrites

            # On out-of-memory a chunk is retried at half the size.
            run_chunked(ablate_chunk, channels.numel(), self.batch_size, what="channel ablations")
        denominator = torch.where(original != 0, original, torch.ones_like(original))[:, None]  # [B,1]
        return acts, (original[:, None] - scores) / denominator

    def contributions(self, model: nn.Module, inputs: Tensor, targets: Target, run: Run) -> Tensor:
        """``w_k A_k``, ``[B, K, h, w]``."""
        acts, weights = self.channel_weights(model, inputs, targets, run)
        return weights.view(*weights.shape, *([1] * (acts.ndim - 2))) * acts
