"""Shared fixtures: a tiny, fast training config for tests that exercise the machinery."""

from __future__ import annotations

import atexit
import gc
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jax
import pytest

from b2mapo.config import TrainConfig, resolve
from b2mapo.runner import train

_CACHE_VARIABLE = "B2MAPO_TESTS_XLA_CACHE"


def _session_cache_dir() -> str:
    """A JAX compilation cache for this test session alone, shared by its xdist workers.

    Tests that build the same trainer (the tiny sizes below, the same algorithm) share its
    compiled programs through it, also across workers: the main process makes the directory
    and removes it at exit; workers, which inherit its environment, only use it.
    """
    if os.environ.get("PYTEST_XDIST_WORKER") is None or _CACHE_VARIABLE not in os.environ:
        path = tempfile.mkdtemp(prefix="b2mapo-tests-xla-")
        atexit.register(shutil.rmtree, path, ignore_errors=True)
        os.environ[_CACHE_VARIABLE] = path
    return os.environ[_CACHE_VARIABLE]


# Set before any compilation: JAX decides once, at its first compile, whether a cache is in use.
jax.config.update("jax_compilation_cache_dir", _session_cache_dir())


@pytest.fixture(autouse=True, scope="module")
def _free_compiled_programs() -> Iterator[None]:
    """Free each module's compiled programs when it ends.

    A trainer and its jitted methods form a reference cycle that only a full collection frees,
    and every loaded XLA CPU executable holds a few memory maps: left to themselves, a whole
    suite's programs pass the kernel's 65,530-map limit and XLA segfaults while compiling.
    """
    yield
    jax.clear_caches()
    gc.collect()


@pytest.fixture(autouse=True)
def _collect_garbage() -> Iterator[None]:
    """Collect finished tests' trainers (and their executables) before the next test compiles."""
    yield
    gc.collect()


# Sizes small enough to compile and run a whole training run in seconds.
TINY: dict[str, Any] = {
    "env": "smax:3m",
    "num_envs": 4,
    "rollout_len": 8,
    "recurrent_chunk": 4,
    "epochs": 1,
    "minibatches": 2,
    "hidden_size": 8,
    "updates_per_chunk": 2,
    "total_steps": 4 * 8 * 4,
    "eval_every": 2,
    "eval_episodes": 2,
    "final_eval_episodes": 2,
    "episode_limit": 20,
}


@pytest.fixture
def tiny_config(tmp_path: Path):
    """Build a validated config small enough to compile and run in seconds."""

    def make(**overrides: Any) -> TrainConfig:
        values = {**TINY, "out": str(tmp_path / "run"), **overrides}
        return resolve(values)

    return make


@pytest.fixture(scope="session")
def b2mapo_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny trained B2MAPO run (periods of 4 steps), trained once for the whole session."""
    run_dir = tmp_path_factory.mktemp("b2mapo") / "run"
    train(resolve({**TINY, "algo": "b2mapo", "dag_period": 4, "out": str(run_dir)}))
    return run_dir
