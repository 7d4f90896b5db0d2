"""Class model visualisation (Simonyan, Vedaldi & Zisserman 2014, section 2).

For each chosen class ``c`` an image ``I`` that maximises ``S_c(I) - lambda * ||I||^2`` is found by gradient ascent
on the input, starting from the zero image (with mean-centred inputs, the mean image), the model frozen. ``S_c`` is
the pre-softmax logit. Two optional regularisers of later work (Yosinski et al. 2015) make the images easier to read:
a random ``jitter`` (roll) of the image at every step and a Gaussian blur every ``blur_every`` steps.

The model is left exactly as found: it runs in eval mode (each submodule's mode restored after), gradients are
taken with ``torch.autograd.grad`` with respect to the image only (parameter ``.grad`` is never written), the random
shifts come from a private seeded generator and training's RNG streams are forked. It works under Lightning's
``torch.inference_mode`` (``trainer.validate``/``test``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor, nn
from torchvision.transforms.v2.functional import gaussian_blur

from lightning_saliency._checks import int_at_least, positive_float
from lightning_saliency._runtime import Run, eval_mode, gradients_enabled, module_device, preserved_rng
from lightning_saliency.targets import ClassTarget

__all__ = ["class_model_visualisation", "valid_input_range"]

InitSpec = Literal["zero", "mean"] | Tensor

_BETAS = (0.9, 0.999)
_ADAM_EPS = 1e-8


def class_model_visualisation(
    model: nn.Module,
    classes: Sequence[int] | Tensor,
    input_shape: Sequence[int],
    *,
    steps: int = 100,
    lr: float = 0.05,
    weight_decay: float = 1e-3,
    jitter: int = 0,
    blur_every: int = 0,
    blur_sigma: float = 0.5,
    init: InitSpec = "zero",
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    seed: int = 0,
    run: Run | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """Images ``[K, C, H, W]`` that maximise each class score, all ``K`` classes optimised in one batch.

    Each step ascends ``S_c(I) - weight_decay * ||I||^2`` with Adam (``betas=(0.9, 0.999)``, implemented on the
    image tensor, bias-corrected), whose per-pixel step size makes ``lr`` mean "about this much change per pixel
    and step" whatever the scale of the model's gradients. The optional regularisers, in order within a step:

    * ``jitter > 0``: the image is rolled (circularly) by ``(dy, dx)`` drawn uniformly from ``[-jitter, jitter]``
      (one shift per step for the whole batch, from a generator seeded with ``seed``) before the forward; the
      gradient flows back through the roll, so the image itself is never shifted;
    * ``mean``/``std`` given: after the update the image is clamped per channel to the valid normalised range
      ``[(0 - mean) / std, (1 - mean) / std]`` (see :func:`valid_input_range`);
    * ``blur_every > 0``: every ``blur_every``-th step the image is blurred with a Gaussian of ``blur_sigma`` pixels
      (torchvision ``gaussian_blur``, kernel ``2 * ceil(3 * sigma) + 1``, reflect padding), then clamped again.

    Without jitter the result does not depend on ``seed``: the procedure is otherwise deterministic.

    Args:
        model: The classifier ``[B, C, H, W] -> logits``; left as found (modes, parameters, ``.grad``, RNG).
        classes: ``K`` class indices (a list or a 1-D integer tensor), one image each.
        input_shape: ``(C, H, W)`` of one model input.
        steps: Number of ascent steps.
        lr: Adam step size, in input units.
        weight_decay: ``lambda`` of the L2 penalty ``lambda * ||I||^2`` (0 for none).
        jitter: Largest random roll in pixels per step (0 for none).
        blur_every: Blur the image every this many steps (0 for never).
        blur_sigma: Standard deviation of the blur, in pixels.
        init: ``"zero"`` (the zero input: with mean-centred data the mean image, as in the paper), ``"mean"``
            (the dataset mean colour ``mean`` in input space; needs ``mean``, and for inputs normalised with
            ``mean`` that is again the zero image), or a Tensor ``[C, H, W]`` or ``[K, C, H, W]`` to start from.
        mean: The per-channel mean the inputs were normalised with (``input = (pixel - mean) / std``).
            Given (or ``std`` given), the image is kept in the valid range of pixels in [0, 1].
        std: The per-channel standard deviation, likewise (1 when only ``mean`` is given).
        seed: Seed of the private generator that draws the jitter.
        run: Precision (forward context, input cast) and output adapter; plain fp32 by default. Only the forwards
            run in it; the image, its update and the regularisers stay float32.
        device: Where to optimise; by default the device of the model's first parameter (or buffer, else CPU).

    Returns:
        ``[K, C, H, W]`` float32 images in the model's input space, detached, on ``device``.

    Raises:
        ValueError: If an argument is out of range, or a class is not an output of the model.
        TypeError: If an argument has the wrong type.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        >>> images = class_model_visualisation(net, [0, 1], (1, 8, 8), steps=3)
        >>> tuple(images.shape), images.dtype
        ((2, 1, 8, 8), torch.float32)
    """
    targets = _check_classes(classes)
    shape = _check_shape(input_shape)
    steps = int_at_least(steps, 1, "steps")
    jitter = int_at_least(jitter, 0, "jitter")
    blur_every = int_at_least(blur_every, 0, "blur_every")
    lr = positive_float(lr, "lr")
    blur_sigma = positive_float(blur_sigma, "blur_sigma")
    if isinstance(weight_decay, bool) or not isinstance(weight_decay, (int, float)) or not weight_decay >= 0:
        raise ValueError(f"weight_decay must be a float >= 0 (lambda of the L2 penalty), got {weight_decay!r}.")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {seed!r}.")
    if run is not None and not isinstance(run, Run):
        raise TypeError(f"run must be a lightning_saliency.methods.Run or None, got {type(run).__name__}.")
    low, high = valid_input_range(shape[0], mean, std)
    device = torch.device(device) if device is not None else module_device(model)
    run = run or Run()
    k = targets.numel()

    generator = torch.Generator().manual_seed(seed)
    kernel = min(2 * math.ceil(3 * blur_sigma) + 1, 2 * min(shape[1:]) - 1)  # reflect padding needs pad < size
    with preserved_rng([device]), eval_mode(model), gradients_enabled():
        image = _initial_image(init, k, shape, mean, std).to(device)  # [K,C,H,W], a normal (non-inference) tensor
        target = ClassTarget(targets.to(device, copy=True))  # normal tensors, even under torch.inference_mode
        lo = low.to(device, copy=True) if low is not None else None
        hi = high.to(device, copy=True) if high is not None else None
        m1, m2 = torch.zeros_like(image), torch.zeros_like(image)
        for step in range(1, steps + 1):
            x = image.detach().requires_grad_(True)
            shifted = x
            if jitter:
                dy, dx = torch.randint(-jitter, jitter + 1, (2,), generator=generator).tolist()
                shifted = torch.roll(x, shifts=(dy, dx), dims=(2, 3))
            logits = run.logits(model, shifted)
            if step == 1:
                target.check(logits)
            objective = target.score(logits).sum() - weight_decay * x.pow(2).sum()
            (grad,) = torch.autograd.grad(objective, [x])
            with torch.no_grad():
                grad = grad.float()
                m1.mul_(_BETAS[0]).add_(grad, alpha=1 - _BETAS[0])
                m2.mul_(_BETAS[1]).addcmul_(grad, grad, value=1 - _BETAS[1])
                m1_hat = m1 / (1 - _BETAS[0] ** step)
                m2_hat = m2 / (1 - _BETAS[1] ** step)
                image = image + lr * m1_hat / (m2_hat.sqrt() + _ADAM_EPS)  # ascent
                image = _clamp(image, lo, hi)
                if blur_every and step % blur_every == 0 and kernel >= 3:
                    image = _clamp(gaussian_blur(image, [kernel, kernel], [blur_sigma, blur_sigma]), lo, hi)
        return image.detach().float()


def valid_input_range(
    channels: int, mean: Sequence[float] | None = None, std: Sequence[float] | None = None
) -> tuple[Tensor | None, Tensor | None]:
    """Per-channel bounds ``[1, C, 1, 1]`` of inputs whose pixels are in [0, 1]: ``(0 - mean) / std, (1 - mean) / std``.

    ``(None, None)`` when neither ``mean`` nor ``std`` is given (the image is then not clamped).

    Raises:
        ValueError: If ``mean``/``std`` do not have one value per channel (or one value) or ``std`` is not positive.

    Example:
        >>> low, high = valid_input_range(2, mean=[0.5, 0.25], std=[0.5, 0.25])
        >>> low.flatten().tolist(), high.flatten().tolist()
        ([-1.0, -1.0], [1.0, 3.0])
    """
    if mean is None and std is None:
        return None, None
    m = _per_channel(mean if mean is not None else [0.0], channels, "mean")
    s = _per_channel(std if std is not None else [1.0], channels, "std")
    if bool((s <= 0).any()):
        raise ValueError(f"std must be positive, got {list(std or [])!r}.")
    return (0 - m) / s, (1 - m) / s


# ---------------------------------------------------------------------- helpers


def _initial_image(
    init: InitSpec, k: int, shape: tuple[int, int, int], mean: Sequence[float] | None, std: Sequence[float] | None
) -> Tensor:
    if isinstance(init, Tensor):
        if not init.is_floating_point() or tuple(init.shape[-3:]) != shape or init.ndim not in (3, 4):
            raise ValueError(
                f"init must be a float Tensor [C, H, W] or [K, C, H, W] with (C, H, W) = {shape}, got shape "
                f"{tuple(init.shape)} and dtype {init.dtype}."
            )
        if init.ndim == 4 and init.shape[0] not in (1, k):
            raise ValueError(f"init must have 1 or K={k} images, got {init.shape[0]}.")
        return init.detach().to("cpu", torch.float32, copy=True).expand(k, *shape).contiguous()
    if init == "zero":
        return torch.zeros(k, *shape)
    if init == "mean":
        if mean is None:
            raise ValueError(
                "init='mean' needs `mean=` (the per-channel mean the inputs were normalised with); pass the mean "
                "image as a Tensor for inputs that are not normalised."
            )
        _per_channel(mean, shape[0], "mean")  # checked for its length only
        return torch.zeros(k, *shape)  # pixels equal to `mean` are (mean - mean) / std = 0 in input space
    raise ValueError(f"init must be 'zero', 'mean' or a Tensor [C, H, W], got {init!r}.")


def _clamp(image: Tensor, low: Tensor | None, high: Tensor | None) -> Tensor:
    if low is None or high is None:
        return image
    return torch.maximum(torch.minimum(image, high), low)


def _per_channel(values: Sequence[float], channels: int, arg: str) -> Tensor:
    try:
        t = torch.as_tensor([float(v) for v in values], dtype=torch.float32)
    except (TypeError, ValueError):
        raise TypeError(f"{arg} must be a sequence of floats (one per channel), got {values!r}.") from None
    if t.numel() not in (1, channels):
        raise ValueError(f"{arg} must have one value per input channel ({channels}) or a single value, got {values!r}.")
    return t.expand(channels)[None, :, None, None].clone()  # [1,C,1,1]


def _check_classes(classes: Sequence[int] | Tensor) -> Tensor:
    if isinstance(classes, Tensor):
        ok = classes.ndim == 1 and not classes.is_floating_point() and classes.dtype != torch.bool
        values = classes.tolist() if ok else None
    elif isinstance(classes, Sequence) and not isinstance(classes, str):
        values = list(classes)
        ok = all(isinstance(c, int) and not isinstance(c, bool) for c in values)
    else:
        ok, values = False, None
    if not ok or values is None or not values or any(c < 0 for c in values):
        raise ValueError(f"classes must be a non-empty list of class indices >= 0, got {classes!r}.")
    return torch.tensor(values, dtype=torch.long)


def _check_shape(input_shape: Sequence[int]) -> tuple[int, int, int]:
    if (
        not isinstance(input_shape, (Sequence, torch.Size))
        or len(input_shape) != 3
        or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in input_shape)
    ):
        raise ValueError(f"input_shape must be (C, H, W) with positive ints, got {input_shape!r}.")
    c, h, w = input_shape
    return c, h, w
