"""Reading a vision transformer's attention weights during one forward, without changing the model.

torchvision's ViT blocks call ``nn.MultiheadAttention(x, x, x, need_weights=False)``, which runs fused kernels and
never materialises the attention weights; torchvision's Swin computes them inside ``shifted_window_attention``
and returns only the output. :func:`record_attention` obtains them with forward hooks (removed on exit, also on
error) and nothing else:

* ``nn.MultiheadAttention`` (torchvision ``vit_*``, any model built from it, self-attention without masks): the
  hook recomputes ``A = softmax(Q K^T / sqrt(d))`` from the module's input and its ``in_proj`` weights and bias
  (as PyTorch's ``need_weights=True`` path does), then ``out_proj(A V)``, and checks that this output equals the
  fused one; the weights are ``[B, heads, T, T]``.
* torchvision ``ShiftedWindowAttention`` (``swin_t``/``s``/``b``) and ``ShiftedWindowAttentionV2`` (``swin_v2_*``):
  only the blocks of the **last stage** are read. Windowed attention with shifts and patch merging between stages
  has no whole-image attention matrix across stages; in the last stage, when its token grid fits in one window
  (``swin_t`` at 224 px: a 7x7 grid, window 7), torchvision sets the shift to 0 and every block attends globally
  over the grid (padded to the window with zero tokens when smaller). The hook recomputes that one window's
  attention as ``shifted_window_attention`` does (scaled dot product or V2's cosine attention, plus the relative
  position bias) and checks that its output equals the module's; the methods read the weights among the real
  tokens, ``[B, heads, h*w, h*w]`` (:meth:`RecordedAttention.tokens`; the padding tokens are zeros re-made in every
  block: no input reaches them). A last stage larger than one window (``swin_t`` above 224 px) is an error.

With ``differentiable=True`` the hooks return the recomputed output, so the weights are in the autograd graph of
the logits (what gradient-weighted relevance differentiates); else the model's own output goes on.

The patch grid is the spatial size of the last ``[B, D, h, w]`` output (the patch embedding) before the first
attention module runs (ViT), or the grid the attention reads (Swin); the ``T - h*w`` tokens before the patch tokens
are prefix tokens (the class token first).
"""

from __future__ import annotations

import contextlib
import inspect
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.swin_transformer import ShiftedWindowAttention

from lightning_saliency._runtime import Run

__all__ = [
    "RecordedAttention",
    "attention_modules",
    "mha_attention",
    "patch_row",
    "record_attention",
    "window_attention",
    "window_tokens",
]


@dataclass
class RecordedAttention:
    """What one forward gave: per-block attention weights, the patch grid, the prefix tokens and the output.

    Attributes:
        weights: Per attention block in the order they ran, ``[B, heads, N, N]`` (rows attend to columns), as the
            forward used them (differentiate w.r.t. these); :meth:`tokens` keeps the model's ``T`` tokens of them.
        grid: The patch grid ``(h, w)`` (``(d, h, w)`` for volumes): ``T = prefix + h * w``.
        prefix: Tokens before the patch tokens (1: the class token; 0: none, e.g. Swin, which pools all tokens).
        output: The model's output as targets read it.
        kind: ``"vit"`` (``nn.MultiheadAttention``) or ``"swin"`` (the last stage of torchvision's Swin).
        real: The indices of the ``T`` real tokens among the ``N`` a Swin window holds (``None``: all are real).
    """

    weights: list[Tensor]
    grid: tuple[int, ...]
    prefix: int
    output: Tensor
    kind: str
    real: Tensor | None = None

    def tokens(self, weights: Tensor) -> Tensor:
        """``[B, heads, T, T]``: a block's weights (or their gradient) among the real tokens."""
        if self.real is None:
            return weights
        return weights[:, :, self.real][:, :, :, self.real]


@dataclass
class _Recorder:
    weights: dict[int, Tensor] = field(default_factory=dict)
    order: list[int] = field(default_factory=list)
    grid: tuple[int, ...] | None = None
    real: Tensor | None = None
    started: bool = False


