"""Choosing a spec: measured tuning (:func:`tune`), ``spec="auto"`` and the cache they share.

:mod:`~allreduce.selection.bands` cuts sizes into bands, :mod:`~allreduce.tuning.search`
decides what to measure, :mod:`~allreduce.selection.decide` turns samples into a spec,
:mod:`~allreduce.selection.cache` keeps the result, :mod:`~allreduce.selection.auto` reads it
back for ``spec="auto"``; :mod:`~allreduce.tuning.measure` is the only part that needs
TensorFlow. See docs/tuning.md.
"""

from __future__ import annotations

from allreduce.tuning.tuner import tune

__all__ = ["tune"]
