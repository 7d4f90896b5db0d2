"""LightningCLI: SaliencyMonitor and ClassModelMonitor are configurable from YAML and the command line."""

from __future__ import annotations

import inspect
import sys
from pathlib import Path

import pytest
import yaml
from _lightning_models import read_events

pytest.importorskip("jsonargparse", reason="LightningCLI needs jsonargparse[signatures] (the `cli` extra)")

from jsonargparse import ArgumentParser

from lightning_saliency import ClassModelMonitor, GradCAM, SaliencyMonitor
from lightning_saliency.callbacks.saliency_monitor import Alarm

pytestmark = [
    pytest.mark.filterwarnings("ignore::DeprecationWarning:lightning.pytorch.cli"),  # jsonargparse 4.53 vs lightning
    pytest.mark.filterwarnings("ignore:.*args parameter is intended to run from within Python.*"),
]

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "examples" / "config_shapes.yaml"


@pytest.fixture
def cli_shapes(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "examples"))
    import cli_shapes

    yield cli_shapes
    for name in ("cli_shapes", "train_shapes", "shapes"):
        sys.modules.pop(name, None)


def _monitors(trainer):
    saliency = [c for c in trainer.callbacks if isinstance(c, SaliencyMonitor)]
    class_model = [c for c in trainer.callbacks if isinstance(c, ClassModelMonitor)]
    return saliency, class_model


@pytest.mark.parametrize("cls", [SaliencyMonitor, ClassModelMonitor])
def test_every_init_argument_has_a_type_jsonargparse_accepts(cls):
    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(cls, "cb", fail_untyped=True)  # raises on an annotation it cannot parse
    params = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    assert set(parser.get_defaults()["cb"].keys()) == set(params)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_cli_fit_with_yaml_and_overrides_logs_images(cli_shapes, tmp_path):
    cli = cli_shapes.main(
        [
            "fit",
            "--config",
            str(CONFIG),
            "--trainer.max_epochs=1",
            "--trainer.enable_progress_bar=false",
            "--data.train_size=64",
            "--data.val_size=32",
            f"--trainer.logger.init_args.save_dir={tmp_path}",
            # the last callback in the YAML list (SaliencyMonitor) takes these
            "--trainer.callbacks.methods=[gradient,gradcam]",
            "--trainer.callbacks.targets=predicted",
            "--trainer.callbacks.score_steps=4",
        ]
    )
    saliency, class_model = _monitors(cli.trainer)
    assert len(saliency) == 1
    assert len(class_model) == 1
    monitor, cmm = saliency[0], class_model[0]
    # from the command line
    assert [m.label for m in monitor.methods] == ["gradient", "gradcam"]
    assert monitor.targets == "predicted"
    assert monitor.score_steps == 4
    # from the YAML
    assert monitor.num_samples == 6
    assert monitor.mean == [0.5, 0.5, 0.5]
    assert monitor.std == [0.25, 0.25, 0.25]
    assert monitor.scores == ["deletion", "insertion", "pointing_game", "energy_pointing_game", "map_stability"]
    assert (cmm.classes, cmm.steps, cmm.jitter, cmm.mean) == ([0, 1, 2], 40, 2, [0.5, 0.5, 0.5])
    assert cli.trainer.max_epochs == 1
    assert len(cli.datamodule.train_set) == 64

    log_dir = Path(cli.trainer.logger.log_dir)
    assert log_dir.is_relative_to(tmp_path)
    events = read_events(log_dir)
    assert {"saliency/overview", "saliency/gradient", "saliency/gradcam", "class_model/grid"} <= set(events["images"])
    assert "saliency/smoothgrad" not in events["images"]  # the YAML's method list was replaced
    assert events["images"]["saliency/overview"][0].width > 0
    assert "saliency/gradcam/deletion" in events["scalars"]
    saved = yaml.safe_load((log_dir / "config.yaml").read_text())  # LightningCLI saves the resolved config
    saved_monitor = saved["trainer"]["callbacks"][-1]
    assert saved_monitor["class_path"] == "lightning_saliency.SaliencyMonitor"
    assert saved_monitor["init_args"]["methods"] == ["gradient", "gradcam"]


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_cli_parses_every_kind_of_argument(cli_shapes, tmp_path):
    cli = cli_shapes.main(
        [
            "--config",
            str(CONFIG),
            f"--trainer.logger.init_args.save_dir={tmp_path}",
            '--trainer.callbacks.methods=[gradient, {"class_path": "lightning_saliency.GradCAM",'
            ' "init_args": {"target_layer": "features.3", "name": "gradcam_l3"}}]',
            "--trainer.callbacks.target_layer=features.6",
            "--trainer.callbacks.probe=[0,3,5]",
            "--trainer.callbacks.targets=2",
            "--trainer.callbacks.scores=[deletion,energy_pointing_game]",
            '--trainer.callbacks.alarms=[{"score": "energy_pointing_game", "below": 0.25}]',
            "--trainer.callbacks.colormap=viridis",
            "--trainer.callbacks.alpha=0.3",
            "--trainer.callbacks.localisation=false",
            # a callback added on the command line alone
            "--trainer.callbacks+=lightning_saliency.ClassModelMonitor",
            "--trainer.callbacks.classes=[1]",
            "--trainer.callbacks.input_shape=[3,64,64]",
            "--trainer.callbacks.init=mean",
            "--trainer.callbacks.mean=[0.5,0.5,0.5]",
            "--trainer.callbacks.nrow=2",
        ],
        run=False,
    )
    saliency, class_model = _monitors(cli.trainer)
    monitor = saliency[0]
    assert [m.label for m in monitor.methods] == ["gradient", "gradcam_l3"]
    assert isinstance(monitor.methods[1], GradCAM)
    assert monitor.methods[1].target_layer == "features.3"
    assert monitor._probe_spec == [0, 3, 5]
    assert monitor.targets == 2
    assert monitor.scores == ["deletion", "energy_pointing_game"]
    assert monitor.alarms == [Alarm("energy_pointing_game", below=0.25)]
    assert (monitor.colormap, monitor.alpha, monitor.localisation) == ("viridis", 0.3, False)
    assert len(class_model) == 2
    added = class_model[-1]
    assert (added.classes, added.input_shape, added.init, added.nrow) == ([1], (3, 64, 64), "mean", 2)


