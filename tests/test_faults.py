"""Faults (issue 8): exceptions inside methods and scores, and out-of-memory retries with half the chunk."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from _lightning_models import TinyClassifier, loaders, read_events, trainer
from test_hardening import assert_no_hooks, assert_untouched, build, snapshot
from torch import Tensor, nn

import lightning_saliency.monitoring.scoring as scoring_module
from lightning_saliency import SaliencyMonitor, SaliencyWarning
from lightning_saliency._chunking import is_out_of_memory, run_chunked
from lightning_saliency.methods import GradCAM, ScoreCAM, compute_saliency
from lightning_saliency.metrics.functional.perturbation import average_drop, deletion_curve, insertion_curve
from lightning_saliency.metrics.functional.road import road_score

# ------------------------------------------------------------------------------------- exceptions in methods/scores


def error_texts(log_dir: Any) -> list[str]:
    """The method label each ``saliency/errors`` text entry names, in step order."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    labels = []
    for f in sorted(Path(log_dir).rglob("events.out.tfevents.*")):
        acc = EventAccumulator(str(f), size_guidance={"tensors": 0})
        acc.Reload()
        if "saliency/errors/text_summary" in acc.Tags()["tensors"]:
            for event in acc.Tensors("saliency/errors/text_summary"):
                text = event.tensor_proto.string_val[0].decode()
                labels.append(text.split("method '", 1)[1].split("'", 1)[0])
    return labels


class FailingClassifier(TinyClassifier):
    """Raises inside ``forward`` (after the trunk ran, so capture hooks have fired) when ``fail_next`` is set."""

    fail_next = False

    def forward(self, x: Tensor) -> Tensor:
        features = self.features(x)
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("forward exploded mid-way")
        return self.head(features)


class MidwayGradCAM(GradCAM):
    """Arms the model's failure just before the shared gradient pass (its hooks are then registered)."""

    def layers(self, model: nn.Module, inputs: Tensor, run: Any) -> list[nn.Module]:
        model.fail_next = True  # type: ignore[assignment]
        return super().layers(model, inputs, run)


class MidwayScoreCAM(ScoreCAM):
    """Fails at the second batch of masked forwards."""

    def _read(self, logits: Tensor, targets: Tensor) -> Tensor:
        self.calls = getattr(self, "calls", 0) + 1
        if self.calls % 3 == 2:
            raise RuntimeError("score-cam exploded mid-way")
        return super()._read(logits, targets)


@pytest.mark.parametrize("method", [MidwayGradCAM, lambda: MidwayScoreCAM(batch_size=4)])
def test_a_method_that_raises_midway_leaves_the_model_as_found(method):
    model = FailingClassifier(frozen_backbone=True).train()
    model.features.eval()
    inputs = torch.randn(4, 3, 16, 16)
    targets = torch.tensor([0, 1, 2, 3])
    with torch.no_grad():
        for p in model.parameters():
            p.grad = torch.full_like(p, 0.5)
    before = snapshot(model)
    with pytest.raises(RuntimeError, match="exploded mid-way"):
        compute_saliency(model, inputs, targets, [build("gradient"), method()])
    assert_no_hooks(model)
    assert_untouched(before, model)  # modes (a frozen eval backbone stays eval), weights, buffers, .grad


@pytest.mark.parametrize("method", ["gradcam", "scorecam"])
def test_a_method_raising_in_training_is_reported_once_and_training_continues(method, tmp_path):
    train, val = loaders()
    model = FailingClassifier(frozen_backbone=True)
    bad = MidwayGradCAM(name="bad") if method == "gradcam" else MidwayScoreCAM(batch_size=4, name="bad")
    monitor = SaliencyMonitor(methods=["gradient", bad], num_samples=4, scores=("average_drop",))
    tr = trainer(tmp_path, [monitor], max_epochs=3)
    match = r"the method 'bad' failed at epoch 0 \(validate\) and is left out of this epoch.*exploded mid-way"
    with pytest.warns(SaliencyWarning, match=match) as rec:
        tr.fit(model, train, val)
    assert sum(issubclass(w.category, SaliencyWarning) for w in rec) == 1
    # One failing method does not take the others: the gradient's maps and scores are logged every epoch.
    events = read_events(tmp_path)
    assert len(events["images"]["saliency/gradient"]) == 3
    assert "saliency/bad" not in events["images"]
    assert len(events["images"]["saliency/overview"]) == 3
    assert len(events["scalars"]["saliency/gradient/average_drop"]) == 3
    assert "saliency/bad/average_drop" not in events["scalars"]
    assert set(monitor.last_maps) == {"gradient"}
    assert error_texts(tmp_path) == 3 * ["bad"]  # a saliency/errors entry at each epoch, naming the method
    assert tr.current_epoch == 3
    assert tr.global_step == 3 * len(train)
    assert_no_hooks(model)
    assert not any(model.backbone_modes), "the frozen backbone must stay in eval mode"
    assert all(p.grad is None for p in model.features.parameters())

    model.fail_next = False
    strict = SaliencyMonitor(methods=["gradient", bad], num_samples=4, scores=(), strict=True)
    with pytest.raises(RuntimeError, match="exploded mid-way"):
        trainer(tmp_path / "strict", [strict], max_epochs=1).fit(model, train, val)
    assert_no_hooks(model)


