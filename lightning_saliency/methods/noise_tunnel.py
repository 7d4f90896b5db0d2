"""captum's ``NoiseTunnel`` variants over the plain gradient: SmoothGrad-squared and VarGrad.

Both average over noisy copies of each image as :class:`~lightning_saliency.methods.gradient.SmoothGrad` does (the
same seeded noise: with the same ``seed``, ``num_samples`` and ``noise_level`` the three methods see the same noisy
images), but keep the second moment of the gradient (SmoothGrad-squared, Hooker et al. 2019) or its variance
(VarGrad, Adebayo et al. 2018) instead of the mean of its magnitude.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn

from lightning_saliency._checks import noise_sampling
from lightning_saliency._chunking import run_chunked
from lightning_saliency._runtime import Run
from lightning_saliency.methods.base import AttributionMethod, run_gradient_pass
from lightning_saliency.methods.registry import register_method
from lightning_saliency.targets import Target

__all__ = ["SmoothGradSquared", "VarGrad", "gradient_moments", "smoothgrad_noise"]


def smoothgrad_noise(inputs: Tensor, num_samples: int, noise_level: float, seed: int) -> tuple[Tensor, Tensor]:
    """SmoothGrad's noise: ``num_samples`` patterns ``[n, C, H, W]`` (CPU, seeded) and each image's sigma ``[B]``.

    The noisy copy ``j`` of image ``i`` is ``x_i + pattern_j * sigma_i`` with ``sigma_i = noise_level * (max(x_i) -
    min(x_i))``: the draws of :class:`~lightning_saliency.methods.gradient.SmoothGrad` with the same ``seed``.

    Example:
        >>> patterns, sigma = smoothgrad_noise(torch.tensor([[[[0.0, 2.0]]]]), 3, 0.1, seed=0)
        >>> patterns.shape, sigma
        (torch.Size([3, 1, 1, 2]), tensor([0.2000]))
    """
    generator = torch.Generator().manual_seed(seed)
    span = (inputs.flatten(1).amax(1) - inputs.flatten(1).amin(1)).float().cpu()  # [B]
    patterns = torch.randn((num_samples, 1, *inputs.shape[1:]), generator=generator)[:, 0]  # [n,C,H,W]
    return patterns, noise_level * span


def gradient_moments(
    model: nn.Module,
    inputs: Tensor,
    targets: Target,
    run: Run,
    *,
    noise: Tensor,
    scale: Tensor | None = None,
    absolute: bool = False,
    batch_size: int = 64,
) -> tuple[Tensor, Tensor]:
    """Mean and mean square over noisy copies of the (absolute) input gradient, float32 ``[B, C, H, W]`` each.

    Copy ``j`` of image ``i`` is ``x_i + noise[i, j] * scale[i]`` (``noise`` ``[B, n, C, H, W]``, or ``[1, n, ...]``
    shared by every image; ``scale`` ``[B]`` or ``None`` for 1); its gradient ``g = dS_t/dx`` (``|g|`` with
    ``absolute``) is summed in image-major order (captum's ``repeat_interleave``), ``batch_size`` copies per pass.
    Expects eval mode and autograd on.
    """
    b, n = inputs.shape[0], noise.shape[1]
    shared = noise.shape[0] == 1
    first = torch.zeros((b, *inputs.shape[1:]), device=inputs.device)  # [B,C,H,W]
    second = torch.zeros_like(first)
    scale_dev = None if scale is None else scale.to(inputs.device, torch.float32)

    def noisy_chunk(start: int, stop: int) -> None:
        index = torch.arange(start, stop)
        img, sample = index // n, index % n
        eps = noise[torch.zeros_like(img) if shared else img, sample].to(inputs.device, torch.float32)  # [c,C,H,W]
        img = img.to(inputs.device)
        if scale_dev is not None:
            eps = eps * scale_dev[img].view(-1, *([1] * (eps.ndim - 1)))
        points = (inputs[img].float() + eps).to(inputs.dtype)
        p = run_gradient_pass(model, points, targets[img], [], run, input_grads=True)
        assert p.input_grads is not None
        a = p.input_grads.abs() if absolute else p.input_grads
        first.index_add_(0, img, a)
        second.index_add_(0, img, a * a)  # last step: a chunk that ran out of memory has added nothing

    run_chunked(noisy_chunk, b * n, batch_size, what="noisy images")
    return first / n, second / n


class _NoiseTunnel(AttributionMethod):
    """A captum ``NoiseTunnel(Saliency)`` statistic of the gradient over SmoothGrad's noisy copies (map: max over C)."""

    nt_type: ClassVar[str] = ""
    absolute: bool = False

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

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.label!r}, num_samples={self.num_samples})"

    def _statistic(self, mean: Tensor, mean_sq: Tensor) -> Tensor:
        """Captum's ``NoiseTunnel._compute_smoothing``: ``E[a^2]`` (smoothgrad_sq) or ``E[a^2] - E[a]^2`` (vargrad)."""
        return mean_sq if self.nt_type == "smoothgrad_sq" else mean_sq - mean * mean

    def _moments(self, model: nn.Module, inputs: Tensor, targets: Target, run: Run) -> tuple[Tensor, Tensor]:
        """``E[a]`` and ``E[a^2]`` of the gradient over the noisy copies, ``[B, C, H, W]`` each."""
        patterns, sigma = smoothgrad_noise(inputs, self.num_samples, self.noise_level, self.seed)
        return gradient_moments(
            model,
            inputs,
            targets,
            run,
            noise=patterns[None],
            scale=sigma,
            absolute=self.absolute,
            batch_size=self.batch_size,
        )

    def _attributions(self, model: nn.Module, inputs: Tensor, targets: Target, run: Run) -> Tensor:
        return self._statistic(*self._moments(model, inputs, targets, run))

    def compute(self, model: nn.Module, inputs: Tensor, targets: Target, run: Run) -> Tensor:
        """``max_c`` of the statistic, ``[B, 1, H, W]``, divided by its maximum per image.

        Squared gradients are tiny (``1e-8`` is common); the division, which the engine's min-max normalisation
        undoes exactly, keeps a map with structure from being taken as constant. VarGrad's ``E[a^2] - E[a]^2``
        below 16 float32 ulps of ``E[a^2]`` is rounding (a variance of 0 computed that way), set to 0 before.
        """
        mean, mean_sq = self._moments(model, inputs, targets, run)
        statistic = self._statistic(mean, mean_sq)  # [B,C,H,W]
        rounding = 16 * torch.finfo(torch.float32).eps * mean_sq
        statistic = torch.where(statistic > rounding, statistic, torch.zeros_like(statistic))
        raw = statistic.amax(1, keepdim=True)  # [B,1,H,W]
        peak = raw.flatten(1).amax(1).view(-1, *([1] * (raw.ndim - 1)))
        return torch.where(peak > 0, raw / peak.clamp_min(torch.finfo(torch.float32).tiny), torch.zeros_like(raw))


