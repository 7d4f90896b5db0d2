"""Gradient saliency (Simonyan et al. 2014), gradient x input, and SmoothGrad (Smilkov et al. 2017)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from lightning_saliency._checks import noise_sampling
from lightning_saliency._chunking import run_chunked
from lightning_saliency._runtime import Run
from lightning_saliency._shapes import per_sample
from lightning_saliency.methods.base import GradientMethod, GradientPass, SaliencyMethod, run_gradient_pass
from lightning_saliency.methods.registry import register_method
from lightning_saliency.targets import Target

__all__ = ["Gradient", "GradientXInput", "SmoothGrad"]


def _abs_max_over_channels(grads: Tensor) -> Tensor:
    return grads.abs().amax(1, keepdim=True)  # [B,C,H,W] -> [B,1,H,W]


@register_method("gradient")
class Gradient(GradientMethod):
    """Vanilla gradient saliency: ``M = max_c |d S_t / d x_c|`` with ``S_t`` the pre-softmax logit of the target.

    Simonyan, Vedaldi & Zisserman, "Deep Inside Convolutional Networks", 2014, section 3.1. Equals captum's
    ``Saliency(abs=True)`` followed by a max over colour channels.

    Example:
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
        >>> Gradient()(net, torch.rand(2, 3, 2, 2), torch.tensor([0, 2])).shape
        torch.Size([2, 1, 2, 2])
    """

    uses_input_grad = True

    def from_pass(self, p: GradientPass, layers: Sequence[nn.Module]) -> Tensor:
        """``max_c |grad|``, ``[B, 1, H, W]``."""
        assert p.input_grads is not None
        return _abs_max_over_channels(p.input_grads)


@register_method("gradient_x_input")
class GradientXInput(GradientMethod):
    """Gradient x input (Shrikumar et al. 2016): ``M = |sum_c x_c * d S_t / d x_c|``.

    The per-channel attributions are those of captum's ``InputXGradient``; their sum over channels is the
    pixel's contribution to the linearised logit, and its magnitude is shown.
    """

    uses_input_grad = True

    def from_pass(self, p: GradientPass, layers: Sequence[nn.Module]) -> Tensor:
        """``|sum_c x * grad|``, ``[B, 1, H, W]``."""
        assert p.input_grads is not None
        return (p.inputs.float() * p.input_grads).sum(1, keepdim=True).abs()


@register_method("smoothgrad")
class SmoothGrad(SaliencyMethod):
    """SmoothGrad (Smilkov et al. 2017): vanilla gradient saliency averaged over noisy copies of the input.

    ``M = 1/n sum_i max_c |d S_t / d x_c (x + eps_i)|`` with ``eps_i ~ N(0, sigma^2)`` and
    ``sigma = noise_level * (max(x) - min(x))`` per image. The noise comes from a private generator seeded with
    ``seed`` on the CPU, so maps are the same on every call and device and training's RNG stream is untouched; the
    same ``n`` noise patterns (scaled per image) are used for every image, so a map does not depend on the batch.

    Args:
        num_samples: Noisy copies per image (``n``); each costs a forward and a backward.
        noise_level: Noise standard deviation as a fraction of each image's value range (paper: 0.1 - 0.2).
        batch_size: Noisy images per pass, bounding memory to ``batch_size`` images' activations.
        seed: Seed of the noise.
    """

    def __init__(
        self,
        num_samples: int = 16,
        noise_level: float = 0.15,
        batch_size: int = 64,
        seed: int = 0,
        *,
        name: str | None = None,
    ) -> None:
        super().__init__(name=name)
        self.num_samples, self.noise_level, self.batch_size, self.seed = noise_sampling(
            num_samples, noise_level, batch_size, seed
        )

    def compute(self, model: nn.Module, inputs: Tensor, targets: Target, run: Run) -> Tensor:
        """Mean of ``max_c |grad|`` over ``num_samples`` noisy copies, ``[B, 1, H, W]``."""
        b = inputs.shape[0]
        generator = torch.Generator().manual_seed(self.seed)
        span = (inputs.flatten(1).amax(1) - inputs.flatten(1).amin(1)).float().cpu()  # [B]
        sigma = per_sample(self.noise_level * span, inputs)  # [B,1,1,1]
        # One draw of n noise patterns, shared by every image (scaled by its own sigma): an image's map then does
        # not depend on which other images are in the batch, nor on its position in it.
        noise = torch.randn((self.num_samples, 1, *inputs.shape[1:]), generator=generator) * sigma  # [n,B,C,H,W]
        noisy = (inputs.float().cpu()[None] + noise).flatten(0, 1).to(inputs.device, inputs.dtype)  # [n*B,C,H,W]
        repeated = targets[torch.arange(self.num_samples * b) % b]  # [n*B]: row i explains image i % B
        total = torch.zeros((b, 1, *inputs.shape[2:]), device=inputs.device)  # [B,1,H,W] ([B,1,D,H,W])

        def noisy_chunk(start: int, stop: int) -> None:
            p = run_gradient_pass(model, noisy[start:stop], repeated[start:stop], [], run, input_grads=True)
            assert p.input_grads is not None
            sal = _abs_max_over_channels(p.input_grads)  # [c,1,H,W]
            owner = torch.arange(start, stop, device=inputs.device) % b  # image index of each row
            total.index_add_(0, owner, sal)  # last step: a chunk that ran out of memory has added nothing

        # On out-of-memory a chunk is retried at half the size; rows are still added in the same order.
        run_chunked(noisy_chunk, noisy.shape[0], self.batch_size, what="noisy images")
        return total / self.num_samples