def attention_modules(model: nn.Module, method: str) -> tuple[str, list[tuple[str, nn.Module]]]:
    """The attention modules read, ``("vit", every nn.MultiheadAttention)`` or ``("swin", the last stage's)``.

    Raises:
        ValueError: If the model has neither (a CNN): the message names the model and what is needed.

    Example:
        >>> from torchvision.models import vit_b_16
        >>> kind, blocks = attention_modules(vit_b_16(), "attention_rollout")
        >>> kind, len(blocks), blocks[-1][0]
        ('vit', 12, 'encoder.layers.encoder_layer_11.self_attention')
    """
    named = [(n, m) for n, m in model.named_modules() if n]
    mha: list[tuple[str, nn.Module]] = [(n, m) for n, m in named if isinstance(m, nn.MultiheadAttention)]
    if mha:
        return "vit", mha
    windows = [(n, m) for n, m in named if isinstance(m, ShiftedWindowAttention)]
    if windows:
        stage = windows[-1][0].rsplit(".", 2)[0] + "."  # features.7.1.attn -> features.7.
        return "swin", [(n, m) for n, m in windows if n.startswith(stage)]
    raise ValueError(
        f"{method} reads the self-attention weights of a vision transformer, and {type(model).__name__} has no "
        "attention module it can read: it needs torch.nn.MultiheadAttention blocks (torchvision's vit_b_16 and "
        "other VisionTransformer models) or torchvision's ShiftedWindowAttention (swin_t, swin_s, swin_b, swin_v2_*). "
        "For a CNN use a CAM ('gradcam', ...) or the gradient family."
    )


_MHA_FORWARD = inspect.signature(nn.MultiheadAttention.forward)


def _self_attention_input(
    module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], name: str, method: str
) -> Tensor:
    """The tokens a ``nn.MultiheadAttention`` call attends over, checked to be a form :func:`mha_attention` reads."""
    bound = _MHA_FORWARD.bind(module, *args, **kwargs)  # nn.MultiheadAttention's arguments, also in a subclass
    query, key, value = (bound.arguments.get(k) for k in ("query", "key", "value"))
    if not (key is query and value is query):
        raise ValueError(
            f"{method}: attention module {name!r} is called with different query, key and value (cross-attention); "
            "attention rollout and relevance are defined for self-attention only."
        )
    if not isinstance(query, Tensor) or query.ndim != 3:
        shape = tuple(query.shape) if isinstance(query, Tensor) else type(query).__name__
        raise ValueError(f"{method}: attention module {name!r} got {shape}; it needs batched tokens [B, T, D].")
    masked = [k for k in ("key_padding_mask", "attn_mask") if bound.arguments.get(k) is not None]
    masked += ["is_causal"] if bound.arguments.get("is_causal") else []
    unusual = not module._qkv_same_embed_dim or module.bias_k is not None or module.add_zero_attn
    if masked or unusual:
        what = ", ".join(masked) or "separate q/k/v projections, bias_k/bias_v or add_zero_attn"
        raise ValueError(
            f"{method}: attention module {name!r} uses {what}, which the recomputation of its weights does not "
            "implement (torchvision's ViT uses none)."
        )
    return query


