"""Host environments inside the compiled loop: a pool of worker processes (gymnasium's
``AsyncVectorEnv``) that the rollout and the evaluation step through ordered
``io_callback``s, so that every algorithm, the DAG generator and π_ind run unchanged.

The environments' state lives in the workers; the JAX side carries a placeholder. A host
pool therefore trains one seed on one device, and its episodes are not part of a
checkpoint: a resumed run starts fresh episodes (``Trainer.resume``).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import warnings
from collections.abc import Callable
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from gymnasium.vector import AsyncVectorEnv
from jax.experimental import io_callback

from b2mapo.envs.core import TimeStep
from b2mapo.envs.host.stacked import AgentStacked, EnvGroup, time_step_space
from b2mapo.envs.spec import EnvSpec
from b2mapo.errors import HostEnvError

STARTUP_SECONDS = 600.0
"""How long the first reset of a pool may take: it starts the workers and builds the envs."""


class _KnownFailures(logging.Filter):
    """Drops JAX's log of a callback that failed with a ``HostEnvError``: the run reports
    that error itself, in one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], HostEnvError))


logging.getLogger("jax._src.callback").addFilter(_KnownFailures())


class HostEnv:
    """A host environment by name: a picklable ``factory`` of its agent-stacked adapter,
    and its spec (read from one instance built and closed here)."""

    def __init__(self, name: str, factory: Callable[[], AgentStacked], timeout: float) -> None:
        self.name, self.factory, self.timeout = name, factory, timeout
        probe = factory()
        self.spec: EnvSpec = probe.spec
        probe.close()

    def pool(self, size: int, workers: int) -> HostPool:
        """``size`` instances over at most ``workers`` processes (0: one per CPU core)."""
        return HostPool(self, size, workers or os.cpu_count() or 1)


def _divisor_at_most(size: int, wanted: int) -> int:
    """The largest divisor of ``size`` that is at most ``wanted``."""
    return max(d for d in range(1, min(size, wanted) + 1) if size % d == 0)


class HostPool:
    """``size`` instances of a host environment in worker processes, each stepping
    ``size / workers`` of them in turn; a ``b2mapo.envs.core.BatchedEnv``.

    The processes start on the first reset. A failure is kept in ``failure`` (the compiled
    program that called back only sees that a callback failed) and stops the pool.
    """

    def __init__(self, env: HostEnv, size: int, workers: int) -> None:
        self.spec = env.spec
        self.name, self.size = env.name, size
        self.workers = _divisor_at_most(size, workers)
        self._env, self._vector, self._started = env, None, False
        self.failure: HostEnvError | None = None
        self._per_worker = size // self.workers
        space = time_step_space(env.spec, self._per_worker)
        self._result = TimeStep(
            **{
                name: jax.ShapeDtypeStruct((size, *box.shape[1:]), _DTYPES[name])
                for name, box in space.spaces.items()
            }
        )

    def vector_env(self) -> AsyncVectorEnv:
        """The gymnasium vector env of the workers, started on first use."""
        if self._vector is None:
            os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")  # pygame's banner
            group = partial(EnvGroup, self._env.factory, self.spec, self._per_worker)
            self._vector = AsyncVectorEnv(
                [group] * self.workers, shared_memory=True, context="spawn", daemon=True
            )
        return self._vector

    def _guarded(
        self, what: str, timeout: float, call: Callable[[AsyncVectorEnv, float], dict]
    ) -> TimeStep:
        """``call`` (a ``what``, with ``timeout``) on the worker pool, its result as a time
        step of the whole pool; any failure becomes a ``HostEnvError`` naming the
        environment (and stops the pool)."""
        if self.failure is not None:
            raise self.failure
        try:
            stacked = call(self.vector_env(), timeout)
        except Exception as error:  # every failure of a worker is reported, by name
            reason = _describe(error, what, timeout)
            self.failure = HostEnvError(f"host env {self.name!r}: {reason}")
            self.close(terminate=True)
            raise self.failure from error
        return TimeStep(
            **{
                name: np.asarray(value, _DTYPES[name]).reshape(self._result._asdict()[name].shape)
                for name, value in stacked.items()
            }
        )

    def _reset_on_host(self, seed: np.ndarray) -> TimeStep:
        # The first reset starts the workers and builds their environments (a football
        # engine takes seconds): it may take longer than a step.
        timeout = self._env.timeout if self._started else max(self._env.timeout, STARTUP_SECONDS)
        self._started = True

        def reset(vector: AsyncVectorEnv, timeout: float) -> dict[str, np.ndarray]:
            vector.reset_async(seed=int(seed) % 2**31)
            return vector.reset_wait(timeout=timeout)[0]

        return self._guarded("reset", timeout, reset)

    def _step_on_host(self, actions: jax.Array) -> TimeStep:
        # A numpy copy: JAX hands callbacks its own arrays, which would travel to the workers
        # pickled as JAX arrays (importing JAX there, and indexing them slowly).
        joint = np.asarray(actions).reshape(self.workers, self._per_worker, -1)

        def step(vector: AsyncVectorEnv, timeout: float) -> dict[str, np.ndarray]:
            vector.step_async(joint)
            return vector.step_wait(timeout=timeout)[0]

        return self._guarded("step", self._env.timeout, step)

    def reset_batch(self, keys: jax.Array) -> tuple[jax.Array, TimeStep]:
        """Reset every instance, seeded from the first key (each instance its own seed)."""
        seed = jax.random.bits(keys[0], dtype=jnp.uint32)
        timestep = io_callback(self._reset_on_host, self._result, seed, ordered=True)
        return jnp.zeros((self.size,), jnp.int32), timestep

    def step_batch(
        self, keys: jax.Array, states: jax.Array, actions: jax.Array
    ) -> tuple[jax.Array, TimeStep]:
        """Step every instance with its joint action; ``keys`` are unused (the workers own
        their randomness) and ``states`` is the placeholder ``reset_batch`` returned."""
        del keys
        timestep = io_callback(
            self._step_on_host, self._result, actions.astype(jnp.int32), ordered=True
        )
        return states, timestep

    def close(self, terminate: bool = False) -> None:
        """Stop the worker processes; ``terminate`` kills them without a word (a failed
        pool: a dead, hung or broken worker cannot be asked to close)."""
        if self._vector is None:
            return
        vector, self._vector, self._started = self._vector, None, False
        if not terminate:
            vector.close()
            return
        for process in vector.processes:
            process.kill()
        for process in vector.processes:
            process.join()
        with contextlib.suppress(Exception), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # it waits for the answer a dead worker owes
            vector.close(terminate=True)
        vector.closed = True


_DTYPES: dict[str, Any] = {
    "obs": np.float32,
    "state": np.float32,
    "avail": np.bool_,
    "reward": np.float32,
    "terminated": np.bool_,
    "truncated": np.bool_,
    "won": np.bool_,
    "final_state": np.float32,
    "episode_return": np.float32,
    "episode_length": np.int32,
}


def _describe(error: Exception, what: str, timeout: float) -> str:
    if isinstance(error, multiprocessing.TimeoutError):
        return (
            f"a worker did not answer a {what} within {timeout:g} s "
            "(hung? --worker-timeout sets the limit)"
        )
    if isinstance(error, EOFError | BrokenPipeError | ConnectionError):
        return "a worker process died (crashed or was killed)"
    return f"an environment raised {type(error).__name__}: {error}"
