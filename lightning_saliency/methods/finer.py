"""Finer-CAM (Zhang et al., "Finer-CAM: Spotting the Difference Reveals Finer Details for Visual Explanation", 2025).

A CAM of the difference between the target class and the classes the model finds most similar to it, so that the
map shows what tells them apart rather than what they share.
"""

from __future__ import annotations

from torch import Tensor, nn

from lightning_saliency._reshape import Reshape
from lightning_saliency._runtime import Run
from lightning_saliency.layers import LayerSpec
from lightning_saliency.methods.base import CAMMethod, run_gradient_pass
from lightning_saliency.methods.registry import get_method, register_method
from lightning_saliency.methods.smoothing import OwnPassCAM, _contributions
from lightning_saliency.targets import ClassTarget, Target

__all__ = ["FinerCAM", "FinerTarget"]

_FINER_EPS = 1e-9  # pytorch-grad-cam's FinerWeightedTarget


class FinerTarget(Target):
    """A class against its ``comparisons`` most similar classes: pytorch-grad-cam's ``FinerWeightedTarget``.

    Per image, with ``y`` the logits, ``c`` its class and ``J`` the ``comparisons`` other classes whose logits are
    closest to ``y_c`` (by ``|y_j - y_c|``, chosen from the logits without gradient):
    ``score = sum_{j in J} p_j (y_c - alpha y_j) / (sum_{j in J} p_j + 1e-9)`` with ``p = softmax(y)`` (through which
    gradients flow, as in pytorch-grad-cam). ``confidence`` is the class's probability.

    Args:
        classes: The classes explained, a :class:`~lightning_saliency.targets.ClassTarget`.
        comparisons: How many similar classes (fewer if the model has fewer other classes).
        alpha: Weight of the similar classes' logits (0: the plain logit ``y_c``).

    Example:
        >>> import torch
        >>> target = FinerTarget(ClassTarget(torch.tensor([0])), comparisons=1)
        >>> target.score(torch.tensor([[2.0, 1.5, -3.0]]))  # class 1 is the nearest: y_0 - y_1
        tensor([0.5000])
    """

    def __init__(self, classes: Target, comparisons: int = 3, alpha: float = 1.0) -> None:
        if not isinstance(classes, ClassTarget):
            raise TypeError(
                "Finer-CAM compares a class with its most similar classes, so it needs class targets (class indices "
                f"[B] or a ClassTarget), got {type(classes).__name__}."
            )
        self.classes: ClassTarget = classes
        self.comparisons, self.alpha = comparisons, float(alpha)

    def __len__(self) -> int:
        return len(self.classes)

    def __getitem__(self, rows: slice | Tensor) -> FinerTarget:
        return FinerTarget(self.classes[rows], self.comparisons, self.alpha)

    def __repr__(self) -> str:
        return f"FinerTarget({self.classes.classes.tolist()}, comparisons={self.comparisons}, alpha={self.alpha})"

    def check(self, output: Tensor) -> None:
        """Every class indexes a column of ``output [B, N]``."""
        self.classes.check(output)

    def similar(self, output: Tensor) -> Tensor:
        """The ``[B, k]`` indices of the most similar classes, nearest first (``k = min(comparisons, N - 1)``)."""
        logits = output.detach().float()
        c = self.classes.classes.to(logits.device)[:, None]  # [B,1]
        distance = (logits - logits.gather(1, c)).abs().scatter(1, c, float("inf"))  # the class itself last
        k = min(self.comparisons, logits.shape[1] - 1)
        return distance.argsort(dim=1, stable=True)[:, :k]  # [B,k]

    def score(self, output: Tensor) -> Tensor:
        """``sum_j p_j (y_c - alpha y_j) / (sum_j p_j + 1e-9)``, ``[B]``, differentiable."""
        logits = output.float()
        similar = self.similar(logits)  # [B,k]
        main = self.classes.score(logits)[:, None]  # [B,1]
        p = logits.softmax(1).gather(1, similar)  # [B,k]
        return (p * (main - self.alpha * logits.gather(1, similar))).sum(1) / (p.sum(1) + _FINER_EPS)

    def confidence(self, output: Tensor) -> Tensor:
        """The class's softmax probability, ``[B]``."""
        return self.classes.confidence(output)


