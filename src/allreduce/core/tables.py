"""The library's tables, each in one place: the dtypes it reduces, the reductions and
the compressions (pure Python; every layer reads them from here)."""

from __future__ import annotations

__all__ = ["BENCH_COMPRESSIONS", "COMPRESSIONS", "DTYPE_SIZES", "REDUCTIONS"]

#: Every dtype the algorithms reduce, by name, with its size in bytes.
DTYPE_SIZES = {"float16": 2, "bfloat16": 2, "float32": 4, "float64": 8, "int32": 4, "int64": 8}

#: The reductions ``all_reduce`` accepts.
REDUCTIONS = ("sum", "mean")

#: The names ``compression=`` accepts: none, or the wire type of floating hops between
#: devices that do not share memory.
COMPRESSIONS = ("none", "bf16", "fp16")

#: What the benchmark can ask for: each compression, and each one on every hop
#: (``"bf16-all"``: also between devices that share memory).
BENCH_COMPRESSIONS = COMPRESSIONS + tuple(f"{c}-all" for c in COMPRESSIONS if c != "none")
