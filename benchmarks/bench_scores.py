"""Speed of ROAD and Integrated Gradients against the peers' (one run, markdown table).

ROAD: ours (conjugate gradients in torch, all images x levels x channels batched) vs pytorch-grad-cam's
``ROADCombined`` (the authors' scipy ``spsolve`` per image and level) on the same maps (Grad-CAM of the same model)
and model. Integrated Gradients: ours vs captum's ``IntegratedGradients`` (same steps and rule, same internal batch
size). Model: torchvision ``resnet18(weights=None)``, seeded, eval; inputs seeded noise. Timings are the median of
``--repeats`` runs after a warm-up; agreement is reported next to each ratio. Defaults run in about a minute on a
2-core CPU (shared machines: use ``--repeats 3`` for steadier ratios).

Usage: ``python benchmarks/bench_scores.py [--images 4] [--size 64] [--steps 32] [--repeats 3]``.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch
from captum.attr import IntegratedGradients as CaptumIG
from pytorch_grad_cam.metrics.road import ROADCombined as PgcROAD
from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget
from torchvision.models import resnet18

from lightning_saliency.methods import GradCAM, IntegratedGradients
from lightning_saliency.metrics import road_curves, road_score


def median_time(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (shared CPUs: keep 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    model = resnet18(weights=None, num_classes=10).eval()
    generator = torch.Generator().manual_seed(0)
    inputs = torch.rand(args.images, 3, args.size, args.size, generator=generator)
    targets = torch.randint(0, 10, (args.images,), generator=generator)
    maps = GradCAM(target_layer="layer3")(model, inputs, targets)
    rows: list[tuple[str, str, str, str]] = []

    # ROAD: identical imputations need noise 0 on both sides (pgc draws its noise from the global RNG).
    cams = maps[:, 0].numpy()
    softmax = [ClassifierOutputSoftmaxTarget(int(t)) for t in targets]
    peer_model = copy.deepcopy(model)

    def ours_road() -> torch.Tensor:
        return road_score(model, inputs, targets, maps)

    def pgc_road() -> np.ndarray:
        return PgcROAD()(inputs, cams, softmax, peer_model)

    t_ours, t_pgc = median_time(ours_road, args.repeats), median_time(pgc_road, args.repeats)
    torch.manual_seed(0)
    diff = float(np.abs(ours_road().numpy() - pgc_road()).max())
    morf, lerf = road_curves(model, inputs, targets, maps, noise=0.0)
    rows.append(
        (
            f"ROAD combined, 9 levels, {args.images} x {args.size}px",
            f"{t_ours:.2f} s",
            f"{t_pgc:.2f} s ({t_pgc / t_ours:.1f}x ours)",
            f"max abs score diff {diff:.1e} (noise 0.01, independent draws)",
        )
    )

    ig = IntegratedGradients(steps=args.steps, internal_batch_size=64)
    captum_ig = CaptumIG(copy.deepcopy(model))

    def ours_ig() -> torch.Tensor:
        return ig.attributions(model, inputs, targets)

    def captum_run() -> torch.Tensor:
        x = inputs.clone()
        return captum_ig.attribute(x, target=targets, n_steps=args.steps, internal_batch_size=64).detach()

    t_ours, t_cap = median_time(ours_ig, args.repeats), median_time(captum_run, args.repeats)
    a, b = ours_ig(), captum_run()
    rel = float((a - b).abs().max() / b.abs().max())
    rows.append(
        (
            f"Integrated Gradients, {args.steps} steps, {args.images} x {args.size}px",
            f"{t_ours:.2f} s",
            f"{t_cap:.2f} s ({t_cap / t_ours:.1f}x ours)",
            f"max abs diff / max abs attribution {rel:.1e}",
        )
    )

    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), resnet18(weights=None), "
        f"median of {args.repeats}"
    )
    print()
    print("| what | ours | peer | agreement |")
    print("|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print()
    print(f"(ROAD curves, noise 0: mean MoRF {morf.mean():.3f}, mean LeRF {lerf.mean():.3f})")


if __name__ == "__main__":
    main()
