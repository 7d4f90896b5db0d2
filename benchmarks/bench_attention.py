"""Cost of attention rollout and attention relevance as ratios to a forward and to the gradient method.

``python benchmarks/bench_attention.py [--batch 2] [--repeats 3]``: torchvision ``vit_b_16`` and ``swin_t``
(``weights=None``) at 224 px on the CPU; prints a markdown table of median-time ratios (no assertions).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from torchvision.models import swin_t, vit_b_16

from lightning_saliency import AttentionRelevance, AttentionRollout, Gradient


def median_time(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    x = torch.rand(args.batch, 3, 224, 224)
    targets = torch.arange(args.batch)
    print("| model | forward (s) | gradient / fwd | rollout / fwd | relevance / fwd | relevance / gradient |")
    print("|---|---|---|---|---|---|")
    for name, model in (("vit_b_16", vit_b_16(weights=None)), ("swin_t", swin_t(weights=None))):
        model.eval()
        with torch.no_grad():
            for p in model.parameters():  # torchvision's ViT head starts at zero: no gradient would flow
                if p.ndim == 2 and p.shape[0] == 1000:
                    p.normal_(0, 0.02)

        def forward(model=model) -> object:
            with torch.no_grad():
                return model(x)

        t_fwd = median_time(forward, args.repeats)
        t_grad = median_time(lambda model=model: Gradient()(model, x, targets), args.repeats)
        t_roll = median_time(lambda model=model: AttentionRollout()(model, x, targets), args.repeats)
        t_rel = median_time(lambda model=model: AttentionRelevance()(model, x, targets), args.repeats)
        print(
            f"| {name} | {t_fwd:.2f} | {t_grad / t_fwd:.2f} | {t_roll / t_fwd:.2f} | {t_rel / t_fwd:.2f} | "
            f"{t_rel / t_grad:.2f} |"
        )


if __name__ == "__main__":
    main()