@register_method("smoothgrad_sq")
class SmoothGradSquared(_NoiseTunnel):
    """SmoothGrad-squared: ``M = max_c 1/n sum_i (dS_t/dx_c (x + eps_i))^2``, captum's ``nt_type="smoothgrad_sq"``.

    The mean square of the gradient over SmoothGrad's noisy copies (:func:`smoothgrad_noise`:
    ``eps_i ~ N(0, sigma^2)``, ``sigma = noise_level * (max(x) - min(x))``, seeded, shared by every image);
    Hooker et al. (2019) found it more faithful than SmoothGrad. The per-channel values equal captum's
    ``NoiseTunnel(Saliency(model)).attribute(x, nt_type="smoothgrad_sq", stdevs=sigma, ...)`` with the same noise
    (captum draws it from the global RNG; here from a private generator).

    Cost: ``num_samples`` forwards and backwards per image, ``batch_size`` noisy images per pass.

    Args:
        num_samples: Noisy copies per image.
        noise_level: Noise standard deviation as a fraction of each image's value range.
        batch_size: Noisy images per pass.
        seed: Seed of the noise (SmoothGrad's draws with the same seed).
        name: Label in logs.

    Example:
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
        >>> SmoothGradSquared(num_samples=4)(net, torch.rand(2, 3, 2, 2), torch.tensor([0, 2])).shape
        torch.Size([2, 1, 2, 2])
    """

    nt_type = "smoothgrad_sq"


@register_method("vargrad")
class VarGrad(_NoiseTunnel):
    """VarGrad (Adebayo et al. 2018): ``M = max_c Var_i(a_c(x + eps_i))``, captum's ``nt_type="vargrad"``.

    The variance over SmoothGrad's noisy copies of the gradient ``a = dS_t/dx`` (``absolute=False``, the paper's),
    or of its magnitude ``a = |dS_t/dx|`` (``absolute=True``: captum's ``Saliency`` default ``abs=True``), as
    ``E[a^2] - E[a]^2`` (captum's formula). Equal to ``NoiseTunnel(Saliency(model)).attribute(x, nt_type="vargrad",
    abs=absolute, ...)`` with the same noise.

    Cost: ``num_samples`` forwards and backwards per image, ``batch_size`` noisy images per pass.

    Args:
        num_samples: Noisy copies per image.
        noise_level: Noise standard deviation as a fraction of each image's value range.
        batch_size: Noisy images per pass.
        seed: Seed of the noise (SmoothGrad's draws with the same seed).
        absolute: Variance of ``|gradient|`` (captum's default) instead of the gradient's.
        name: Label in logs.

    Example:
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(12, 3), nn.Tanh(), nn.Linear(3, 3))
        >>> VarGrad(num_samples=4)(net, torch.rand(2, 3, 2, 2), torch.tensor([0, 2])).shape
        torch.Size([2, 1, 2, 2])
    """

    nt_type = "vargrad"

    def __init__(
        self,
        num_samples: int = 16,
        noise_level: float = 0.15,
        batch_size: int = 64,
        seed: int = 0,
        absolute: bool = False,
        *,
        name: str | None = None,
    ) -> None:
        super().__init__(num_samples, noise_level, batch_size, seed, name=name)
        if not isinstance(absolute, bool):
            raise TypeError(f"absolute must be True or False, got {absolute!r}.")
        self.absolute = absolute