def mha_attention(module: nn.MultiheadAttention, x: Tensor) -> tuple[Tensor, Tensor]:
    """The output and weights ``[B, heads, T, T]`` of ``module(x, x, x)``, recomputed as PyTorch's reference path.

    ``A = softmax((Q / sqrt(d)) K^T)`` from ``in_proj``, then ``out_proj(A V)``: the output is computed *from*
    ``A``, so gradients reach it (the weights ``need_weights=True`` returns are a view made after their use).
    """
    tokens = x if module.batch_first else x.transpose(0, 1)  # [B,T,D]
    b, t, d = tokens.shape
    heads = module.num_heads
    qkv = F.linear(tokens, module.in_proj_weight, module.in_proj_bias)  # [B,T,3D]
    q, k, v = qkv.reshape(b, t, 3, heads, d // heads).permute(2, 0, 3, 1, 4)  # each [B,heads,T,d/heads]
    attn = F.softmax((q * math.sqrt(1.0 / (d // heads))) @ k.transpose(-2, -1), dim=-1)  # [B,heads,T,T]
    out = (attn @ v).transpose(1, 2).reshape(b, t, d)
    out = F.linear(out, module.out_proj.weight, module.out_proj.bias)
    return (out if module.batch_first else out.transpose(0, 1)), attn


def window_attention(module: ShiftedWindowAttention, x: Tensor) -> tuple[Tensor, Tensor]:
    """The output and weights of torchvision's ``shifted_window_attention`` on a grid ``x [B, h, w, C]`` in one window.

    Returns the output ``[B, h, w, C]`` and the window's attention weights ``[B, heads, N, N]`` (``N`` the window's
    tokens, row-major; the output is computed from them), in the order torchvision computes them (the shift is 0 in
    one window). :func:`window_tokens` gives the indices of the ``h * w`` real tokens among the ``N``.
    """
    b, h, w, c = x.shape
    wh, ww = module.window_size
    heads = module.num_heads
    n = wh * ww
    tokens = F.pad(x, (0, 0, 0, ww - w, 0, wh - h)).reshape(b, n, c)  # [B,N,C], padded as torchvision pads
    qkv_bias = module.qkv.bias
    logit_scale = getattr(module, "logit_scale", None)
    if logit_scale is not None and qkv_bias is not None:  # V2: no key bias
        third = qkv_bias.numel() // 3
        qkv_bias = torch.cat([qkv_bias[:third], torch.zeros_like(qkv_bias[third : 2 * third]), qkv_bias[2 * third :]])
    qkv = F.linear(tokens, module.qkv.weight, qkv_bias).reshape(b, n, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]  # [B,heads,N,c/heads]
    if logit_scale is not None:  # V2: cosine attention
        attn = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1)
        attn = attn * torch.clamp(logit_scale, max=math.log(100.0)).exp()
    else:
        attn = (q * (c // heads) ** -0.5).matmul(k.transpose(-2, -1))
    attn = F.softmax(attn + module.get_relative_position_bias(), dim=-1)  # [B,heads,N,N]
    out = attn.matmul(v).transpose(1, 2).reshape(b, n, c)
    out = F.linear(out, module.proj.weight, module.proj.bias).reshape(b, wh, ww, c)[:, :h, :w].contiguous()
    return out, attn


def window_tokens(grid: tuple[int, int], window: tuple[int, int], device: torch.device) -> Tensor:
    """``[h*w]`` the indices of a grid's tokens in the (row-major) window it is padded to."""
    return (torch.arange(grid[0], device=device)[:, None] * window[1] + torch.arange(grid[1], device=device)).flatten()


def _check_recomputed(ours: Tensor, theirs: Tensor, name: str, method: str) -> None:
    """The recomputed attention must give the module's output (a different forward would be silently wrong)."""
    a, b = ours.detach().float(), theirs.detach().float()
    tol = 1e-3 if theirs.dtype in (torch.float32, torch.float64) else 5e-2  # TF32 matmuls are ~1e-3
    scale = float(b.nan_to_num().abs().amax()) if b.numel() else 0.0
    if not torch.allclose(a, b, rtol=tol, atol=tol * max(scale, 1.0), equal_nan=True):
        raise RuntimeError(
            f"{method}: the attention recomputed for {name!r} does not reproduce the module's output (max "
            f"difference {float((a - b).abs().nan_to_num().amax()):.3g}); its forward is not the standard one "
            "(nn.MultiheadAttention's or torchvision's shifted_window_attention), so its weights cannot be read."
        )


@contextlib.contextmanager
def _hooks(
    model: nn.Module,
    kind: str,
    blocks: list[tuple[str, nn.Module]],
    method: str,
    size: tuple[int, ...],
    *,
    differentiable: bool,
) -> Iterator[_Recorder]:
    rec = _Recorder()
    attention = {id(m) for _, m in blocks}

    def store(index: int, name: str, weights: Tensor) -> None:
        if index in rec.weights:
            raise RuntimeError(
                f"{method}: attention module {name!r} ran more than once in one forward; its weights are ambiguous."
            )
        rec.weights[index] = weights
        rec.order.append(index)

    def mha_hook(index: int, name: str) -> Any:
        def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> Any:
            rec.started = True
            x = _self_attention_input(module, args, kwargs, name, method)
            out, weights = mha_attention(module, x)  # type: ignore[arg-type]
            fused = output[0] if isinstance(output, tuple) else output
            _check_recomputed(out, fused, name, method)
            store(index, name, weights)
            if differentiable:
                return (out, *output[1:]) if isinstance(output, tuple) else out
            return None

        return hook

    def swin_hook(index: int, name: str) -> Any:
        def hook(module: nn.Module, args: tuple[Any, ...], output: Tensor) -> Any:
            rec.started = True
            x = args[0]  # [B,h,w,C]
            wh, ww = module.window_size  # type: ignore[misc]
            if x.shape[1] > wh or x.shape[2] > ww:
                down = size[-2] // x.shape[1], size[-1] // x.shape[2]  # the input's pixels per last-stage token
                raise ValueError(
                    f"{method}: the last stage of {type(model).__name__} is a {x.shape[1]}x{x.shape[2]} token grid "
                    f"in {wh}x{ww} shifted windows ({name!r}) for inputs of {size[-2]}x{size[-1]} px, so its blocks "
                    "have no attention over the whole image. It is defined when the last stage fits in one window: "
                    f"inputs of at most {wh * down[0]}x{ww * down[1]} px here (swin_t: 224x224)."
                )
            out, weights = window_attention(module, x)
            _check_recomputed(out, output, name, method)
            rec.grid = (x.shape[1], x.shape[2])
            rec.real = None if rec.grid == (wh, ww) else window_tokens(rec.grid, (wh, ww), x.device)
            store(index, name, weights)
            return out if differentiable else None

        return hook

    def grid_hook(module: nn.Module, _args: Any, output: Any) -> None:
        if not rec.started and id(module) not in attention and isinstance(output, Tensor) and output.ndim >= 4:
            rec.grid = tuple(output.shape[2:])  # the patch embedding [B,D,h,w]

    handles = []
    try:
        for index, (name, module) in enumerate(blocks):
            if kind == "vit":
                handles.append(module.register_forward_hook(mha_hook(index, name), with_kwargs=True))
            else:
                handles.append(module.register_forward_hook(swin_hook(index, name)))
        if kind == "vit":
            handles += [m.register_forward_hook(grid_hook) for n, m in model.named_modules() if n]
        yield rec
    finally:
        for handle in handles:
            handle.remove()


def record_attention(
    model: nn.Module, inputs: Tensor, run: Run, method: str, *, differentiable: bool = False
) -> RecordedAttention:
    """One forward of ``inputs`` with the attention weights of every block read (see the module docstring).

    Raises:
        ValueError: If the model has no readable attention module, a Swin's last stage exceeds one window, or the
            tokens do not hold the patch grid.
        RuntimeError: If no attention module ran, or one ran twice in the forward.
    """
    kind, blocks = attention_modules(model, method)
    with _hooks(model, kind, blocks, method, tuple(inputs.shape[2:]), differentiable=differentiable) as rec:
        output = run.output(model, inputs)
    if not rec.order:
        names = ", ".join(repr(n) for n, _ in blocks[:3])
        raise RuntimeError(f"{method}: no attention module of {type(model).__name__} ran in the forward ({names}...).")
    weights = [rec.weights[i] for i in rec.order]
    tokens = weights[0].shape[-1] if rec.real is None else rec.real.numel()
    if rec.grid is None or math.prod(rec.grid) > tokens:
        raise ValueError(
            f"{method}: could not find the patch grid of {type(model).__name__}: it reads the spatial size of the "
            f"last [B, D, h, w] output before the first attention (the patch embedding), and found "
            f"{'none' if rec.grid is None else rec.grid} for {tokens} tokens."
        )
    return RecordedAttention(weights, rec.grid, tokens - math.prod(rec.grid), output, kind, rec.real)


def patch_row(relevance: Tensor, att: RecordedAttention) -> Tensor:
    """The map ``[B, 1, h, w]`` from a token relevance matrix ``[B, T, T]``: the class token's row over the patches.

    Without a class token (Swin, a ViT that averages its tokens) the output reads the mean of all tokens, so the
    map is the mean row.
    """
    rows = relevance[:, 0] if att.prefix else relevance.mean(1)  # [B,T]
    patches = rows[:, att.prefix :]  # [B,h*w]
    return patches.reshape(relevance.shape[0], 1, *att.grid)  # [B,1,h,w]
