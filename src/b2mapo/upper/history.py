"""The learned DAG over training, without keeping checkpoints: at every evaluation of a B2MAPO
run, the generator's sampled DAGs at a few fixed states (every seed) are summarised into
``dag_history.jsonl``; ``b2mapo plot --history`` draws it and ``b2mapo.reproduce.recovery``
scores it.

What the reward pays for is the layering (which agents act in which batch), not the edges: a
batch sees every earlier batch's actions, so an edge between two batches costs nothing. The
generator's "greedy DAG" is therefore its most frequent sampled layering
(``most_frequent_layering``), not the per-edge majority of its edge probabilities."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from b2mapo import rundir
from b2mapo.envs.core import TimeStep
from b2mapo.state import Policies
from b2mapo.upper.dag import DagAction

if TYPE_CHECKING:
    from b2mapo.upper.round import LearnedRound

# Key of the environment resets the DAG figures and the history are drawn at: figures of
# different checkpoints and seeds of a run show the generator at the same states.
PLOT_RESET_KEY = 7
# The recorder's states: this many resets, each probed at its first period boundaries (at
# most RECORD_PERIODS, π playing greedily in between), DAG_SAMPLES sampled DAGs at each.
RECORD_RESETS = 4
RECORD_PERIODS = 4
DAG_SAMPLES = 64


class PeriodStart(NamedTuple):
    """Where π stands at a period boundary (a batch of ``B`` environments): enough to play
    the period again from there (``b2mapo.upper.lever``)."""

    actor_carry: jax.Array  # [B, n, h]
    env_state: Any
    ts: TimeStep
    first: jax.Array  # [B], a new episode starts at this step


class Boundary(NamedTuple):
    """What the generator did at one period boundary of one environment."""

    start: PeriodStart  # π and the environment at the boundary (B = 1)
    g: jax.Array  # [n, n] dependency matrix
    action: DagAction  # the DAG π played the period on
    episode_step: jax.Array  # [] the episode step the generator saw
    batch_index: jax.Array  # [S, n] layering of each of S sampled DAGs (S = 0: none)
    keep: jax.Array  # [S, n, n] bool, the kept pairs of each sampled DAG


def boundaries(
    learned: LearnedRound,
    policies: Policies,
    key: jax.Array,
    count: int,
    greedy: bool,
    samples: int = 0,
) -> Boundary:
    """Reset one environment with ``key`` and run ``count`` periods: at each boundary the
    generator acts (its most likely DAG with ``greedy``, else a sample) and π plays the period
    batch by batch on it (carries and restarts as in training); ``samples`` more DAGs are
    sampled at each boundary from the same state. ``policies`` are one seed's. Returns the
    boundaries' records stacked on a leading ``[count]`` axis."""
    env, upper, networks = learned.env, learned.upper, learned.networks
    reset_key, key = jax.random.split(key)
    env_state, ts = jax.vmap(env.reset)(reset_key[None])
    first = jnp.ones((1,), bool)

    def tile(x: jax.Array) -> jax.Array:
        return jnp.repeat(x, samples, axis=0)

    def play_period(loop: tuple, key: jax.Array) -> tuple[tuple, Boundary]:
        actor_carry, upper_carry, env_state, ts, first = loop
        dag_key, sample_key, key = jax.random.split(key, 3)
        n = ts.obs.shape[1]
        drawn_batches, drawn_keep = jnp.zeros((0, n), jnp.int32), jnp.zeros((0, n, n), bool)
        if samples:
            tiled = jax.tree.map(tile, upper_carry)
            _, drawn, _, drawn_batches = upper.act(
                policies.upper, tiled, tile(ts.obs), tile(ts.state), sample_key, False
            )
            drawn_keep = drawn.keep
        step = jnp.where(first[0], 0, ts.episode_length[0])
        upper_carry, action, out, batch_index = upper.act(
            policies.upper, upper_carry, ts.obs, ts.state, dag_key, greedy
        )
        seen = Boundary(
            PeriodStart(actor_carry, env_state, ts, first),
            out.g[0],
            jax.tree.map(lambda x: x[0], action),
            step,
            drawn_batches,
            drawn_keep,
        )

        def play_step(inner: tuple, key: jax.Array) -> tuple[tuple, None]:
            actor_carry, env_state, ts, first, ended = inner
            action_key, env_key = jax.random.split(key)
            actor_carry, action = learned.act_joint(
                policies, actor_carry, ts, first, batch_index, action_key, greedy
            )
            env_state, ts = jax.vmap(env.step)(env_key[None], env_state, action)
            return (actor_carry, env_state, ts, ts.done, ended | ts.done), None

        inner = (actor_carry, env_state, ts, first, jnp.zeros_like(first))
        steps = jax.random.split(key, learned.cfg.dag_period)
        (actor_carry, env_state, ts, first, ended), _ = jax.lax.scan(play_step, inner, steps)
        return (actor_carry, upper_carry._replace(reset=ended), env_state, ts, first), seen

    loop = (networks.initial_carry((1,)), upper.initial_carry(1), env_state, ts, first)
    return jax.lax.scan(play_period, loop, jax.random.split(key, count))[1]


