"""Score-CAM (Wang et al., "Score-CAM: Score-Weighted Visual Explanations for CNNs", CVPRW 2020).

Each channel ``A_k`` of the target layer is upsampled to the input size and min-max normalised into a mask
``H_k``; the model scores the masked input ``x * H_k``, and that score weighs the channel:
``L = ReLU(sum_k w_k A_k)``. It needs no gradients, only ``K`` forwards per image (``K`` channels).
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_saliency._checks import int_at_least
from lightning_saliency._chunking import is_out_of_memory, run_chunked
from lightning_saliency._reshape import Reshape
from lightning_saliency._runtime import Run
from lightning_saliency._shapes import interpolation, per_sample, spatial
from lightning_saliency.distributed import agreed
from lightning_saliency.layers import LayerSpec, capture_outputs
from lightning_saliency.methods.base import LayerMethod, run_gradient_pass
from lightning_saliency.methods.registry import register_method
from lightning_saliency.targets import Target, UndefinedForTarget

__all__ = ["ScoreCAM"]


@register_method("scorecam")
class ScoreCAM(LayerMethod):
    """Score-CAM, batched over images and channels, with the paper's weights or pytorch-grad-cam's.

    Steps: the target layer's activations ``A [B, K, h, w]`` (one forward); each channel upsampled bilinearly
    to the input size and min-max normalised to a mask in [0, 1] (a constant channel gives an all-zero mask);
    one forward of ``input * mask`` per (image, channel); channel weights ``w [B, K]`` from those forwards;
    map ``ReLU(sum_k w_k A_k)`` on the un-normalised layer-resolution activations, as the authors' code.

    ``weights``:

    * ``"probability"`` (the paper): ``w_k`` = softmax probability of the target class on the masked input.
      The paper's ``- f(X_b)`` baseline term is left out, as in the authors' code (haofanwang/Score-CAM) and
      in pytorch-grad-cam: the paper does not fix ``X_b``, and any per-image constant subtracted from all
      ``w_k`` would add a multiple of ``-sum_k A_k`` to the map.
    * ``"softmax_over_channels"`` (pytorch-grad-cam's ``ScoreCAM``): the target *logit* of each masked input,
      then a softmax over the channels of each image. Masks are then made as pytorch-grad-cam makes them
      (``align_corners=True`` upsampling, ``(U - min) / (max - min + 1e-8)``), so its maps are reproduced.

    Exact savings (outputs unchanged): masked forwards run under ``torch.inference_mode``; a channel that is
    constant at layer resolution gives the all-zero input whatever the image, so that input is scored once
    for the whole batch (on ReLU feature maps many channels are all-zero for a given image); channels whose maps
    are equal after min-max normalisation give the same mask, scored once (paper weights); on CPU the masked
    inputs go channels-last, oneDNN's preferred layout (the same math up to float rounding; a model that
    rejects the layout gets the default one).

    ``top_k`` (approximate, opt-in): per image, at most ``top_k`` masked inputs are scored, and every other
    non-constant channel borrows the score of the scored channel whose min-max normalised layer map is nearest
    (Euclidean). The weight is a function of the mask alone, so channels with equal maps have equal weights (the
    exact saving above) and channels with nearby maps nearly equal ones. Chosen channels: ``ceil(top_k / 2)``
    with the largest Grad-CAM weight (spatially averaged gradient of the target logit, one extra forward and
    gradient pass), as they tend to carry the class; the rest are medoids of a k-means clustering (deterministic,
    seeded in Grad-CAM order) of the remaining channels' normalised maps, so that every kind of mask has a scored
    neighbour. Constant channels keep their exact weight. On a pretrained EfficientNet-Lite0 head (1280 channels,
    8 photos at 160 and 224 px) ``top_k=32`` gave Spearman >= 0.95 (mean 0.98) to the exact map with 18x fewer
    forwards. Where a few channels with large maps carry most of the weight, the map of that image can be further
    off (0.92 with ``top_k=64`` on one photo), so a larger ``top_k`` is not always closer; see
    ``benchmarks/README.md``.

    Peak memory beyond the model's weights: one forward (no autograd graph) of ``batch_size`` masked inputs,
    i.e. ``batch_size`` inputs ``[C, H, W]`` and their activations, plus ``batch_size`` fp32 masks
    ``[H, W]`` and the layer activations ``[B, K, h, w]``; never all ``B * K`` masked inputs at once.
    With ``top_k`` add one gradient pass over the ``B`` inputs.

    Args:
        target_layer: ``"auto"`` (the last feature map before global pooling), a dotted name, or a module.
        batch_size: Masked inputs per forward (from any images of the batch).
        weights: ``"probability"`` (paper) or ``"softmax_over_channels"`` (pytorch-grad-cam).
        top_k: Score at most this many channels per image, the others borrow the nearest scored channel's
            score (approximate); ``None`` scores all (exact).
        reshape: How the layer's output (and gradient) become ``[B, K, h, w]``: ``"auto"`` recognises ViT tokens
            and channels-last Swin maps, ``None`` leaves them, or a callable (see :class:`CAMMethod`).
        name: Label in logs (default ``"scorecam"``).

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        >>> ScoreCAM(batch_size=8)(net, torch.rand(2, 3, 8, 8), torch.tensor([0, 3])).shape
        torch.Size([2, 1, 8, 8])
    """

    WEIGHTS: ClassVar[tuple[str, ...]] = ("probability", "softmax_over_channels")

    def __init__(
        self,
        target_layer: LayerSpec = "auto",
        batch_size: int = 32,
        weights: str = "probability",
        top_k: int | None = None,
        *,
        reshape: Reshape = "auto",
        name: str | None = None,
    ) -> None:
        super().__init__(target_layer=target_layer, reshape=reshape, name=name)
        int_at_least(batch_size, 1, "batch_size", "masked inputs per forward")
        if weights not in self.WEIGHTS:
            raise ValueError(f"weights must be one of {', '.join(map(repr, self.WEIGHTS))}, got {weights!r}.")
        if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
            raise ValueError(f"top_k must be None (score every channel) or an int >= 1, got {top_k!r}.")
        self.batch_size, self.weights, self.top_k = batch_size, weights, top_k

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.label!r}, batch_size={self.batch_size}, weights={self.weights!r}, "
            f"top_k={self.top_k})"
        )

    def compute(self, model: nn.Module, inputs: Tensor, targets: Target, run: Run) -> Tensor:
        """``ReLU(sum_k w_k A_k)``, ``[B, 1, h, w]`` at the target layer's resolution."""
        if self.weights == "probability" and not targets.has_confidence:
            raise UndefinedForTarget(
                f"{self.label} (weights='probability', the paper's) weighs each channel by the target's probability, "
                f"which {type(targets).__name__} does not define (its output is unbounded). Use "
                "ScoreCAM(weights='softmax_over_channels'), pytorch-grad-cam's: the target's score, softmax over "
                "channels."
            )
        layer = self.layer(model, inputs, run)
        size = (inputs.shape[-2], inputs.shape[-1])
        selected: Tensor | None = None
        if self.top_k is not None:
            p = run_gradient_pass(model, inputs, targets, [layer], run, input_grads=False)
            acts = self.feature_map(p.activations[layer], layer, size)  # [B,K,h,w] fp32
            grads = self.reshaped(p.layer_grads[layer], layer, size)
            criterion = grads.mean(spatial(grads))  # [B,K] Grad-CAM weights
            del p
        else:
            with torch.inference_mode(), capture_outputs([layer]) as captured:
                logits = run.output(model, inputs)
            targets.check(logits)
            if captured[0] is None:
                raise RuntimeError(
                    f"Target layer {type(layer).__name__} did not run in the forward; choose a layer on the path "
                    "from the input to the logits."
                )
            acts = captured[0].float().clone()  # a normal tensor (cloned outside inference mode)
            acts = self.feature_map(acts, layer, size)  # [B,K,h,w]
        # Which channels are forwarded sets the number of forwards: under a sharded model every rank takes rank 0's.
        constant = agreed(acts.flatten(2).amax(2) == acts.flatten(2).amin(2))  # [B,K]
        proxy: Tensor | None = None
        if self.top_k is not None and self.top_k < int((~constant).sum(1).max()):
            selected, proxy = _choose_channels(acts, criterion, constant, self.top_k)  # [B,K], [B,K]
            selected = agreed(selected)
        with torch.inference_mode():
            scores = self._score(model, inputs, targets, acts, constant, selected, run)  # [B,K]
        scores = scores.clone()  # a normal tensor again
        if proxy is not None:
            scores = scores.gather(1, proxy)  # unscored channels borrow their nearest scored channel's score
        w = scores if self.weights == "probability" else scores.softmax(1)  # [B,K]
        return F.relu((per_sample(w, acts) * acts).sum(1, keepdim=True))  # [B,1,h,w]

    def _score(
        self,
        model: nn.Module,
        inputs: Tensor,
        targets: Target,
        acts: Tensor,
        constant: Tensor,
        selected: Tensor | None,
        run: Run,
    ) -> Tensor:
        """Per (image, channel) score of the masked input, ``[B, K]`` fp32 (unscored entries are 0)."""
        b, k = acts.shape[:2]
        size = tuple(inputs.shape[2:])  # (H, W), or (D, H, W)
        pgc = self.weights == "softmax_over_channels"
        scores = torch.zeros((b, k), device=acts.device)  # [B,K]
        if bool(constant.any()):  # every constant channel masks the input to zeros: one forward for the batch
            zero_logits = run.output(model, torch.zeros_like(inputs[:1])).float()  # [1,N]
            zero_scores = self._read(zero_logits.expand(b, *zero_logits.shape[1:]), targets)  # [B]
            scores = torch.where(constant, zero_scores[:, None], scores)
        todo = ~constant if selected is None else selected  # [B,K]
        img_idx, ch_idx = todo.nonzero(as_tuple=True)  # [P], [P]
        layer_shape = acts.shape[2:]  # (h, w), or (d, h, w)
        if pgc:  # pytorch-grad-cam's masks: upsample (align_corners=True), then normalise with +1e-8
            rep_img, rep_maps, inverse = img_idx, acts[img_idx, ch_idx][:, None], None  # [P,1,h,w]
        else:
            # Channels whose layer maps are equal after min-max normalisation (A_j = a A_k + b, a > 0; common for
            # sparse ReLU channels) give the same mask, since bilinear upsampling commutes with that map: score one.
            flat = acts[img_idx, ch_idx].flatten(1)  # [P,h*w]
            lo, hi = flat.amin(1, keepdim=True), flat.amax(1, keepdim=True)
            normalised = (flat - lo) / (hi - lo)  # non-constant channels only: hi > lo
            keys = torch.cat([img_idx[:, None].to(normalised.dtype), normalised], 1)  # [P,1+h*w]
            unique, inverse = torch.unique(keys, dim=0, return_inverse=True)  # [U,1+h*w], [P]
            ranks_inverse = agreed(inverse)  # rank 0's groups (a sharded model: the same forwards on every rank)
            if not torch.equal(ranks_inverse, inverse):  # grouped otherwise here (float differences): its groups
                inverse = ranks_inverse
                position = torch.arange(len(inverse), device=inverse.device)  # [P]
                first = torch.full((int(inverse.max()) + 1,), len(inverse), device=inverse.device)  # [U0]
                unique = keys[first.scatter_reduce_(0, inverse, position, "amin")]  # [U0,1+h*w] first members
            rep_img, rep_maps = unique[:, 0].long(), unique[:, 1:].view(-1, 1, *layer_shape)  # [U], [U,1,h,w]
        rep_scores = torch.zeros(rep_img.shape[0], device=acts.device)  # [U]
        layout = [torch.channels_last if inputs.device.type == "cpu" and inputs.dim() == 4 else torch.contiguous_format]

        def score_chunk(start: int, stop: int) -> None:
            bi = rep_img[start:stop]  # [n]
            mode = interpolation(len(size))
            up = F.interpolate(rep_maps[start:stop], size=size, mode=mode, align_corners=pgc)  # [n,1,H,W]
            lo = per_sample(up.flatten(1).amin(1), up)  # [n,1,1,1]
            hi = per_sample(up.flatten(1).amax(1), up)
            if pgc:
                masks = (up - lo) / (hi - lo + 1e-8)
            else:
                span = hi - lo
                masks = torch.where(span > 0, (up - lo) / span.clamp_min(1e-30), torch.zeros_like(up))
            masked = (inputs[bi].float() * masks).to(inputs.dtype)  # [n,C,H,W]
            rep_scores[start:stop] = self._read(self._masked_logits(model, masked, run, layout), targets[bi])

        # On out-of-memory the chunk is retried at half the size (results written by index: a retry overwrites).
        run_chunked(score_chunk, rep_img.numel(), self.batch_size, what="masked inputs")
        scores[img_idx, ch_idx] = rep_scores if inverse is None else rep_scores[inverse]
        return scores

    @staticmethod
    def _masked_logits(model: nn.Module, masked: Tensor, run: Run, layout: list[torch.memory_format]) -> Tensor:
        """Logits ``[n, N]`` (fp32) of masked inputs, channels-last where ``layout`` says so (on CPU).

        oneDNN's CPU convolutions prefer channels-last: 1.05-1.5x faster forwards on torchvision models and
        EfficientNet-Lite0, the same math up to float rounding. A model that cannot take that layout (e.g. a
        ``.view`` of a feature map) gets the default layout from then on (``layout`` is updated in place).
        """
        if layout[0] == torch.channels_last:
            try:
                return run.output(model, masked.contiguous(memory_format=torch.channels_last)).float()
            except RuntimeError as error:
                if is_out_of_memory(error):
                    raise  # the chunked loop halves the chunk
                layout[0] = torch.contiguous_format
        return run.output(model, masked).float()

    def _read(self, logits: Tensor, targets: Target) -> Tensor:
        """Each row's target confidence (paper: the class's softmax probability) or score (pgc: the logit), ``[n]``."""
        return targets.confidence(logits) if self.weights == "probability" else targets.score(logits)