def test_cli_rejects_an_unknown_target_keyword(cli_shapes, tmp_path, capsys):
    with pytest.raises(SystemExit):
        cli_shapes.main(["--config", str(CONFIG), "--trainer.callbacks.targets=foo"], run=False)
    assert "targets" in capsys.readouterr().err


def test_readme_shows_the_example_config_verbatim():
    readme = (CONFIG.parents[1] / "README.md").read_text()
    assert "```yaml\n" + CONFIG.read_text() + "```" in readme


def test_print_config_after_config_shows_every_option_of_the_monitor_as_the_readme_says(cli_shapes, capsys):
    with pytest.raises(SystemExit):
        cli_shapes.main(["fit", "--config", str(CONFIG), "--print_config"], run=True)
    printed = yaml.safe_load(capsys.readouterr().out)
    callbacks = {c["class_path"]: c["init_args"] for c in printed["trainer"]["callbacks"]}
    monitor = callbacks["lightning_saliency.SaliencyMonitor"]
    assert monitor["history_size"] == 8  # a default the YAML does not set
    assert monitor["grid_columns"] == 5
    assert monitor["alarms"] == [{"score": "energy_pointing_game", "below": 0.25, "above": None, "methods": None}]
    with pytest.raises(SystemExit):
        cli_shapes.main(["fit", "--print_config"], run=True)
    assert yaml.safe_load(capsys.readouterr().out)["trainer"]["callbacks"] is None  # as the README says
