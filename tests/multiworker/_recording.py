"""What a client scenario records, and how it places its inputs (shared by the scenarios)."""

from __future__ import annotations

import json
import os
import traceback

import numpy as np
import tensorflow as tf


class Recorder:
    """Collects named arrays and a JSON manifest."""

    def __init__(self) -> None:
        self.arrays: dict[str, np.ndarray] = {}
        self.manifest: dict = {"cases": {}}

    def array(self, value) -> str:
        key = f"a{len(self.arrays)}"
        self.arrays[key] = np.asarray(value, dtype=np.float64)
        return key

    def case(self, name: str, fn) -> None:
        """Runs ``fn() -> (outputs[d][i] tensors, devices[d][i])`` and records it."""
        entry: dict = {"error": None}
        try:
            outputs, devices = fn()
            entry["outputs"] = [[self.array(tensor_values(t)) for t in row] for row in outputs]
            entry["devices"] = devices
        except Exception:
            entry["error"] = traceback.format_exc()
        self.manifest["cases"][name] = entry

    def save(self, out_dir: str) -> None:
        np.savez(os.path.join(out_dir, "arrays.npz"), **self.arrays)
        with open(os.path.join(out_dir, "result.json"), "w") as f:
            json.dump(self.manifest, f, indent=1)


def tensor_values(t: tf.Tensor) -> np.ndarray:
    return np.asarray(t.numpy(), dtype=np.float64)


def integer_valued(rng: np.random.Generator, shape, dtype: str) -> np.ndarray:
    """Small integers: every partial sum is exact in every dtype used here."""
    return rng.integers(-64, 65, size=shape).astype(dtype)


def place(value: np.ndarray, device: str) -> tf.Tensor:
    with tf.device(device):
        return tf.identity(tf.constant(value))


def attempt(fn) -> dict:
    """What ``fn()`` gave: ``{"raised": None, "value": ...}`` or the exception's type and message."""
    try:
        value = fn()
    except Exception as err:
        return {"raised": type(err).__name__, "message": str(err)[:1000]}
    return {"raised": None, "value": repr(value)[:1000]}
