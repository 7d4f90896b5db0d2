"""Event-file bytes per logged epoch of the demo, with the placeholder ``write_probe_view`` and with the SALIENCY tab's.

    python benchmarks/bench_event_bytes.py [--epochs 5] [--train-size 1536] [--val-size 256]

Runs ``examples/train_shapes.py`` twice with the same arguments and seed, in temporary log directories: first with
the placeholder writer (it wrote nothing), then with :func:`lightning_saliency.tensorboard.summary.write_probe_view`.
Prints a markdown table: the event files' bytes, per logged epoch, and each plugin's share (the serialized summary
values: ``images`` are the monitor's grids, ``saliency`` what the tab reads), then how long ``write_probe_view``
took as a fraction of the monitor's own time per epoch (its ``saliency/time/total`` scalar), a ratio measured in the
same run.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import lightning_saliency.monitoring.sinks as sinks
from lightning_saliency.tensorboard.metadata import PLUGIN_NAME, parse_content
from lightning_saliency.tensorboard.summary import write_probe_view


def plugin_of(value: Any) -> str:
    """The plugin a summary value belongs to (torch's writer leaves the plugin name out of images and scalars)."""
    if value.metadata.plugin_data.plugin_name:
        return value.metadata.plugin_data.plugin_name
    if value.HasField("image"):
        return "images"
    if value.HasField("simple_value"):
        return "scalars"
    return "other"


def measure(logdir: Path) -> tuple[int, Counter[str], int, list[float]]:
    """Total bytes of the event files, bytes per plugin, logged epochs (``saliency/overview`` steps), monitor times."""
    from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader
    from tensorboard.compat.proto import event_pb2

    files = sorted(logdir.rglob("events.out.tfevents.*"))
    by_plugin: Counter[str] = Counter()
    epochs, totals = 0, []
    for path in files:
        for record in RawEventFileLoader(str(path)).Load():
            event = event_pb2.Event.FromString(record)
            for value in event.summary.value:
                by_plugin[plugin_of(value)] += value.ByteSize()
                content = parse_content(value.metadata.plugin_data.content)
                if plugin_of(value) == PLUGIN_NAME and content is not None:
                    by_plugin[f"{PLUGIN_NAME}:{content['kind']}"] += value.ByteSize()
                epochs += value.tag == "saliency/overview"
                if value.tag == "saliency/time/total":
                    totals.append(value.simple_value)
    return sum(p.stat().st_size for p in files), by_plugin, epochs, totals


def run_demo(argv: list[str], logdir: Path) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
    from train_shapes import main

    with contextlib.redirect_stdout(io.StringIO()):  # the demo's own report
        main([*argv, "--logdir", str(logdir)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--train-size", type=int, default=1536)
    parser.add_argument("--val-size", type=int, default=256)
    args = parser.parse_args()
    demo = ["--epochs", str(args.epochs), "--train-size", str(args.train_size), "--val-size", str(args.val_size)]

    writes: list[float] = []

    def placeholder(writer: Any, view: Any, step: int) -> None:
        """The writer before the SALIENCY tab: it wrote nothing."""

    def timed(writer: Any, view: Any, step: int) -> None:
        start = time.perf_counter()
        write_probe_view(writer, view, step)
        writes.append(time.perf_counter() - start)

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, writer in [("placeholder (before)", placeholder), ("write_probe_view (after)", timed)]:
            sinks.write_probe_view = writer  # what TensorBoardSink calls
            logdir = Path(tmp) / name.split()[0]
            run_demo(demo, logdir)
            results[name] = measure(logdir)
        sinks.write_probe_view = write_probe_view

    print(f"\nThe demo, {' '.join(demo)}:\n")
    print("| writer | event files | logged epochs | per logged epoch | images (grids) | scalars + text | saliency |")
    print("|---|---|---|---|---|---|---|")
    for name, (total, by_plugin, epochs, _) in results.items():
        rest = sum(v for k, v in by_plugin.items() if k not in ("images", "saliency") and ":" not in k)
        print(
            f"| {name} | {total:,} B | {epochs} | {total / max(epochs, 1):,.0f} B | "
            f"{by_plugin['images'] / max(epochs, 1):,.0f} B | {rest / max(epochs, 1):,.0f} B | "
            f"{by_plugin['saliency'] / max(epochs, 1):,.0f} B |"
        )
    before, after = (results[k][0] for k in results)
    _, by_plugin, epochs, totals = results["write_probe_view (after)"]
    print(
        f"\nGrowth: {after - before:+,} B in all ({(after - before) / max(epochs, 1):+,.0f} B per logged epoch, "
        f"{(after - before) / before:+.1%}); the tab's data is {by_plugin['saliency'] / by_plugin['images']:.1%} "
        "of the grids' bytes."
    )
    kinds = {kind: by_plugin[f"{PLUGIN_NAME}:{kind}"] for kind in ("map", "view", "probe")}
    print(
        f"The tab's data: maps {kinds['map'] / max(epochs, 1):,.0f} B and JSON {kinds['view'] / max(epochs, 1):,.0f} B "
        f"per logged epoch, probe images {kinds['probe']:,} B in all (written once)."
    )
    if writes and totals:
        share = sum(writes) / sum(totals[: len(writes)])
        print(
            f"write_probe_view: {share:.2%} of the monitor's own time per logged epoch ({len(writes)} calls; median "
            f"{1000 * statistics.median(writes):.1f} ms, the monitor {statistics.median(totals):.2f} s)."
        )


if __name__ == "__main__":
    main()
