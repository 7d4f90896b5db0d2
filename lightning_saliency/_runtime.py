"""How saliency code runs next to a live model without touching it.

Everything here is a context manager or a pure helper used by every method and by the callback:

* :func:`gradients_enabled` re-enables autograd even inside Lightning's ``torch.inference_mode``.
* :func:`eval_mode` puts a model in eval mode and restores every submodule's own flag afterwards.
* :func:`eager` runs ``torch.compile``'d models as eager Python, so hooks and autograd see every layer.
* :func:`preserved_rng` forks torch (CPU and CUDA), numpy and ``random`` so that training's streams
  are the same with or without saliency work.
* :class:`Precision` carries the trainer's forward context (autocast) and input conversion; :class:`Run` adds
  how to read the model's output, and runs a forward with both.
* :func:`to_logits` turns a model output (tensor, tuple, dict, object with ``.logits``) into ``[B, N]``.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

__all__ = [
    "OutputAdapter",
    "Precision",
    "Run",
    "eager",
    "eval_mode",
    "gradients_enabled",
    "module_device",
    "preserved_rng",
    "to_logits",
    "to_output",
]

OutputAdapter = Callable[[Any], Tensor]
"""Maps whatever ``model(inputs)`` returns to logits ``[B, num_classes]``."""


@contextlib.contextmanager
def gradients_enabled() -> Iterator[None]:
    """Enable autograd, also inside ``torch.inference_mode`` (Lightning's ``validate``/``test``).

    ``torch.enable_grad()`` alone does not leave inference mode, so gradients stay off in
    ``trainer.validate()``; ``torch.inference_mode(False)`` does. Tensors used for gradients must be
    created inside this context (or before inference mode was entered), never inside inference mode.

    Example:
        >>> with torch.inference_mode():
        ...     with gradients_enabled():
        ...         x = torch.ones(2, requires_grad=True)
        ...         (g,) = torch.autograd.grad((x * 3).sum(), x)
        >>> g
        tensor([3., 3.])
    """
    with torch.inference_mode(False), torch.enable_grad():
        yield


@contextlib.contextmanager
def eager() -> Iterator[None]:
    """Run compiled code (``torch.compile(model)``, ``model.compile()``, compiled submodules) eagerly inside.

    A forward hook on a layer inside a compiled graph records an activation that the compiled graph's autograd
    does not use: ``torch.autograd.grad`` returns ``None`` for it. Saliency passes therefore run the model's own
    Python code (``torch.compiler.set_stance("force_eager")``): the same weights and the same maps as eager mode,
    nothing compiled or recompiled, and training's compiled graphs and caches untouched.

    Example:
        >>> net = torch.compile(nn.Linear(2, 1))
        >>> with eager():
        ...     net(torch.ones(1, 2)).shape
        torch.Size([1, 1])
    """
    with torch.compiler.set_stance("force_eager"):
        yield


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode and restore each submodule's own ``training`` flag on exit.

    Restoring per submodule (not ``model.train()``) keeps a frozen, eval-mode backbone in eval mode.

    Example:
        >>> net = nn.Sequential(nn.BatchNorm1d(2), nn.Dropout()).train()
        >>> _ = net[0].eval()
        >>> with eval_mode(net):
        ...     print(any(m.training for m in net.modules()))
        False
        >>> [m.training for m in net.modules()]
        [True, False, True]
    """
    modes = [(module, module.training) for module in model.modules()]
    try:
        model.eval()
        yield model
    finally:
        for module, training in modes:
            module.training = training


@contextlib.contextmanager
def preserved_rng(devices: Sequence[torch.device] = ()) -> Iterator[None]:
    """Save and restore the global RNG states: torch CPU, the given CUDA devices, numpy and ``random``.

    Anything random inside (noise for SmoothGrad, a ``DataLoader`` drawing its base seed) then leaves
    training's random streams exactly where they were.

    Example:
        >>> _ = torch.manual_seed(0)
        >>> with preserved_rng():
        ...     _ = torch.rand(3)
        >>> after = torch.rand(1)
        >>> _ = torch.manual_seed(0)
        >>> torch.equal(after, torch.rand(1))
        True
    """
    cuda_devices = [d for d in devices if d.type == "cuda"]
    py_state = random.getstate()
    np_state = np.random.get_state()
    with torch.random.fork_rng(devices=cuda_devices, enabled=True):
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


def module_device(module: nn.Module) -> torch.device:
    """The device of a module's first parameter (or buffer); CPU for a module with neither."""
    for param in module.parameters():
        return param.device
    for buffer in module.buffers():
        return buffer.device
    return torch.device("cpu")


def _identity(x: Tensor) -> Tensor:
    return x


@dataclass(frozen=True)
class Precision:
    """The numeric context a model is run in: the trainer's precision plugin, or plain fp32.

    Args:
        forward_context: Returns a context manager to run forwards in (autocast for ``16-mixed`` and
            ``bf16-mixed``; a default-dtype switch for ``*-true`` precisions).
        convert_input: Casts an input batch the way the precision plugin does before ``forward``.

    Post-processing (channel weights, normalisation, resizing) never runs in this context: methods cast
    activations and gradients to float32 first.
    """

    forward_context: Callable[[], contextlib.AbstractContextManager[Any]] = field(default=contextlib.nullcontext)
    convert_input: Callable[[Tensor], Tensor] = field(default=_identity)

    @classmethod
    def from_trainer(cls, trainer: Any) -> Precision:
        """The precision of a Lightning ``Trainer`` (its precision plugin's forward context and input cast)."""
        plugin = trainer.precision_plugin
        return cls(forward_context=plugin.forward_context, convert_input=plugin.convert_input)


FP32 = Precision()


def to_logits(output: Any, batch_size: int, adapter: OutputAdapter | None = None) -> Tensor:
    """Turn a model's output into logits ``[B, num_classes]``.

    Accepts a tensor, a tuple/list (first element), a mapping (``"logits"`` key) or an object with a
    ``.logits`` attribute (Hugging Face style); ``adapter`` overrides all of that.

    Raises:
        TypeError: If no tensor can be found in ``output``.
        ValueError: If the logits are not ``[batch_size, num_classes]``.

    Example:
        >>> to_logits({"logits": torch.zeros(2, 5)}, batch_size=2).shape
        torch.Size([2, 5])
    """
    logits = adapter(output) if adapter is not None else _default_logits(output)
    if not isinstance(logits, Tensor):
        raise TypeError(
            f"The model output could not be turned into logits: got {type(output).__name__}. Expected a Tensor "
            "[B, num_classes], a tuple/list whose first element is one, a dict with a 'logits' key, an object with "
            "a `.logits` attribute, or pass `output_adapter=` to say how."
        )
    if logits.ndim != 2 or logits.shape[0] != batch_size:
        raise ValueError(
            f"Expected the model's logits to have shape [B={batch_size}, num_classes], got {tuple(logits.shape)}. "
            "Saliency needs one score per class per image; pass `output_adapter=` if the model returns more."
        )
    return logits


def to_output(output: Any, batch_size: int, adapter: OutputAdapter | None = None) -> Tensor:
    """The model's output as the tensor targets read: ``[B, ...]``; what shape a target needs, the target checks.

    Logits ``[B, N]``, per-pixel logits ``[B, N, H, W]``, a regression ``[B]``. Accepts what :func:`to_logits`
    accepts, and torchvision segmentation models' ``{"out": ...}``.

    Raises:
        TypeError: If no tensor can be found in ``output``.
        ValueError: If its first dimension is not ``batch_size``.

    Example:
        >>> to_output({"out": torch.zeros(2, 3, 4, 4), "aux": torch.zeros(2, 3, 4, 4)}, batch_size=2).shape
        torch.Size([2, 3, 4, 4])
    """
    tensor = adapter(output) if adapter is not None else _default_logits(output)
    if not isinstance(tensor, Tensor):
        raise TypeError(
            f"The model output could not be turned into logits: got {type(output).__name__}. Expected a Tensor, a "
            "tuple/list whose first element is one, a dict with a 'logits' (or 'out') key, an object with a "
            "`.logits` attribute, or pass `output_adapter=` to say how."
        )
    if tensor.ndim == 0 or tensor.shape[0] != batch_size:
        raise ValueError(
            f"Expected the model's output to have the batch first, [B={batch_size}, ...], got {tuple(tensor.shape)}; "
            "pass `output_adapter=` if the model returns more."
        )
    return tensor


def _default_logits(output: Any) -> Any:
    if isinstance(output, Tensor):
        return output
    if isinstance(output, (tuple, list)) and output:
        return _default_logits(output[0])
    if isinstance(output, Mapping):
        return output.get("logits", output.get("out"))
    return getattr(output, "logits", None)


@dataclass(frozen=True)
class Run:
    """How to run the model: the precision, and how to read its output (``output_adapter``)."""

    precision: Precision = FP32
    output_adapter: OutputAdapter | None = None

    def output(self, model: nn.Module, inputs: Tensor) -> Tensor:
        """``model(inputs)`` under the forward context, as the tensor targets read; compiled models run eagerly."""
        with eager(), self.precision.forward_context():
            output = model(self.precision.convert_input(inputs))
        return to_output(output, inputs.shape[0], self.output_adapter)

    def logits(self, model: nn.Module, inputs: Tensor) -> Tensor:
        """:meth:`output`, which must be logits ``[B, num_classes]`` (:func:`to_logits`)."""
        logits = self.output(model, inputs)
        return to_logits(logits, inputs.shape[0])
