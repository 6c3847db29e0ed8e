"""The examples run as documented, and their core functions do what they claim."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import tensorflow as tf

from tests import forkserver
from tests.strategies import cpu

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
DEVICES = [cpu(i) for i in range(4)]


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(("spec", "max_bytes"), [("pscpu:256:xring#2", 1024), ("rechd", 0), ("xring#3", 64)])
def test_custom_loop_loss_falls_and_replicas_stay_bitwise_identical(spec: str, max_bytes: int) -> None:
    custom_loop = load("custom_loop")
    history = custom_loop.train(DEVICES, spec, steps=30, max_bytes=max_bytes)
    assert all(step.replicas_identical for step in history)
    losses = [step.loss for step in history]
    assert np.isfinite(losses).all()
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5])


def test_keras_fit_example_follows_single_device_training() -> None:
    keras_fit = load("keras_fit")
    from allreduce.cross_device_ops import SpecCrossDeviceOps

    tf.keras.utils.set_random_seed(1)
    initial = keras_fit.build_model().get_weights()
    ops = SpecCrossDeviceOps("pscpu:1k:xring#2", pack_max_bytes=4096, check_finite=True)
    strategy = tf.distribute.MirroredStrategy(DEVICES, cross_device_ops=ops)
    model, losses = keras_fit.fit(strategy, initial, epochs=2)
    single, single_losses = keras_fit.fit(None, initial, epochs=2)
    assert losses[1] < losses[0]
    # A sanity check only: Adam's normalisation admits no small a-priori bound (the bound
    # derived for SGD is in test_training.py); rounding must stay far below the movement.
    np.testing.assert_allclose(losses, single_losses, rtol=1e-4)
    moved = max(np.abs(a - b).max() for a, b in zip(single.get_weights(), initial))
    difference = max(np.abs(a - b).max() for a, b in zip(model.get_weights(), single.get_weights()))
    assert difference < 1e-3 * moved
    for weight in model.weights:
        assert len({v.numpy().tobytes() for v in weight.value.values}) == 1, weight.path


@pytest.mark.parametrize(
    ("name", "args", "expected"),
    [
        ("custom_loop", ["--steps", "10"], "replicas bitwise identical after every step: True"),
        ("keras_fit", ["--epochs", "1", "--spec", "rechd"], "replicas bitwise identical: True"),
    ],
)
def test_example_runs_from_the_command_line(name: str, args: list[str], expected: str) -> None:
    result = forkserver.run([sys.executable, str(EXAMPLES / f"{name}.py"), *args], timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert expected in result.stdout
    assert "4 replicas" in result.stdout
