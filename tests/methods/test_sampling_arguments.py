"""The sampling arguments of the noise-averaging methods and RISE: each bad value is an error naming the argument,
the value and what was expected (one shared check, :func:`lightning_saliency._checks.noise_sampling`)."""

from __future__ import annotations

import re

import pytest

from lightning_saliency.methods import RISE, GradientShap, SmoothGrad, SmoothGradSquared, VarGrad

NOISY = [SmoothGrad, SmoothGradSquared, VarGrad, GradientShap]
BAD = [
    ({"num_samples": 0}, "num_samples must be an int >= 1, got 0."),
    ({"num_samples": True}, "num_samples must be an int >= 1, got True."),
    ({"noise_level": 12}, "noise_level must be a float in [0, 10) (a fraction of the value range), got 12."),
    ({"noise_level": True}, "noise_level must be a float in [0, 10) (a fraction of the value range), got True."),
    ({"batch_size": 0}, "batch_size must be an int >= 1, got 0."),
    ({"seed": "a"}, "seed must be an int, got 'a'."),
    ({"seed": False}, "seed must be an int, got False."),
]


@pytest.mark.parametrize("method", NOISY, ids=lambda m: m.__name__)
@pytest.mark.parametrize(("kwargs", "message"), BAD, ids=[next(iter(k)) + "=" + repr(*k.values()) for k, _ in BAD])
def test_noise_averaging_methods_refuse_bad_sampling_arguments(method, kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        method(**kwargs)


def test_the_defaults_are_kept():
    method = SmoothGrad()
    assert (method.num_samples, method.noise_level, method.batch_size, method.seed) == (16, 0.15, 64, 0)
    assert isinstance(SmoothGrad(noise_level=1).noise_level, float)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_masks": 0}, "num_masks must be an int >= 1, got 0."),
        ({"grid_size": True}, "grid_size must be an int >= 1, got True."),
        ({"seed": 1.5}, "seed must be an int, got 1.5."),
    ],
)
def test_rise_refuses_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        RISE(**kwargs)
