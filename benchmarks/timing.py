"""Timing helpers shared by the benchmarks: AOT compile timing, interleaved best-of timing and
machine facts, so that every benchmark measures the same way."""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable
from typing import Any

import jax
import jaxlib

Timed = Callable[[], Any]


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


def run_timed(fn: Timed) -> float:
    """Seconds for one call of ``fn`` until its outputs are ready."""
    start = time.perf_counter()
    jax.block_until_ready(fn())
    return time.perf_counter() - start


def interleaved(timers: dict[str, Timed], rounds: int) -> dict[str, list[float]]:
    """Time the (already warmed-up) timers round-robin ``rounds`` times; all times per name.

    Interleaving spreads any burst of outside load over all measurements instead of biasing
    one of them; callers keep the best (or compare within a round).
    """
    times: dict[str, list[float]] = {name: [] for name in timers}
    for _ in range(rounds):
        for name, fn in timers.items():
            times[name].append(run_timed(fn))
    return times


def machine_info() -> dict[str, Any]:
    """Versions and hardware facts to store beside every benchmark result."""
    return {
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "device_count": jax.device_count(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
    }