def _choose_channels(acts: Tensor, criterion: Tensor, constant: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Per image, the ``k`` channels to score and, for every channel, the channel whose score it takes.

    Half (rounded up) are the non-constant channels with the largest ``criterion``; the rest are k-means
    medoids of the other channels' min-max normalised maps. Returns ``selected [B, K]`` (bool) and
    ``proxy [B, K]`` (long): a scored or constant channel is its own proxy, any other channel's proxy is the
    selected channel with the nearest normalised map.
    """
    b, n = constant.shape
    flat = acts.flatten(2)  # [B,K,h*w]
    lo, hi = flat.amin(2, keepdim=True), flat.amax(2, keepdim=True)
    unit = (flat - lo) / (hi - lo).clamp_min(1e-30)  # [B,K,h*w]; constant channels are never compared
    selected = torch.zeros_like(constant)  # [B,K]
    proxy = torch.arange(n, device=acts.device).repeat(b, 1)  # [B,K]
    n_top = (k + 1) // 2
    for i in range(b):
        candidates = (~constant[i]).nonzero()[:, 0]  # [R]
        if candidates.numel() <= k:
            selected[i, candidates] = True
            continue
        ranked = candidates[criterion[i, candidates].argsort(descending=True, stable=True)]  # [R]
        rest = ranked[n_top:]  # [R-n_top], in criterion order
        chosen = torch.cat([ranked[:n_top], rest[_kmeans_medoids(unit[i, rest], k - n_top)]])  # [<=k]
        selected[i, chosen] = True
        nearest = _distances(unit[i, candidates], unit[i, chosen]).argmin(1)  # [R]
        proxy[i, candidates] = chosen[nearest]
        proxy[i, chosen] = chosen  # ties at distance 0 (equal maps) could point elsewhere: a scored map is its own
    return selected, proxy


def _kmeans_medoids(points: Tensor, n: int, iterations: int = 10) -> Tensor:
    """Indices of the medoids (member nearest its centre) of ``<= n`` k-means clusters of ``points [R, D]``.

    Deterministic: the centres start at the first ``n`` distinct points (so equal maps never share a start);
    Lloyd iterations stop early once stable. Empty clusters are dropped.
    """
    if n < 1:
        return torch.zeros(0, dtype=torch.long, device=points.device)
    unique, inverse = torch.unique(points, dim=0, return_inverse=True)  # [U,D], [R]
    position = torch.arange(points.shape[0], device=points.device)  # [R]
    first = torch.full((unique.shape[0],), points.shape[0], device=points.device)
    first = first.scatter_reduce_(0, inverse, position, "amin")  # [U] where each distinct point first occurs
    seeds = first.sort().values[:n]  # [n']
    centres, n = points[seeds].clone(), seeds.numel()  # [n',D]
    for _ in range(iterations):
        assign = _distances(points, centres).argmin(1)  # [R]
        sums = torch.zeros_like(centres).index_add_(0, assign, points)  # [n,D]
        counts = torch.bincount(assign, minlength=n)[:, None]  # [n,1]
        updated = torch.where(counts > 0, sums / counts.clamp_min(1), centres)
        if torch.equal(updated, centres):
            break
        centres = updated
    dist = _distances(points, centres)  # [R,n]
    assign = dist.argmin(1)  # [R]
    members = assign[:, None] == torch.arange(n, device=points.device)  # [R,n]
    medoids = dist.masked_fill(~members, float("inf")).argmin(0)  # [n]
    return medoids[members.any(0)]


def _distances(a: Tensor, b: Tensor) -> Tensor:
    """Euclidean distances ``[len(a), len(b)]``, computed directly (no matrix-product shortcut: exact zeros)."""
    return torch.cdist(a[None], b[None], compute_mode="donot_use_mm_for_euclid_dist")[0]
