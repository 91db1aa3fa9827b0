"""Shared fixtures: a tiny, fast training config for tests that exercise the machinery."""

from __future__ import annotations

import atexit
import fcntl
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
from b2mapo.rundir import finished
from b2mapo.runner import train

_SESSION_VARIABLE = "B2MAPO_TESTS_SESSION_DIR"


def _session_dir() -> Path:
    """A directory for this test session alone, shared by its xdist workers: the JAX
    compilation cache (``xla/``) and the runs trained once for all workers.

    Tests that build the same trainer (the tiny sizes below, the same algorithm) share its
    compiled programs through the cache, also across workers: the main process makes the
    directory and removes it at exit; workers, which inherit its environment, only use it.
    """
    if os.environ.get("PYTEST_XDIST_WORKER") is None or _SESSION_VARIABLE not in os.environ:
        path = tempfile.mkdtemp(prefix="b2mapo-tests-")
        atexit.register(shutil.rmtree, path, ignore_errors=True)
        os.environ[_SESSION_VARIABLE] = path
    return Path(os.environ[_SESSION_VARIABLE])


SESSION_DIR = _session_dir()
# Set before any compilation: JAX decides once, at its first compile, whether a cache is in use.
jax.config.update("jax_compilation_cache_dir", str(SESSION_DIR / "xla"))

# The quick tests run tiny programs once: compiled with most of XLA's optimisations off, they
# compile in about half the time (also in the CLI's and multi-device checks' subprocesses,
# through the environment). See ``_optimised_where_it_matters`` for the exceptions.
os.environ["JAX_DISABLE_MOST_OPTIMIZATIONS"] = "1"
jax.config.update("jax_disable_most_optimizations", True)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Hand out the longest work first: the users of ``b2mapo_run``. xdist sends each
    worker a first run of consecutive tests, so these land on one worker (which trains the
    run once) and quick tests fill in at the end."""

    def rank(item: pytest.Item) -> int:
        return 0 if "b2mapo_run" in getattr(item, "fixturenames", ()) else 1

    items.sort(key=rank)


@pytest.fixture(autouse=True)
def _optimised_where_it_matters(request: pytest.FixtureRequest) -> Iterator[None]:
    """Learning tests (``slow``) train for minutes, and ``optimised`` tests check XLA's
    optimised code itself: these compile with XLA's optimisations, as users' runs do."""
    if not any(request.node.get_closest_marker(m) for m in ("slow", "optimised")):
        yield
        return
    jax.config.update("jax_disable_most_optimizations", False)
    try:
        yield
    finally:
        jax.config.update("jax_disable_most_optimizations", True)


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


# Sizes small enough to compile and run a whole training run in seconds, on probe:walk (three
# agents, masks, wins, 8-step episodes), which compiles in a fraction of SMAX's time: the
# machinery tests do not test SMAX, whose contract tests/test_envs.py checks.
TINY: dict[str, Any] = {
    "env": "probe:walk",
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
}


@pytest.fixture
def tiny_config(tmp_path: Path):
    """Build a validated config small enough to compile and run in seconds."""

    def make(**overrides: Any) -> TrainConfig:
        values = {**TINY, "out": str(tmp_path / "run"), **overrides}
        return resolve(values)

    return make


# The session's tiny B2MAPO run: on probe:coupled (six agents, two planted pairs), whose
# generator keeps most candidate pairs (its edge head starts at 0.9), so that the dependency
# probes of tests/test_coupled.py have kept pairs to count.
B2MAPO_RUN = {"env": "probe:coupled", "algo": "b2mapo", "dag_period": 4, "dag_keep_init": 0.9}


@pytest.fixture(scope="session")
def b2mapo_run() -> Path:
    """A tiny trained B2MAPO run (``B2MAPO_RUN``), trained once for the whole session.

    Session fixtures are per xdist worker: the run lives in the session directory, and a
    worker that needs it while another trains it waits for that run instead of training its own.
    """
    run_dir = SESSION_DIR / "b2mapo-run"
    with (SESSION_DIR / "b2mapo-run.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not finished(run_dir):
            shutil.rmtree(run_dir, ignore_errors=True)  # what a crashed worker left
            train(resolve({**TINY, **B2MAPO_RUN, "out": str(run_dir)}))
    return run_dir


def leaning_on_partners(actor: dict, weight: float, head_scale: float) -> dict:
    """B2MAPO actor parameters with the earlier batches' action input scaled by ``weight``
    (0: π ignores its partners) and the policy head by ``head_scale`` (a decisive π)."""
    params = dict(actor["params"])
    params["preceding_embedding"] = params["preceding_embedding"] * weight
    params["policy_head"] = {**params["policy_head"]}
    params["policy_head"]["kernel"] = params["policy_head"]["kernel"] * head_scale
    return {**actor, "params": params}
