"""The planning layer: pure Python over device names and sizes, no TensorFlow.

The spec language (:mod:`.spec`), device names and groups (:mod:`.devices`), size
ranges and pack plans (:mod:`.ranges`), the batch plan (:mod:`.plan`), the registry
(:mod:`.registry`) and each algorithm's declaration (:mod:`.algorithms`: its entry,
schedule, roundings and cost formula), the shared roundings and chunking
(:mod:`.roundings`, :mod:`.schedules`),
the cost formulas and model (:mod:`.cost`, :mod:`.cost_steps`, :mod:`.traffic`,
:mod:`.cost_model`), wire formats and the error-bound arithmetic (:mod:`.wire_formats`,
:mod:`.accuracy`). May use :mod:`allreduce.core` and numpy; never TensorFlow (an
import-linter contract in ``pyproject.toml`` holds it to that).
"""
