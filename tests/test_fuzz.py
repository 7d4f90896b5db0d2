"""Fuzzing (issue 8): random valid configurations keep every method's contract and leave the model untouched."""

from __future__ import annotations

import contextlib
import random

import numpy as np
import pytest
import torch
from conftest import make_tiny_cnn
from hypothesis import given, settings
from hypothesis import strategies as st
from test_hardening import CNN_NAMES, assert_no_hooks, assert_untouched, build, check_maps, snapshot

from lightning_saliency import Precision
from lightning_saliency.methods import compute_saliency

CLASSES = 5
CHUNK_ARGS = ("batch_size", "internal_batch_size")


def bf16_autocast() -> contextlib.AbstractContextManager[None]:
    return torch.autocast("cpu", dtype=torch.bfloat16)


@st.composite
def configurations(draw: st.DrawFn) -> dict:
    return {
        "methods": draw(st.lists(st.sampled_from(CNN_NAMES), min_size=1, max_size=4, unique=True)),
        "batch": draw(st.integers(1, 5)),
        "channels": draw(st.sampled_from([1, 3])),
        "height": draw(st.integers(9, 40)),
        "width": draw(st.integers(9, 40)),
        "targets": draw(st.sampled_from(["label", "predicted", "fixed"])),
        "bf16": draw(st.booleans()),
        "chunk": draw(st.integers(1, 8)),
        "train_mode": draw(st.booleans()),
        "seed": draw(st.integers(0, 2**16)),
    }


@pytest.mark.slow
@settings(max_examples=25, deadline=None, database=None)
@given(config=configurations())
def test_random_valid_configurations_keep_the_contract(config):
    model = make_tiny_cnn(in_channels=config["channels"], num_classes=CLASSES, seed=config["seed"] % 7)
    model.train(config["train_mode"])
    model.features[1].eval()  # a submodule in its own mode must stay so
    with torch.no_grad():
        for p in model.parameters():
            p.grad = torch.full_like(p, 0.25)
    g = torch.Generator().manual_seed(config["seed"])
    b, c, h, w = config["batch"], config["channels"], config["height"], config["width"]
    inputs = torch.randn(b, c, h, w, generator=g)
    if config["targets"] == "label":
        targets = torch.randint(0, CLASSES, (b,), generator=g)
    elif config["targets"] == "predicted":
        with torch.no_grad():
            targets = make_tiny_cnn(c, CLASSES).eval()(inputs).argmax(1)
    else:
        targets = torch.full((b,), CLASSES - 1, dtype=torch.long)
    methods = [build(n, **dict.fromkeys(CHUNK_ARGS, config["chunk"])) for n in config["methods"]]
    precision = Precision(forward_context=bf16_autocast) if config["bf16"] else Precision()
    before = snapshot(model)
    rng = (torch.get_rng_state(), random.getstate(), np.random.get_state()[1].copy())

    maps = compute_saliency(model, inputs, targets, methods, precision=precision)

    assert len(maps) == len(methods)
    for m in maps:
        check_maps(m, inputs)
        assert not m.requires_grad
    assert_untouched(before, model)
    assert_no_hooks(model)
    assert torch.equal(rng[0], torch.get_rng_state())
    assert rng[1] == random.getstate()
    assert np.array_equal(rng[2], np.random.get_state()[1])
