"""Score-CAM ``top_k`` against exact mode on 8 photos: rank agreement of the maps and forwards saved.

Same model, target layer and photos as ``bench_methods.py`` (pretrained EfficientNet-Lite0, the 1280-channel
head, the 8 distinct scikit-image sample photos). For each input size, exact Score-CAM runs once over the 8
photos; then each ``top_k`` does. Reported per setting: Spearman between the approximate and the exact map
(min and mean over the photos), forward rows (masked inputs plus the plain forwards) and time as ratios to
exact mode. Takes about 10 minutes on a 2-core CPU at the defaults.

Usage: ``python benchmarks/study_topk.py [--sizes 160 224] [--top-k 16 32 64]``.
"""

from __future__ import annotations

import argparse
import time
from functools import partial

import numpy as np
import torch
from bench_methods import PHOTOS, counted_rows, load_images, load_model, spearman

from lightning_saliency.methods import ScoreCAM


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[160, 224])
    parser.add_argument("--top-k", type=int, nargs="+", default=[16, 32, 64])
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    model = load_model()
    print("| size | top_k | Spearman min | Spearman mean | forward rows / exact | time / exact |")
    print("|---|---|---|---|---|---|")
    for size in args.sizes:
        x = load_images(len(PHOTOS), size)
        with torch.no_grad():
            targets = model(x).argmax(1)
        start = time.perf_counter()
        exact, rows_exact = counted_rows(model, partial(ScoreCAM("_bn1", args.batch_size), model, x, targets))
        t_exact = time.perf_counter() - start
        for k in args.top_k:
            method = ScoreCAM("_bn1", args.batch_size, top_k=k)
            start = time.perf_counter()
            approx, rows = counted_rows(model, partial(method, model, x, targets))
            seconds = time.perf_counter() - start
            rho = spearman(approx[:, 0], exact[:, 0])
            print(
                f"| {size} | {k} | {min(rho):.3f} | {np.mean(rho):.3f} | {rows / rows_exact:.3f} "
                f"({rows} / {rows_exact}) | {seconds / t_exact:.3f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
