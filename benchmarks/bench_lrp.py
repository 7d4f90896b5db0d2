"""What the LRP methods cost against one plain forward and backward, and what a copy of the model would add.

The reference is what any gradient method must do at least: one forward and one ``torch.autograd.grad`` of the
target logits with respect to the input. Against it: zennit's own ``Gradient`` attributor with the same composite
and canonizer (what a user calling zennit pays), ``lrp_epsilon_plus_flat`` and ``lrp_alpha_beta`` (after a first
call: the check forward of the canonizers runs once per model), ``Gradient`` through the engine, and
``copy.deepcopy(model)`` alone: what running on a copy of the model per call would add (not needed: the canonizers
put the original tensors back, the weights stay bit-identical). Models: torchvision's ``vgg11_bn`` and ``resnet18``
(``weights=None``: the cost does not depend on the weights). The runs are interleaved (``--repeats`` rounds after one
warm-up round) so that drift of a shared machine's speed hits all of them alike; medians; only ratios are printed
(a markdown table).

Usage: ``python benchmarks/bench_lrp.py [--device cpu|cuda] [--batch 2] [--size 112] [--repeats 5]``.
"""

from __future__ import annotations

import argparse
import copy
import sys
from collections.abc import Callable
from pathlib import Path

import torch
import zennit.attribution
import zennit.composites
import zennit.torchvision
from torch import nn
from torchvision.models import resnet18, vgg11_bn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_gradient_pass import interleaved_ratios

from lightning_saliency.methods import Gradient, LRPAlphaBeta, LRPEpsilonPlusFlat, compute_saliency


def ratios(model: nn.Module, canonizer: type, inputs: torch.Tensor, repeats: int) -> dict[str, float]:
    """Median time of each run over the reference's, interleaved runs."""
    targets = torch.arange(inputs.shape[0], device=inputs.device) % 1000
    eps_plus, alpha_beta, gradient = LRPEpsilonPlusFlat(), LRPAlphaBeta(), Gradient()
    one_hot = torch.eye(1000, device=inputs.device)[targets]

    def reference() -> torch.Tensor:
        x = inputs.clone().requires_grad_(True)
        logits = model(x)
        (grad,) = torch.autograd.grad(logits.gather(1, targets[:, None]).sum(), x)
        return grad

    def zennit_direct() -> torch.Tensor:
        composite = zennit.composites.EpsilonPlusFlat(canonizers=[canonizer()])
        with zennit.attribution.Gradient(model, composite) as attributor:
            return attributor(inputs.clone(), one_hot)[1]

    runs: dict[str, Callable[[], object]] = {
        "forward + autograd.grad to the input (reference)": reference,
        "zennit Gradient + EpsilonPlusFlat + canonizer": zennit_direct,
        "lrp_epsilon_plus_flat": lambda: compute_saliency(model, inputs, targets, [eps_plus]),
        "lrp_alpha_beta": lambda: compute_saliency(model, inputs, targets, [alpha_beta]),
        "gradient": lambda: compute_saliency(model, inputs, targets, [gradient]),
        "copy.deepcopy(model) alone": lambda: copy.deepcopy(model),
    }
    return interleaved_ratios(runs, inputs.device, repeats)  # round 0 also runs the LRP canonizer check


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    torch.manual_seed(0)
    inputs = torch.randn(args.batch, 3, args.size, args.size)
    cases = {
        "vgg11_bn": (vgg11_bn(), zennit.torchvision.VGGCanonizer),
        "resnet18": (resnet18(), zennit.torchvision.ResNetCanonizer),
    }
    results = {}
    for case, (model, canonizer) in cases.items():
        results[case] = ratios(model.eval().to(device), canonizer, inputs.to(device), args.repeats)
    names = list(next(iter(results.values())))
    shape = tuple(inputs.shape)
    print(f"device {device}, images {shape}, median of {args.repeats} interleaved rounds; time / reference\n")
    print("| run | " + " | ".join(results) + " |\n|---|" + "---|" * len(results))
    for name in names:
        print(f"| {name} | " + " | ".join(f"{r[name]:.2f}" for r in results.values()) + " |")


if __name__ == "__main__":
    main()