@register_method("finercam")
class FinerCAM(OwnPassCAM):
    """Finer-CAM: a CAM (Grad-CAM by default) of :class:`FinerTarget`, pytorch-grad-cam's ``FinerCAM``.

    ``targets`` are the classes to explain (class indices or a :class:`~lightning_saliency.targets.ClassTarget`);
    for each image the ``comparisons`` classes whose logits are closest to its class's are found from the logits
    and the base CAM explains ``sum_j p_j (y_c - alpha y_j) / sum_j p_j`` instead of ``y_c``. pytorch-grad-cam's
    ``FinerCAM(...)(x, target_idx=c)`` is the same with one class ``c`` for the whole batch (its default explains
    the predicted class; ``targets="predicted"`` does that here).

    Cost: one forward and one gradient from the target layer on (as Grad-CAM alone: the objective is not a
    :class:`~lightning_saliency.targets.Target` score, so the pass is not shared).

    Args:
        target_layer: ``"auto"`` (the last feature map before global pooling), a dotted name, or a module.
        comparisons: How many similar classes (pytorch-grad-cam: 3).
        alpha: Weight of the similar classes' logits (pytorch-grad-cam: 1).
        base: The CAM whose channel weights are used: a registered :class:`~lightning_saliency.methods.base.CAMMethod`
            name (``"gradcam"``, ``"gradcam++"``, ``"hirescam"``, ``"xgradcam"``, ``"layercam"``).
        eigen_smooth: First principal component of ``w_k A_k`` instead of their sum (pytorch-grad-cam's option).
        reshape: How the layer's output and gradient become ``[B, K, h, w]`` (ViT/Swin: ``"auto"``).
        name: Label in logs.

    Example:
        >>> import torch
        >>> net = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        >>> FinerCAM()(net, torch.rand(2, 3, 8, 8), torch.tensor([0, 3])).shape
        torch.Size([2, 1, 8, 8])
    """

    def __init__(
        self,
        target_layer: LayerSpec = "auto",
        comparisons: int = 3,
        alpha: float = 1.0,
        base: str = "gradcam",
        *,
        eigen_smooth: bool = False,
        reshape: Reshape = "auto",
        name: str | None = None,
    ) -> None:
        super().__init__(target_layer=target_layer, reshape=reshape, eigen_smooth=eigen_smooth, name=name)
        if isinstance(comparisons, bool) or not isinstance(comparisons, int) or comparisons < 1:
            raise ValueError(f"comparisons must be an int >= 1 (similar classes), got {comparisons!r}.")
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)):
            raise ValueError(f"alpha must be a number, got {alpha!r}.")
        cam = get_method(base, reshape=reshape) if isinstance(base, str) else None
        if not isinstance(cam, CAMMethod):
            raise ValueError(f"base must name a registered CAMMethod ('gradcam', 'layercam', ...), got {base!r}.")
        self.comparisons, self.alpha, self.base, self._cam = comparisons, float(alpha), base, cam

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.label!r}, comparisons={self.comparisons}, alpha={self.alpha}, "
            f"base={self.base!r})"
        )

    def contributions(self, model: nn.Module, inputs: Tensor, targets: Target, run: Run) -> Tensor:
        """The base CAM's ``w_k A_k`` for the :class:`FinerTarget`, ``[B, K, h, w]``."""
        finer = FinerTarget(targets, self.comparisons, self.alpha)  # a clear error unless class targets
        layer = self.layer(model, inputs, run)
        p = run_gradient_pass(model, inputs, finer, [layer], run, input_grads=False)
        acts, grads = self._cam.feature_maps(p, layer)
        return _contributions(self._cam, acts, grads)
