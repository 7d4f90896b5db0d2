"""Attention rollout and gradient-weighted attention relevance on torchvision's ViT and Swin.

The references are written independently of the package: torchvision's ViT forward re-implemented with each head's
attention computed in a plain loop (``A`` is what the logits are computed from, so its gradient exists), jacobgil's
vit-explain rollout transcribed per image, Chefer et al.'s rule in a loop per image, and for Swin the attention
``shifted_window_attention`` itself computes, caught at its ``softmax``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import lightning as L
import numpy as np
import pytest
import torch
from _lightning_models import assert_same_training, loaders, read_events, train_state, trainer
from conftest import make_tiny_vit
from test_hardening import assert_no_hooks, assert_untouched, check_maps, snapshot
from torch import Tensor, nn
from torchvision.models import swin_t, vit_b_16
from torchvision.models.swin_transformer import PatchMergingV2, SwinTransformer, SwinTransformerBlockV2
from torchvision.models.vision_transformer import VisionTransformer

from lightning_saliency import (
    AttentionRelevance,
    AttentionRollout,
    GradCAM,
    Gradient,
    MultiLabelTarget,
    Precision,
    RegressionTarget,
    SaliencyMonitor,
    compute_saliency,
)
from lightning_saliency._attention import attention_modules, mha_attention, record_attention, window_attention
from lightning_saliency.methods import Run
from lightning_saliency.methods.chefer import attention_relevance
from lightning_saliency.methods.rollout import attention_rollout
from lightning_saliency.targets import ClassTarget, Target

# ------------------------------------------------------------------------------------------------------------ models


def small_vit(image_size: int = 64, patch_size: int = 16, num_classes: int = 10) -> VisionTransformer:
    torch.manual_seed(0)
    model = VisionTransformer(
        image_size=image_size,
        patch_size=patch_size,
        num_layers=3,
        num_heads=4,
        hidden_dim=32,
        mlp_dim=64,
        num_classes=num_classes,
    )
    with torch.no_grad():  # torchvision zero-initialises the head: every gradient would be 0
        model.heads.head.weight.normal_(0, 0.5)
    return model.eval()


def small_swin(v2: bool = False) -> SwinTransformer:
    """Three stages; at 64 px the last is a 4x4 grid in one 4x4 window (two blocks, the second's shift set to 0).

    ``v2``: Swin V2's blocks (cosine attention, log-spaced position bias) and patch merging, as ``swin_v2_t``.
    """
    torch.manual_seed(0)
    v2_parts = {"block": SwinTransformerBlockV2, "downsample_layer": PatchMergingV2} if v2 else {}
    return SwinTransformer(
        patch_size=[4, 4],
        embed_dim=16,
        depths=[1, 1, 2],
        num_heads=[1, 2, 2],
        window_size=[4, 4],
        num_classes=10,
        **v2_parts,
    ).eval()


def images(batch: int = 2, height: int = 64, width: int = 64, seed: int = 0) -> Tensor:
    return torch.rand(batch, 3, height, width, generator=torch.Generator().manual_seed(seed))


# -------------------------------------------------------------------------------------------------------- references


def reference_vit(model: VisionTransformer, x: Tensor) -> tuple[Tensor, list[Tensor]]:
    """torchvision's ``VisionTransformer.forward`` with each head's attention in a loop: logits and ``[B,h,T,T]``."""
    t = model._process_input(x)
    t = torch.cat([model.class_token.expand(x.shape[0], -1, -1), t], 1) + model.encoder.pos_embedding
    attentions = []
    for block in model.encoder.layers:
        y = block.ln_1(t)
        mha = block.self_attention
        d = y.shape[-1] // mha.num_heads
        wq, wk, wv = mha.in_proj_weight.chunk(3)
        bq, bk, bv = mha.in_proj_bias.chunk(3)
        heads = range(mha.num_heads)
        qs = [y @ wq[h * d : (h + 1) * d].T + bq[h * d : (h + 1) * d] for h in heads]
        ks = [y @ wk[h * d : (h + 1) * d].T + bk[h * d : (h + 1) * d] for h in heads]
        vs = [y @ wv[h * d : (h + 1) * d].T + bv[h * d : (h + 1) * d] for h in heads]
        scores = [q @ k.transpose(1, 2) / math.sqrt(d) for q, k in zip(qs, ks, strict=True)]
        a = torch.stack([torch.softmax(score, -1) for score in scores], 1)
        attentions.append(a)
        o = torch.cat([a[:, h] @ vs[h] for h in heads], -1) @ mha.out_proj.weight.T + mha.out_proj.bias
        t = t + o
        t = t + block.mlp(block.ln_2(t))
    return model.heads(model.encoder.ln(t)[:, 0]), attentions


def jacobgil_rollout(attentions: list[Tensor], discard_ratio: float, head_fusion: str) -> np.ndarray:
    """vit-explain's ``rollout`` (jacobgil), one image ``[1, heads, T, T]`` per block, transcribed.

    One change: vit-explain divides by ``a.sum(dim=-1)`` without ``keepdim`` (broadcast over columns, not rows); the
    paper and this package normalise rows.
    """
    result = torch.eye(attentions[0].size(-1))
    with torch.no_grad():
        for attention in attentions:
            if head_fusion == "mean":
                attention_heads_fused = attention.mean(axis=1)
            elif head_fusion == "max":
                attention_heads_fused = attention.max(axis=1)[0]
            else:
                attention_heads_fused = attention.min(axis=1)[0]
            flat = attention_heads_fused.view(attention_heads_fused.size(0), -1)
            _, indices = flat.topk(int(flat.size(-1) * discard_ratio), -1, False)
            indices = indices[indices != 0]
            flat[0, indices] = 0
            eye = torch.eye(attention_heads_fused.size(-1))
            a = (attention_heads_fused + 1.0 * eye) / 2
            a = a / a.sum(dim=-1, keepdim=True)
            result = torch.matmul(a, result)
    mask = result[0, 0, 1:]
    width = int(mask.size(-1) ** 0.5)
    mask = mask.reshape(width, width).numpy()
    return mask / np.max(mask)


def chefer_reference(
    attentions: list[Tensor], score: Tensor, row: Callable[[Tensor], Tensor], real: Tensor | None = None
) -> Tensor:
    """Chefer et al. (ICCV'21) for one image: ``R = I; R += mean_h((dS/dA * A)^+) @ R``; the map is ``row(R)``.

    ``real``: the tokens kept (of a padded Swin window), or all.
    """
    grads = torch.autograd.grad(score, attentions)
    keep = torch.arange(attentions[0].shape[-1]) if real is None else real
    relevance = torch.eye(keep.numel())
    for a, g in zip(attentions, grads, strict=True):
        cam = (g[0] * a[0])[:, keep][:, :, keep].clamp(min=0).mean(0)
        relevance = relevance + cam @ relevance
    return row(relevance)


def swin_last_stage_attention(
    model: SwinTransformer, x: Tensor, monkeypatch: pytest.MonkeyPatch
) -> tuple[Tensor, list[Tensor], tuple[int, int], Tensor]:
    """Logits, the last stage's window attention as ``shifted_window_attention`` computes it (the tensors its output
    is computed from), the stage's grid and the indices of its real tokens in the window."""
    caught: list[Tensor] = []
    softmax = torch.nn.functional.softmax

    def catching(*args, **kwargs):
        out = softmax(*args, **kwargs)
        caught.append(out)
        return out

    grid: list[tuple[int, int]] = []
    stage = model.features[-1]
    handle = stage.register_forward_pre_hook(lambda _m, args: grid.append(tuple(args[0].shape[1:3])))
    with monkeypatch.context() as patch:
        patch.setattr(torch.nn.functional, "softmax", catching)
        logits = model(x)
    handle.remove()
    (h, w), window = grid[0], stage[0].attn.window_size
    real = (torch.arange(h)[:, None] * window[1] + torch.arange(w)).flatten()
    last = caught[-len(stage) :]
    assert all(a.shape[0] == x.shape[0] for a in last), "one window per image in the last stage"
    return logits, last, (h, w), real


def plain_rollout_mean_row(attentions: list[Tensor], head_fusion: str) -> Tensor:
    """Rollout for a model without class token, one image: the mean row of the product (no discarding)."""
    result = torch.eye(attentions[0].shape[-1])
    for attention in attentions:
        fused = attention[0].mean(0) if head_fusion == "mean" else attention[0].max(0)[0]
        a = (fused + torch.eye(fused.shape[-1])) / 2
        result = (a / a.sum(-1, keepdim=True)) @ result
    return result.mean(0)


def raw(method, model: nn.Module, x: Tensor, target: Target | Tensor) -> Tensor:
    """The method's map before upsampling and normalisation, ``[B, 1, h, w]``."""
    target = target if isinstance(target, Target) else ClassTarget(target)
    with torch.enable_grad():
        return method.compute(model, x, target, Run()).detach()


# ------------------------------------------------------------------------------------------- reading the attention


def test_recomputed_attention_equals_need_weights_and_the_fused_output():
    torch.manual_seed(0)
    for mha, x in [
        (small_vit().encoder.layers[0].self_attention, torch.randn(2, 17, 32)),  # batch_first, as torchvision's
        (nn.MultiheadAttention(24, 3).eval(), torch.randn(9, 2, 24)),  # [T, B, D]
    ]:
        with torch.no_grad():
            fused, none = mha(x, x, x, need_weights=False)
            reference, weights = mha(x, x, x, need_weights=True, average_attn_weights=False)
            out, ours = mha_attention(mha, x)
        assert none is None
        tokens = x.shape[1] if mha.batch_first else x.shape[0]
        assert ours.shape == weights.shape == (2, mha.num_heads, tokens, tokens)
        torch.testing.assert_close(ours, weights, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(out, fused, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(out, reference, rtol=1e-5, atol=1e-5)


def test_hooked_forward_equals_the_model_and_reads_the_reference_attention():
    model = small_vit()
    x = images()
    with torch.no_grad():
        expected = model(x)
    ref_logits, ref_attention = reference_vit(model, x)
    torch.testing.assert_close(ref_logits, expected, rtol=1e-4, atol=1e-5)  # the reference is the model
    for differentiable in (False, True):
        with torch.set_grad_enabled(differentiable):
            att = record_attention(model, x, Run(), "test", differentiable=differentiable)
        assert (att.kind, att.grid, att.prefix) == ("vit", (4, 4), 1)
        assert len(att.weights) == 3
        assert att.weights[0].requires_grad is differentiable
        torch.testing.assert_close(att.output, expected, rtol=1e-5, atol=1e-5)  # the hooked output is the fused one
        for ours, ref in zip(att.weights, ref_attention, strict=True):
            torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6)
    assert_no_hooks(model)


@pytest.mark.parametrize("v2", [False, True], ids=["v1", "v2"])
def test_swin_window_attention_equals_torchvision(monkeypatch, v2):
    model = small_swin(v2)
    for size in [(64, 64), (48, 48), (48, 64)]:  # one window exactly; padded to it; non-square padded
        x = images(height=size[0], width=size[1])
        with torch.no_grad():
            logits, reference, grid, real = swin_last_stage_attention(model, x, monkeypatch)
            att = record_attention(model, x, Run(), "test", differentiable=True)
        assert (att.kind, att.prefix, att.grid) == ("swin", 0, grid)
        assert att.grid == (size[0] // 16, size[1] // 16)
        torch.testing.assert_close(att.output, logits, rtol=1e-5, atol=1e-5)
        for ours, ref in zip(att.weights, reference, strict=True):
            torch.testing.assert_close(att.tokens(ours), ref[:, :, real][:, :, :, real], rtol=1e-5, atol=1e-6)
        block = model.features[-1][1].attn  # the "shifted" block: one window, so torchvision's shift is 0
        assert block.shift_size == [2, 2]
        x_last = torch.randn(2, *grid, 64)
        out, _ = window_attention(block, x_last)
        torch.testing.assert_close(out, block(x_last), rtol=1e-5, atol=1e-5)
    assert_no_hooks(model)


def test_which_blocks_are_read():
    kind, blocks = attention_modules(small_swin(), "m")
    assert kind == "swin"
    assert [n for n, _ in blocks] == ["features.5.0.attn", "features.5.1.attn"], "the last stage only"
    kind, blocks = attention_modules(small_vit(), "m")
    assert (kind, len(blocks)) == ("vit", 3)


# ----------------------------------------------------------------------------------------- agreement with references


@pytest.mark.parametrize("head_fusion", ["mean", "max", "min"])
@pytest.mark.parametrize("discard_ratio", [0.0, 0.9])
def test_rollout_equals_jacobgil_vit_explain(head_fusion, discard_ratio):
    model = small_vit()
    x = images(3)
    method = AttentionRollout(head_fusion=head_fusion, discard_ratio=discard_ratio)
    ours = raw(method, model, x, torch.tensor([1, 2, 3]))
    assert ours.shape == (3, 1, 4, 4)
    for i in range(3):
        with torch.no_grad():
            _, attentions = reference_vit(model, x[i : i + 1])
        expected = jacobgil_rollout(attentions, discard_ratio, head_fusion)
        got = (ours[i, 0] / ours[i, 0].max()).numpy()
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert not np.allclose(got, got.mean()), "a non-trivial map"


def test_relevance_equals_chefer_reference_for_every_target():
    model = small_vit()
    x = images(3)
    targets: list[Target] = [
        ClassTarget(torch.tensor([1, 2, 3])),
        MultiLabelTarget(torch.tensor([3, 1, 8])),
        RegressionTarget(4),
    ]
    for target in targets:
        ours = raw(AttentionRelevance(), model, x, target)
        assert ours.shape == (3, 1, 4, 4)
        for i in range(3):
            logits, attentions = reference_vit(model, x[i : i + 1])
            score = target[i : i + 1].score(logits).sum()
            expected = chefer_reference(attentions, score, lambda r: r[0, 1:])
            torch.testing.assert_close(ours[i].flatten(), expected, rtol=1e-4, atol=1e-6, msg=repr(target))
        assert ours.flatten(1).std(1).min() > 0, "non-trivial maps"


@pytest.mark.parametrize("v2", [False, True], ids=["v1", "v2"])
def test_swin_rollout_and_relevance_equal_the_references(monkeypatch, v2):
    model = small_swin(v2)
    for size in [(64, 64), (48, 64)]:
        x = images(2, *size)
        classes = torch.tensor([3, 8])
        rollouts = {f: raw(AttentionRollout(head_fusion=f), model, x, classes) for f in ("mean", "max")}
        relevance = raw(AttentionRelevance(), model, x, classes)
        for i in range(2):
            logits, attentions, grid, real = swin_last_stage_attention(model, x[i : i + 1], monkeypatch)
            for fusion, maps in rollouts.items():
                expected = plain_rollout_mean_row([a.detach()[:, :, real][:, :, :, real] for a in attentions], fusion)
                torch.testing.assert_close(maps[i].flatten(), expected, rtol=1e-5, atol=1e-6)
            expected = chefer_reference(attentions, logits[0, classes[i]], lambda r: r.mean(0), real)
            torch.testing.assert_close(relevance[i].flatten(), expected, rtol=1e-4, atol=1e-6)
            assert relevance[i].shape == (1, *grid)


@pytest.mark.slow
def test_torchvision_vit_b_16_and_swin_t_at_224(monkeypatch):
    torch.manual_seed(0)
    vit = vit_b_16(weights=None).eval()
    with torch.no_grad():
        vit.heads.head.weight.normal_(0, 0.02)
    x = images(1, 224, 224)
    target = torch.tensor([7])
    rollout = raw(AttentionRollout(), vit, x, target)
    relevance = raw(AttentionRelevance(), vit, x, target)
    assert rollout.shape == relevance.shape == (1, 1, 14, 14)
    logits, attentions = reference_vit(vit, x)
    with torch.no_grad():
        torch.testing.assert_close(logits, vit(x), rtol=1e-4, atol=1e-4)
    expected = jacobgil_rollout([a.detach() for a in attentions], 0.0, "mean")
    np.testing.assert_allclose((rollout[0, 0] / rollout.max()).numpy(), expected, rtol=1e-4, atol=1e-6)
    expected_relevance = chefer_reference(attentions, logits[0, 7], lambda r: r[0, 1:])
    torch.testing.assert_close(relevance.flatten(), expected_relevance, rtol=1e-3, atol=1e-7)

    swin = swin_t(weights=None).eval()
    assert [n for n, _ in attention_modules(swin, "m")[1]] == ["features.7.0.attn", "features.7.1.attn"]
    maps = raw(AttentionRelevance(), swin, x, target)
    assert maps.shape == (1, 1, 7, 7)  # the last stage: 7x7 tokens, one 7x7 window at 224 px
    logits, attentions, _, real = swin_last_stage_attention(swin, x, monkeypatch)
    expected = chefer_reference(attentions, logits[0, 7], lambda r: r.mean(0), real)
    torch.testing.assert_close(maps.flatten(), expected, rtol=1e-3, atol=1e-7)
    with pytest.raises(ValueError, match=r"SwinTransformer is a 8x8 token grid in 7x7 shifted windows"):
        AttentionRollout()(swin, images(1, 256, 256), target)
    assert_no_hooks(swin)


# -------------------------------------------------------------------------------------------------- errors, state


@pytest.mark.parametrize("method", [AttentionRollout, AttentionRelevance])
def test_a_cnn_or_a_swin_beyond_one_window_is_a_clear_error_and_leaves_no_hook(method, make_cnn):
    cnn = make_cnn()
    with pytest.raises(ValueError, match=r"has no attention module.*TinyCNN|TinyCNN has no attention module"):
        method()(cnn, images(2, 32, 32), torch.tensor([0, 1]))
    assert_no_hooks(cnn)
    swin = small_swin()
    with pytest.raises(ValueError, match=r"SwinTransformer is a 8x8 token grid in 4x4 .*128x128 px.*at most 64x64 px"):
        method()(swin, images(2, 128, 128), torch.tensor([0, 1]))
    assert_no_hooks(swin)


class CrossAttention(nn.Module):
    def __init__(self, masked: bool) -> None:
        super().__init__()
        self.embed = nn.Conv2d(3, 8, 8, stride=8)
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
        self.masked = masked
        self.head = nn.Linear(8, 3)

    def forward(self, x: Tensor) -> Tensor:
        t = self.embed(x).flatten(2).transpose(1, 2)
        if self.masked:
            mask = torch.zeros(t.shape[1], t.shape[1], dtype=torch.bool)
            out, _ = self.attn(t, t, t, attn_mask=mask, need_weights=False)
        else:
            out, _ = self.attn(t, t + 1, t, need_weights=False)
        return self.head(out.mean(1))


@pytest.mark.parametrize(("masked", "match"), [(False, "cross-attention"), (True, "uses attn_mask")])
def test_attention_it_cannot_read_is_a_clear_error(masked, match):
    model = CrossAttention(masked).eval()
    with pytest.raises(ValueError, match=rf"attention_rollout: attention module 'attn' .*{match}"):
        AttentionRollout()(model, images(1, 32, 32), torch.tensor([0]))
    assert_no_hooks(model)


class Doubled(nn.MultiheadAttention):
    """Not the standard forward: its weights cannot be read by recomputing it."""

    def forward(self, *args, **kwargs):
        out, weights = super().forward(*args, **kwargs)
        return 2 * out, weights


def test_an_attention_module_with_another_forward_is_an_error_not_a_wrong_map():
    model = small_vit()
    block = model.encoder.layers[1]
    doubled = Doubled(32, 4, batch_first=True)
    doubled.load_state_dict(block.self_attention.state_dict())
    block.self_attention = doubled
    for method in (AttentionRollout(), AttentionRelevance()):
        with pytest.raises(RuntimeError, match=r"recomputed for 'encoder\.layers\.encoder_layer_1\.self_attention'"):
            method(model, images(1), torch.tensor([0]))
    assert_no_hooks(model)


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"head_fusion must be one of 'mean', 'max', 'min', got 'sum'"):
        AttentionRollout(head_fusion="sum")
    for bad in (1.0, -0.1, True, "0.5"):
        with pytest.raises(ValueError, match=r"discard_ratio must be a float in \[0, 1\)"):
            AttentionRollout(discard_ratio=bad)


@pytest.mark.parametrize("make", [small_vit, small_swin], ids=["vit", "swin"])
def test_model_untouched_maps_valid_and_inference_mode(make):
    model = make().train()
    model.get_submodule("heads" if isinstance(model, VisionTransformer) else "head").train(False)
    for p in list(model.parameters())[:3]:
        p.grad = torch.full_like(p, 0.5)
    x, targets = images(2), torch.tensor([1, 7])
    before = snapshot(model)
    expected = compute_saliency(model, x, targets, [AttentionRollout(), AttentionRelevance()])
    assert_untouched(before, model)
    assert_no_hooks(model)
    for maps in expected:
        check_maps(maps, x)
        assert (maps.flatten(1).amax(1) == 1).all()
    with torch.inference_mode():  # Lightning's validate()/test()
        again = compute_saliency(model, x.clone(), targets.clone(), [AttentionRollout(), AttentionRelevance()])
    for a, b in zip(again, expected, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    assert_untouched(before, model)


def test_with_the_gradient_family_in_one_call_equals_separate_calls():
    model = make_tiny_vit().eval()
    x, targets = images(3, 32, 32), torch.tensor([0, 2, 4])
    methods = [AttentionRollout(), AttentionRelevance(), Gradient(), GradCAM()]
    together = compute_saliency(model, x, targets, methods)
    for method, maps in zip(methods, together, strict=True):
        torch.testing.assert_close(maps, method(model, x, targets), rtol=0, atol=1e-5)


def test_bf16_autocast_is_used_and_close():
    model = small_vit()
    x, targets = images(2), torch.tensor([1, 7])
    bf16 = Precision(forward_context=lambda: torch.autocast("cpu", dtype=torch.bfloat16))
    for method in (AttentionRollout(), AttentionRelevance()):
        fp32, low = method(model, x, targets), method(model, x, targets, precision=bf16)
        check_maps(low, x)
        assert not torch.equal(fp32, low)
        assert (fp32 - low).abs().mean() < 0.05


def test_relevance_follows_the_class_rollout_does_not():
    model = small_vit()
    x = images(1)
    a, b = torch.tensor([1]), torch.tensor([2])
    assert torch.equal(AttentionRollout()(model, x, a), AttentionRollout()(model, x, b)), "class-agnostic"
    assert not torch.allclose(AttentionRelevance()(model, x, a), AttentionRelevance()(model, x, b))


def test_functions_on_hand_made_weights():
    eye = torch.eye(3)[None, None]  # every token attends to itself: rollout and relevance stay the identity
    torch.testing.assert_close(attention_rollout([eye, eye]), torch.eye(3)[None])
    torch.testing.assert_close(attention_relevance([eye], [-torch.ones_like(eye)]), torch.eye(3)[None])
    half = torch.tensor([[[[0.5, 0.5], [0.0, 1.0]]]])
    # (A + I) / 2 = [[0.75, 0.25], [0, 1]], rows already normalised; twice: [[0.5625, 0.4375], [0, 1]]
    torch.testing.assert_close(attention_rollout([half, half])[0], torch.tensor([[0.5625, 0.4375], [0.0, 1.0]]))


# ---------------------------------------------------------------------------------------------------- in a Trainer


class ViTClassifier(L.LightningModule):
    """conftest's hybrid ViT (BatchNorm in the trunk, Dropout in the head) as a 4-class LightningModule."""

    def __init__(self) -> None:
        super().__init__()
        self.net = make_tiny_vit(num_classes=4)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        return nn.functional.cross_entropy(self(x), y)

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x, y = batch
        self.log("val_loss", nn.functional.cross_entropy(self(x), y))

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self.validation_step(batch, batch_idx)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=1e-2)


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_training_a_vit_is_bit_identical_with_and_without_the_monitor(tmp_path, precision):
    base = train_state(tmp_path / "a", [], max_epochs=3, precision=precision, module=ViTClassifier)
    monitor = SaliencyMonitor(
        methods=["attention_rollout", "attention_relevance"], num_samples=4, targets="predicted", strict=True
    )
    other = train_state(tmp_path / "b", [monitor], max_epochs=3, precision=precision, module=ViTClassifier)
    assert set(monitor.last_maps) == {"attention_rollout", "attention_relevance"}, "the monitor must have run"
    assert all(float(m.amax()) == 1.0 for m in monitor.last_maps.values())
    assert_same_training(base, other)


@pytest.mark.parametrize("entry", ["validate", "test"])
def test_validate_and_test_under_inference_mode(tmp_path, entry):
    _, val = loaders()
    monitor = SaliencyMonitor(methods=["attention_rollout", "attention_relevance"], num_samples=3, strict=True)
    tr = trainer(tmp_path, [monitor], inference_mode=True)
    getattr(tr, entry)(ViTClassifier(), val, verbose=False)
    prefix = "saliency" if entry == "validate" else "saliency_test"
    assert len(read_events(tmp_path)["images"][f"{prefix}/attention_relevance"]) == 1
    for maps in monitor.last_maps.values():
        assert maps.shape == (3, 1, 16, 16)
        assert maps.max() == 1.0
        assert not torch.is_inference(maps)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:.*cpp_extension.*")
def test_compiled_model_equals_eager():
    model = make_tiny_vit().eval()
    compiled = torch.compile(model)
    x, targets = images(2, 32, 32), torch.tensor([1, 3])
    with torch.no_grad():
        compiled(x)
    for method in (AttentionRollout(), AttentionRelevance()):
        torch.testing.assert_close(method(compiled, x, targets), method(model, x, targets), rtol=0, atol=1e-6)
    assert_no_hooks(model)
