"""The method registry: names users type (``"gradcam"``) mapped to method classes.

Every registered method is run through the same conformance test (``tests/methods/test_conformance.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from lightning_saliency.methods.base import SaliencyMethod

__all__ = ["METHODS", "available_methods", "get_method", "register_method"]

METHODS: dict[str, type[SaliencyMethod]] = {}
"""Registry name -> method class."""

_ALIASES = {"gradcam_pp": "gradcam++", "gradcampp": "gradcam++", "grad_cam": "gradcam", "saliency": "gradient"}

M = TypeVar("M", bound=type[SaliencyMethod])


def register_method(name: str) -> Callable[[M], M]:
    """Class decorator adding a method to :data:`METHODS` under ``name`` (also set as ``cls.name``)."""

    def decorator(cls: M) -> M:
        if name in METHODS and METHODS[name] is not cls:
            raise ValueError(f"A saliency method is already registered as {name!r}: {METHODS[name].__name__}.")
        cls.name = name
        METHODS[name] = cls
        return cls

    return decorator


def available_methods() -> list[str]:
    """Registered method names, sorted.

    Example:
        >>> "gradcam" in available_methods()
        True
    """
    return sorted(METHODS)


def get_method(name: str | SaliencyMethod, **kwargs: Any) -> SaliencyMethod:
    """A method instance from a registry name (``kwargs`` go to its constructor), or the instance itself.

    Raises:
        ValueError: If ``name`` is not registered (the message lists what is).

    Example:
        >>> get_method("gradcam_pp")
        GradCAMPlusPlus(name='gradcam++')
    """
    if isinstance(name, SaliencyMethod):
        return name
    if not isinstance(name, str):
        raise TypeError(f"A method must be a registered name or a SaliencyMethod instance, got {name!r}.")
    key = _ALIASES.get(name.lower(), name.lower())
    if key not in METHODS:
        raise ValueError(f"Unknown saliency method {name!r}. Available: {', '.join(available_methods())}.")
    return METHODS[key](**kwargs)