def test_a_score_raising_in_training_is_reported_once_and_training_continues(tmp_path, monkeypatch):
    real = scoring_module.compute_scores
    calls: list[list[str]] = []

    def exploding(*args: Any, **kwargs: Any) -> Any:
        names = list(args[1])
        calls.append(names)
        if "insertion" in names:
            raise RuntimeError("insertion score exploded")
        return real(*args, **kwargs)

    monkeypatch.setattr(scoring_module, "compute_scores", exploding)
    train, val = loaders()
    model = TinyClassifier(frozen_backbone=True)
    monitor = SaliencyMonitor(
        methods=["gradient", "gradcam"], num_samples=2, scores=("deletion", "insertion"), score_steps=2
    )
    tr = trainer(tmp_path, [monitor], max_epochs=2)
    match = "the score 'insertion' of method '(gradient|gradcam)' failed.*RuntimeError: insertion score exploded"
    with pytest.warns(SaliencyWarning, match=match) as rec:
        tr.fit(model, train, val)
    # One warning per distinct failure (the same score of each method), not one per epoch.
    assert sum(issubclass(w.category, SaliencyWarning) for w in rec) == 2
    assert [names for names in calls if "deletion" in names], "deletion ran before insertion failed"
    scalars = read_events(tmp_path)["scalars"]
    for label in ("gradient", "gradcam"):  # the other score of every method is still logged, every epoch
        assert len(scalars[f"saliency/{label}/deletion"]) == 2
        assert f"saliency/{label}/insertion" not in scalars
    assert set(monitor.last_scores["gradcam"]) == {"deletion"}
    assert tr.current_epoch == 2
    assert_no_hooks(model)
    assert not any(model.backbone_modes)

    strict = SaliencyMonitor(methods=["gradient"], num_samples=2, scores=("insertion",), strict=True)
    with pytest.raises(RuntimeError, match="insertion score exploded"):
        trainer(tmp_path / "strict", [strict], max_epochs=1).fit(model, train, val)
    assert_no_hooks(model)


# ------------------------------------------------------------------------------------- out of memory


def test_run_chunked_halves_the_chunk_on_out_of_memory_and_keeps_the_order():
    sizes: list[int] = []

    def fn(start: int, stop: int) -> list[int]:
        sizes.append(stop - start)
        if stop - start > 3:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.00 GiB")
        return list(range(start, stop))

    chunks = run_chunked(fn, 10, 16)
    assert [i for c in chunks for i in c] == list(range(10))
    assert sizes == [10, 5, 2, 2, 2, 2, 2]  # 10 fails, 5 fails, then chunks of 2 for the rest


@pytest.mark.parametrize(
    "error",
    [
        RuntimeError("CUDA out of memory. Tried to allocate"),
        RuntimeError("[enforce fail] DefaultCPUAllocator: out of memory"),
    ],
)
def test_runtime_errors_saying_out_of_memory_are_retried(error):
    sizes: list[int] = []

    def fn(start: int, stop: int) -> int:
        sizes.append(stop - start)
        if stop - start > 1:
            raise error
        return start

    assert is_out_of_memory(error)
    assert run_chunked(fn, 3, 4) == [0, 1, 2]
    assert sizes == [3, 1, 1, 1]


def test_other_errors_are_not_retried():
    sizes: list[int] = []

    def fn(start: int, stop: int) -> None:
        sizes.append(stop - start)
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
        run_chunked(fn, 8, 8)
    assert sizes == [8]


