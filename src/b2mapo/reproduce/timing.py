"""The paper's two time tables, measured in one process per map so that the algorithms
share the machine's state: training time per round (Table 1) and execution time per
decision of the policy that executes (Table 2; π_ind for B2MAPO). The benchmarks in
``benchmarks/`` time with these helpers too, so that every figure is measured one way."""

from __future__ import annotations

import dataclasses
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jaxlib
import numpy as np

from b2mapo.config import TrainConfig
from b2mapo.policy import load_policy
from b2mapo.train import Trainer

Timed = Callable[[], Any]


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


class ChunkTimer(NamedTuple):
    """A compiled, warmed-up training chunk whose ``timer`` carries the state from call to
    call; ``calls`` holds each timed call's metrics."""

    timer: Timed
    calls: list[Any]
    trainer: Trainer
    compile_s: float
    warmup_s: float


def lower_and_compile(jitted: Any, *args: Any) -> tuple[Any, float, float]:
    """AOT-compile ``jitted`` for ``args``; the compiled callable and the seconds its
    lowering (tracing included) and its XLA compile took."""
    start = time.perf_counter()
    lowered = jitted.lower(*args)
    lowered_at = time.perf_counter()
    compiled = lowered.compile()
    return compiled, lowered_at - start, time.perf_counter() - lowered_at


def compile_timed(jitted: Any, *args: Any) -> tuple[Any, float]:
    """AOT-compile ``jitted`` for ``args``; the compiled callable and the seconds taken."""
    compiled, lower_s, compile_s = lower_and_compile(jitted, *args)
    return compiled, lower_s + compile_s


def chunk_timer(cfg: TrainConfig) -> ChunkTimer:
    """``cfg``'s training chunk (its update phase timed by the ``update_seconds`` metrics),
    compiled and warmed up by one call."""
    trainer = Trainer(dataclasses.replace(cfg, time_updates=True))
    state = jax.block_until_ready(trainer.init())
    chunk, compile_s = compile_timed(trainer.chunk, state)
    holder: list[Any] = [state, None]  # [state, metrics] of the latest call
    calls: list[Any] = []

    def advance() -> Any:
        holder[:] = chunk(holder[0])
        return holder

    warmup_s = run_timed(advance)

    def timer() -> Any:
        calls.append(advance()[1])
        return holder

    return ChunkTimer(timer, calls, trainer, compile_s, warmup_s)


def round_times(configs: dict[str, TrainConfig], repeats: int = 3) -> dict[str, dict[str, float]]:
    """Per algorithm: seconds per training round (best chunk over ``repeats`` interleaved
    calls, divided by its rounds) and its update phase (the ``update_seconds`` metric of
    that call), with every seed of the run's ``vmap``."""
    chunks = {algo: chunk_timer(cfg) for algo, cfg in configs.items()}
    times = interleaved({algo: chunk.timer for algo, chunk in chunks.items()}, repeats)
    results = {}
    for algo, cfg in configs.items():
        best = int(np.argmin(times[algo]))
        update = np.asarray(chunks[algo].calls[best]["update_seconds"]).mean()
        results[algo] = {
            "round_s": times[algo][best] / cfg.updates_per_chunk,
            "update_s": float(update),
        }
    return results


def _decision_timer(run_dir: Path, num_envs: int, calls: int) -> Timed:
    """``calls`` back-to-back greedy decisions of a run's executing policy for ``num_envs``
    envs (each waiting for the previous, as a control loop does), compiled and warmed up."""
    policy = load_policy(run_dir)
    _, ts = jax.vmap(policy.env.reset)(jax.random.split(jax.random.PRNGKey(0), num_envs))
    state = policy.initial_state(num_envs)
    act = jax.jit(policy.act)
    key = jax.random.PRNGKey(1)
    jax.block_until_ready(act(state, ts.obs, ts.avail, key))

    def timer() -> Any:
        for _ in range(calls - 1):
            jax.block_until_ready(act(state, ts.obs, ts.avail, key))
        return act(state, ts.obs, ts.avail, key)

    return timer


def decision_times(
    run_dirs: dict[str, Path], num_envs: tuple[int, ...] = (1, 64), repeats: int = 5
) -> dict[str, dict[str, float]]:
    """Per algorithm: seconds per decision of the trained executing policy (all agents of
    one env for one step), for a single env (latency) and for a batch of envs (per env)."""
    results: dict[str, dict[str, float]] = {algo: {} for algo in run_dirs}
    for envs in num_envs:
        calls = 100 if envs == 1 else 10
        timers = {algo: _decision_timer(d, envs, calls) for algo, d in run_dirs.items()}
        times = interleaved(timers, repeats)
        for algo, own in times.items():
            results[algo][f"decision_s_{envs}_envs"] = min(own) / calls / envs
    return results
