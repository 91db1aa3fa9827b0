"""Timing helpers shared by the benchmarks: AOT compile timing, interleaved best-of timing and
machine facts, so that every benchmark measures the same way (the last two are
``b2mapo.reproduce.timing``'s, which ``b2mapo reproduce`` times its tables with)."""

from __future__ import annotations

import time
from typing import Any

from b2mapo.reproduce.timing import Timed, interleaved, machine_info, run_timed

__all__ = [
    "Timed",
    "compile_timed",
    "interleaved",
    "lower_and_compile",
    "machine_info",
    "run_timed",
]


def lower_and_compile(jitted: Any, *args: Any) -> tuple[Any, float, float]:
    """AOT-compile ``jitted`` for ``args``; return the compiled callable and the seconds its
    lowering (tracing included) and its XLA compile took."""
    start = time.perf_counter()
    lowered = jitted.lower(*args)
    lowered_at = time.perf_counter()
    compiled = lowered.compile()
    return compiled, lowered_at - start, time.perf_counter() - lowered_at


def compile_timed(jitted: Any, *args: Any) -> tuple[Any, float]:
    """AOT-compile ``jitted`` for ``args``; return the compiled callable and seconds taken."""
    compiled, lower_s, compile_s = lower_and_compile(jitted, *args)
    return compiled, lower_s + compile_s
