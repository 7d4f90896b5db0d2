"""Record what the demos log, and later check that a refactoring logs exactly the same.

    python scripts/saliency_baseline.py record /tmp/baseline.pt    # before the change
    python scripts/saliency_baseline.py compare /tmp/baseline.pt   # after it: exit 1 and a list of differences

Runs, with fixed seeds, into a temporary directory: the shapes demo (``examples/train_shapes.py``, its defaults:
5 epochs) and the pretrained example (``examples/pretrained_efficientnet.py --photos 3``: every registered method,
its default scores). It keeps every TensorBoard tag: scalars (``*/time/*`` excluded: seconds differ from run to
run), images (decoded pixels) and texts. ``compare`` reports tags that appeared or vanished, scalars that differ by
more than ``1e-6`` (relative to max(1, |value|)), images that are not pixel-identical and texts that differ.

The baseline holds floats of this machine's kernels: record and compare on the same machine and stack.
"""

from __future__ import annotations

import io
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
TOLERANCE = 1e-6


def _events(log_dir: Path) -> dict[str, dict[str, list[Any]]]:
    """``{"scalars": {tag: [(step, value)]}, "images": {tag: [(step, pixels)]}, "texts": {tag: [(step, text)]}}``."""
    out: dict[str, dict[str, list[Any]]] = {"scalars": {}, "images": {}, "texts": {}}
    for f in sorted(log_dir.rglob("events.out.tfevents.*")):
        run = f.parent.relative_to(log_dir).as_posix()
        acc = EventAccumulator(str(f), size_guidance={"images": 0, "scalars": 0, "tensors": 0})
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            if "/time/" not in tag:
                out["scalars"][f"{run}:{tag}"] = [(e.step, e.value) for e in acc.Scalars(tag)]
        for tag in acc.Tags()["images"]:
            out["images"][f"{run}:{tag}"] = [
                (e.step, np.asarray(Image.open(io.BytesIO(e.encoded_image_string)).convert("RGB")))
                for e in acc.Images(tag)
            ]
        for tag in acc.Tags()["tensors"]:
            if tag.endswith("text_summary"):
                out["texts"][f"{run}:{tag}"] = [
                    (e.step, e.tensor_proto.string_val[0].decode()) for e in acc.Tensors(tag)
                ]
    return out


def run_demos() -> dict[str, dict[str, list[Any]]]:
    """Run both demos (fixed seeds) into a temporary directory and return what they logged."""
    sys.path.insert(0, str(EXAMPLES))
    import pretrained_efficientnet
    import train_shapes

    with tempfile.TemporaryDirectory() as tmp:
        train_shapes.main(["--logdir", f"{tmp}/shapes"])
        torch.manual_seed(0)
        pretrained_efficientnet.main(["--photos", "3", "--logdir", f"{tmp}/pretrained"])
        return _events(Path(tmp))


def compare(baseline: dict[str, dict[str, list[Any]]], now: dict[str, dict[str, list[Any]]]) -> list[str]:
    """One line per difference between two :func:`run_demos` results (empty when they are the same)."""
    problems = []
    for kind in ("scalars", "images", "texts"):
        gone, new = sorted(set(baseline[kind]) - set(now[kind])), sorted(set(now[kind]) - set(baseline[kind]))
        problems += [f"{kind}: {tag} no longer logged" for tag in gone]
        problems += [f"{kind}: {tag} newly logged" for tag in new]
        for tag in sorted(set(baseline[kind]) & set(now[kind])):
            before, after = baseline[kind][tag], now[kind][tag]
            if [s for s, _ in before] != [s for s, _ in after]:
                problems.append(f"{kind}: {tag} steps {[s for s, _ in before]} -> {[s for s, _ in after]}")
                continue
            for (step, a), (_, b) in zip(before, after, strict=True):
                if kind == "scalars" and abs(a - b) > TOLERANCE * max(1.0, abs(a)):
                    problems.append(f"scalars: {tag} at step {step}: {a!r} -> {b!r}")
                elif kind == "images" and (a.shape != b.shape or not np.array_equal(a, b)):
                    detail = f"{a.shape} -> {b.shape}" if a.shape != b.shape else f"{int((a != b).any(2).sum())} px"
                    problems.append(f"images: {tag} at step {step} differs ({detail})")
                elif kind == "texts" and a != b:
                    problems.append(f"texts: {tag} at step {step} differs")
    return problems


def main(argv: list[str]) -> int:
    """``record PATH`` or ``compare PATH``; the exit status of the script."""
    if len(argv) != 2 or argv[0] not in ("record", "compare"):
        print(__doc__)
        return 2
    action, path = argv
    now = run_demos()
    if action == "record":
        torch.save(now, path)
        counts = {kind: len(tags) for kind, tags in now.items()}
        print(f"recorded {counts} to {path}")
        return 0
    problems = compare(torch.load(path, weights_only=False), now)
    for line in problems:
        print(line)
    same = "same tags, scalars (within 1e-6) and pixel-identical images"
    print(f"{len(problems)} difference(s)" if problems else same)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