def most_frequent_layering(batch_index: np.ndarray) -> tuple[np.ndarray, float]:
    """The most frequent row of ``batch_index [S, n]`` (sampled DAGs' layerings) and its share
    of the ``S`` samples; ties go to the lexicographically smallest layering."""
    layerings, counts = np.unique(np.asarray(batch_index), axis=0, return_counts=True)
    best = int(np.argmax(counts))
    return layerings[best], float(counts[best] / counts.sum())


def dependency_stats(batch_index: np.ndarray, keep: np.ndarray) -> dict[str, Any]:
    """Summary of the DAGs sampled at many states (``batch_index [states, S, n]``, ``keep
    [states, S, n, n]``): ``separated [n, n]``, the fraction of states whose most frequent
    layering puts two agents in different batches; ``kept [n, n]``, the fraction of sampled
    DAGs keeping each pair; ``batches``, the mean K of the most frequent layerings."""
    greedy = np.stack([most_frequent_layering(b)[0] for b in np.asarray(batch_index)])
    apart = greedy[:, :, None] != greedy[:, None, :]
    return {
        "separated": apart.mean(axis=0).round(4).tolist(),
        "kept": np.asarray(keep).mean(axis=(0, 1)).round(4).tolist(),
        "batches": float((greedy.max(axis=1) + 1).mean()),
    }


class DagRecorder:
    """Appends one record per evaluation to a run's ``dag_history.jsonl``: for the drawings,
    seed 0's G, most frequent layering and sampled keep rates at the fixed start state (the
    reset of ``PLOT_RESET_KEY``, as ``b2mapo plot`` env 0 step 0); for scoring, every seed's
    ``dependency_stats`` over ``RECORD_RESETS`` resets x their first periods."""

    def __init__(self, learned: LearnedRound, run_dir: Path) -> None:
        self.path = Path(run_dir) / rundir.HISTORY_FILE
        self._steps_per_update = learned.cfg.steps_per_update
        per_episode = math.ceil(learned.env.spec.episode_limit / learned.cfg.dag_period)
        count = max(1, min(per_episode, RECORD_PERIODS))
        keys = jax.vmap(lambda r: jax.random.fold_in(jax.random.PRNGKey(PLOT_RESET_KEY), r))(
            jnp.arange(RECORD_RESETS)
        )

        def probe(policies: Policies) -> Boundary:
            def one_reset(key: jax.Array) -> Boundary:
                seen = boundaries(learned, policies, key, count, True, DAG_SAMPLES)
                return seen._replace(start=None)  # the record needs no environment states

            return jax.vmap(one_reset)(keys)

        self._probe = jax.jit(jax.vmap(probe))  # over seeds

    def record(self, policies: Policies, update: int) -> None:
        """Append the DAGs of ``policies`` (every seed's, on a leading axis) after ``update``
        updates."""
        seen = jax.device_get(self._probe(policies))
        seeds, resets, count, samples, n = seen.batch_index.shape
        batches = seen.batch_index.reshape(seeds, resets * count, samples, n)
        keep = seen.keep.reshape(seeds, resets * count, samples, n, n)
        layering, share = most_frequent_layering(batches[0, 0])
        record = {
            "update": update,
            "env_steps": update * self._steps_per_update,
            "g": seen.g[0, 0, 0].round(4).tolist(),
            "batch_index": layering.tolist(),
            "layering_share": share,
            "keep": keep[0, 0].mean(axis=0).round(4).tolist(),
            "seeds": [dependency_stats(b, k) for b, k in zip(batches, keep, strict=True)],
        }
        rundir.append_records(self.path, [record])