def test_out_of_memory_with_one_item_is_a_clear_error():
    def fn(start: int, stop: int) -> None:
        raise torch.OutOfMemoryError("CUDA out of memory")

    with pytest.raises(torch.OutOfMemoryError, match=r"single one of 6 masked inputs per forward \(first tried 4"):
        run_chunked(fn, 6, 4, what="masked inputs")
    with pytest.raises(ValueError, match="batch_size must be an int >= 1"):
        run_chunked(fn, 6, 0)


class OutOfMemoryAbove(nn.Module):
    """Wraps a model; its forward raises ``torch.OutOfMemoryError`` for batches larger than ``limit``."""

    def __init__(self, inner: nn.Module, limit: int | None) -> None:
        super().__init__()
        self.inner, self.limit = inner, limit
        self.sizes: list[int] = []

    def forward(self, x: Tensor) -> Tensor:
        self.sizes.append(x.shape[0])
        if self.limit is not None and x.shape[0] > self.limit:
            raise torch.OutOfMemoryError(f"CUDA out of memory (fake): batch of {x.shape[0]} > {self.limit}")
        return self.inner(x)


def _chunked_calls() -> dict[str, tuple[Any, int]]:
    """name -> (function(model, inputs, targets) -> result, the batch size limit that forces halving)."""
    maps = torch.rand(4, 1, 16, 16, generator=torch.Generator().manual_seed(3))
    return {
        "scorecam": (lambda m, x, t: ScoreCAM(batch_size=32)(m, x, t), 5),
        "cameras": (lambda m, x, t: build("cameras", scales=(1.0, 1.5), batch_size=4)(m, x, t), 1),
        "smoothgrad": (lambda m, x, t: build("smoothgrad", num_samples=4, batch_size=16)(m, x, t), 4),
        "integrated_gradients": (
            lambda m, x, t: build("integrated_gradients", steps=4, internal_batch_size=16)(m, x, t),
            4,
        ),
        "average_drop": (lambda m, x, t: average_drop(m, x, t, maps, batch_size=64), 1),
        "deletion": (lambda m, x, t: deletion_curve(m, x, t, maps, steps=4, batch_size=64), 3),
        "insertion": (lambda m, x, t: insertion_curve(m, x, t, maps, steps=4, batch_size=16), 3),
        "road": (lambda m, x, t: road_score(m, x, t, maps, percentages=(25, 50), batch_size=16), 3),
    }


@pytest.mark.parametrize("name", sorted(_chunked_calls()))
def test_fake_out_of_memory_retries_with_half_the_chunk_and_gives_the_same_result(name, make_cnn, make_batch):
    call, limit = _chunked_calls()[name]
    inner = make_cnn().eval()
    inputs, targets = make_batch(batch=4, height=16, width=16)
    healthy = OutOfMemoryAbove(inner, None)
    expected = call(healthy, inputs, targets)
    faulty = OutOfMemoryAbove(inner, limit)
    before = snapshot(faulty)
    result = call(faulty, inputs, targets)
    if name in ("cameras", "road"):
        # cameras: smaller batches at the rescaled sizes, conv/bicubic kernels may round differently; road: the
        # imputation solver stops once every image of a chunk converged, so smaller chunks iterate differently
        torch.testing.assert_close(result, expected, atol=1e-5, rtol=0)
    else:
        assert torch.equal(result, expected), "the retried result must be bit-identical"
    failed = [s for s in faulty.sizes if s > limit]
    assert failed, "the fake out-of-memory error must have fired"
    # each failure is followed by a retry with half its size
    for size, following in zip(faulty.sizes, faulty.sizes[1:], strict=False):
        if size > limit:
            assert following == size // 2, faulty.sizes
    assert_no_hooks(faulty)
    assert_untouched(before, faulty)


def test_out_of_memory_even_at_one_image_is_raised_clearly_and_leaves_no_hooks(make_cnn, make_batch):
    model = OutOfMemoryAbove(make_cnn(), 0)
    inputs, targets = make_batch(batch=2, height=16, width=16)
    before = snapshot(model)
    with pytest.raises(torch.OutOfMemoryError, match="single one of 2 images per forward"):
        build("cameras", scales=(1.0,), batch_size=2, target_layer="inner.features")(model, inputs, targets)
    assert_no_hooks(model)
    assert_untouched(before, model)
