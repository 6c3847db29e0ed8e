"""Compression's public face: :class:`CastWire` and the names of the choices.

The wire transforms themselves live in :mod:`allreduce.graph.compression`.
"""

from __future__ import annotations

from allreduce.graph.compression import CastWire
from allreduce.planning.wire_formats import COMPRESSIONS

__all__ = ["COMPRESSIONS", "CastWire"]
