"""The compiled part of training: one chunk = N x (rollout + update), mapped over seeds."""

from __future__ import annotations

import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import io_callback

from b2mapo.config import ConfigError, TrainConfig
from b2mapo.engine import LearnerState, batch_sequential_update, init_learner
from b2mapo.envs import make_env
from b2mapo.networks import Networks, Params
from b2mapo.partition import make_partitioner
from b2mapo.rollout import EnvLoopState, reset_envs, rollout


def _host_clock(*dependencies: jax.Array) -> jax.Array:
    """Seconds on the host clock, read once ``dependencies`` have been computed."""
    return io_callback(
        lambda *_: np.float32(time.perf_counter() - _CLOCK_ORIGIN),
        jax.ShapeDtypeStruct((), jnp.float32),
        *dependencies,
    )


_CLOCK_ORIGIN = time.perf_counter()


class RunnerState(NamedTuple):
    """Everything a seed's training carries between chunks; a checkpoint saves exactly this."""

    learner: LearnerState
    loop: EnvLoopState
    key: jax.Array
    update: jax.Array  # updates done so far


class EvalResult(NamedTuple):
    """Outcome of the first episode in each of a batch of evaluation envs."""

    win_rate: jax.Array
    episode_return: jax.Array
    episode_length: jax.Array


class Trainer:
    """Builds the environment and networks of a config and exposes compiled, seed-mapped steps.

    ``init``, ``chunk`` and ``evaluate`` all take and return states with a leading seed axis.
    """

    def __init__(self, cfg: TrainConfig) -> None:
        self.cfg = cfg
        self.env = make_env(cfg.env, cfg.episode_limit or None)
        self.networks = Networks(
            self.env.spec, cfg.hidden_size, cfg.share_params, cfg.condition_on_actions
        )
        try:
            self.partitioner = make_partitioner(
                cfg.partition, self.env.spec.num_agents, cfg.num_batches, cfg.dependency_graph
            )
        except ValueError as error:
            raise ConfigError(f"{error} (env {cfg.env})") from None
        self.chunk = jax.jit(jax.vmap(self._chunk_one))
        self.evaluate = jax.jit(
            jax.vmap(self._evaluate_one, in_axes=(0, 0, None)), static_argnums=2
        )

    def seed_keys(self, offset: int = 0) -> jax.Array:
        """One PRNG key per seed: seed i of the run uses ``cfg.seed + i``."""
        seeds = jnp.arange(self.cfg.seeds) + self.cfg.seed + offset
        return jax.vmap(jax.random.PRNGKey)(seeds)

    def init(self) -> RunnerState:
        """Fresh runner states for every seed (leading seed axis)."""
        return jax.jit(jax.vmap(self._init_one))(self.seed_keys())

    def _init_one(self, key: jax.Array) -> RunnerState:
        param_key, env_key, key = jax.random.split(key, 3)
        learner = init_learner(self.networks, self.cfg, param_key)
        loop = reset_envs(self.env, self.networks, env_key, self.cfg.num_envs)
        return RunnerState(learner, loop, key, jnp.int32(0))

    def _round(self, state: RunnerState, _: None) -> tuple[RunnerState, dict[str, jax.Array]]:
        """One training round: collect a rollout, then update on it."""
        key, partition_key, rollout_key, update_key = jax.random.split(state.key, 4)
        no_scores = jnp.zeros((self.env.spec.num_agents,))
        batch_index = self.partitioner.partition(partition_key, no_scores)
        loop, trajectory, episodes = rollout(
            self.env,
            self.networks,
            state.learner.params,
            state.loop,
            rollout_key,
            self.cfg.rollout_len,
            batch_index,
        )
        # Time the update phase: the barrier keeps the update from starting before the clock.
        update_start = _host_clock(trajectory.transitions.reward)
        update_start, trajectory = jax.lax.optimization_barrier((update_start, trajectory))
        learner, metrics = batch_sequential_update(
            state.learner, trajectory, update_key, self.networks, self.partitioner, self.cfg
        )
        update_end = _host_clock(jax.tree.leaves(learner.params)[0], metrics["policy_loss"])
        count = jnp.maximum(episodes.episodes, 1)
        metrics |= {
            "episodes": episodes.episodes,
            "episode_return": episodes.return_sum / count,
            "episode_length": episodes.length_sum / count,
            "win_rate": episodes.wins / count,
            "update_seconds": update_end - update_start,
        }
        return RunnerState(learner, loop, key, state.update + 1), metrics

    def _chunk_one(self, state: RunnerState) -> tuple[RunnerState, dict[str, jax.Array]]:
        return jax.lax.scan(self._round, state, None, self.cfg.updates_per_chunk)

    def _evaluate_one(self, params: dict[str, Params], key: jax.Array, greedy: bool) -> EvalResult:
        """Play ``eval_episodes`` episodes in parallel envs and score the first one of each."""
        episodes = self.cfg.eval_episodes
        reset_key, partition_key, key = jax.random.split(key, 3)
        loop = reset_envs(self.env, self.networks, reset_key, episodes)
        no_scores = jnp.zeros((self.env.spec.num_agents,))
        batch_index = self.partitioner.partition(partition_key, no_scores)
        zeros = jnp.zeros((episodes,))
        finished = jnp.zeros((episodes,), bool)

        def step(carry: tuple, key: jax.Array) -> tuple[tuple, None]:
            loop, finished, won, ret, length = carry
            action_key, env_key = jax.random.split(key)
            ts = loop.timestep
            h, action, _ = self.networks.policy_step(
                params["actor"],
                loop.carry,
                ts.obs,
                loop.first,
                ts.avail,
                batch_index,
                action_key,
                greedy,
            )
            env_state, ts = jax.vmap(self.env.step)(
                jax.random.split(env_key, episodes), loop.env_state, action
            )
            ends_now = ts.done & ~finished
            won = jnp.where(ends_now, ts.won, won)
            ret = jnp.where(ends_now, ts.episode_return, ret)
            length = jnp.where(ends_now, ts.episode_length, length)
            loop = EnvLoopState(env_state, ts, ts.done, h)
            return (loop, finished | ts.done, won, ret, length), None

        carry = (loop, finished, finished, zeros, zeros)
        steps = jax.random.split(key, self.env.spec.episode_limit)
        (_, _, won, ret, length), _ = jax.lax.scan(step, carry, steps)
        return EvalResult(won.mean(), ret.mean(), length.mean())
