"""The values a training round passes around, shared by the trainer, the rounds, evaluation
and the runner: what a seed carries between chunks, what a rollout hands to its update, and
the parameters that act."""

from __future__ import annotations

import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import io_callback

from b2mapo.learner import LearnerState
from b2mapo.networks import Params
from b2mapo.rollout import EnvLoopState, EpisodeMetrics, Trajectory


class RunnerState(NamedTuple):
    """Everything a seed's training carries between chunks; a checkpoint saves exactly this.

    ``own`` is the round's own state beside π's learner (``rounds.Round.init_own``): nothing
    for fixed partitions, B2MAPO's generator and derived policy π_ind for the learned DAG.
    """

    learner: LearnerState
    loop: EnvLoopState
    key: jax.Array
    update: jax.Array  # updates done so far
    own: Any = None


class Collected(NamedTuple):
    """What a round's rollout hands to its update (every round is ``collect``, then
    ``update``); ``own`` is what the round's own update needs beside π's rollout."""

    trajectory: Trajectory  # leaves [T, E, ...], the batch index per step
    loop: EnvLoopState  # env loop state after the rollout
    episodes: EpisodeMetrics
    own: Any = None


class Policies(NamedTuple):
    """The parameters evaluation needs: π, and for B2MAPO the generator and π_ind."""

    joint: dict[str, Params]
    upper: Params | None = None
    derived: dict[str, Params] | None = None


_CLOCK_ORIGIN = time.perf_counter()


def host_clock(*dependencies: jax.Array) -> jax.Array:
    """Seconds on the host clock, read once ``dependencies`` have been computed."""
    return io_callback(
        lambda *_: np.float32(time.perf_counter() - _CLOCK_ORIGIN),
        jax.ShapeDtypeStruct((), jnp.float32),
        *dependencies,
    )
