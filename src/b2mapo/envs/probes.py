"""Small pure-JAX environments behind the b2mapo contract: probes that test one property
each, and a cheap multi-step game that stands in for SMAX where tests check machinery."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from b2mapo.envs.core import EnvSpec, EpisodeStats, TimeStep, reset_where

# The climbing game (Claus & Boutilier, 1998): the optimum (0, 0) is surrounded by
# penalties, so agents that each best-respond to the other's current policy settle lower.
CLIMBING_PAYOFF = np.array([[11.0, -30.0, 0.0], [-30.0, 7.0, 6.0], [0.0, 0.0, 5.0]])


class MatrixGame:
    """A one-step cooperative game of two agents: both see a constant observation, pick an
    action each, receive ``payoff[a0, a1]`` and the episode terminates."""

    def __init__(self, payoff: np.ndarray, name: str, episode_limit: int | None = None) -> None:
        del episode_limit  # every episode is one step
        self._payoff = jnp.asarray(payoff, jnp.float32)
        self._best = float(np.max(payoff))
        self.spec = EnvSpec(
            name=name,
            num_agents=2,
            obs_dim=1,
            state_dim=1,
            num_actions=int(payoff.shape[0]),
            episode_limit=1,
        )

    def _timestep(self, reward: jax.Array, done: jax.Array, won: jax.Array) -> TimeStep:
        spec = self.spec
        zero_i = jnp.int32(0)
        return TimeStep(
            obs=jnp.ones((spec.num_agents, spec.obs_dim), jnp.float32),
            state=jnp.ones((spec.state_dim,), jnp.float32),
            avail=jnp.ones((spec.num_agents, spec.num_actions), bool),
            reward=reward,
            terminated=done,
            truncated=jnp.bool_(False),
            won=won,
            final_state=jnp.ones((spec.state_dim,), jnp.float32),
            episode_return=reward,
            episode_length=jnp.where(done, jnp.int32(1), zero_i),
        )

    def reset(self, key: jax.Array) -> tuple[jax.Array, TimeStep]:
        false = jnp.bool_(False)
        return jnp.int32(0), self._timestep(jnp.float32(0.0), false, false)

    def step(
        self, key: jax.Array, state: jax.Array, actions: jax.Array
    ) -> tuple[jax.Array, TimeStep]:
        reward = self._payoff[actions[0], actions[1]]
        return state, self._timestep(reward, jnp.bool_(True), reward >= self._best)


def climbing_game(episode_limit: int | None = None) -> MatrixGame:
    return MatrixGame(CLIMBING_PAYOFF, "probe:climbing", episode_limit)


class WalkState(NamedTuple):
    """State of ``TargetWalk``: each agent's cell and target, and the running episode totals."""

    cell: jax.Array  # [n] int32
    target: jax.Array  # [n] int32
    stats: EpisodeStats


class TargetWalk:
    """A cheap multi-step stand-in for SMAX in machinery tests: three agents on a line of
    cells each walk to their own target (random per episode), moving one or two cells or
    staying. Moves off the line are masked out and an agent on its target may only stay;
    each arrival pays 1/n. All arrived ends the episode as a win, the limit as a loss: both
    are terminations, because the limit is part of the game (the state carries the time
    fraction). An unavailable action stays.
    """

    MOVES = (0, -1, 1, -2, 2)  # action i moves the agent by MOVES[i] cells; 0 is "stay"

    def __init__(self, episode_limit: int | None = None, cells: int = 6) -> None:
        self._cells = cells
        self._moves = jnp.asarray(self.MOVES, jnp.int32)
        num_agents = 3
        self.spec = EnvSpec(
            name="probe:walk",
            num_agents=num_agents,
            obs_dim=2 * cells,  # one-hot own cell, one-hot own target
            state_dim=2 * cells * num_agents + 1,  # every agent's view and the time fraction
            num_actions=len(self.MOVES),
            episode_limit=episode_limit or 8,
        )

    def _observe(self, cell: jax.Array, target: jax.Array, length: jax.Array) -> tuple:
        obs = jnp.concatenate(
            [jax.nn.one_hot(cell, self._cells), jax.nn.one_hot(target, self._cells)], axis=-1
        )
        time = (length / self.spec.episode_limit).astype(jnp.float32)[None]
        state = jnp.concatenate([obs.reshape(-1), time])
        arrived = cell == target
        inside = (cell[:, None] + self._moves >= 0) & (cell[:, None] + self._moves < self._cells)
        avail = jnp.where(arrived[:, None], self._moves == 0, inside)
        return obs, state, avail

    def reset(self, key: jax.Array) -> tuple[WalkState, TimeStep]:
        n = self.spec.num_agents
        cell_key, offset_key = jax.random.split(key)
        cell = jax.random.randint(cell_key, (n,), 0, self._cells)
        target = (cell + jax.random.randint(offset_key, (n,), 1, self._cells)) % self._cells
        zero_f, zero_i, false = jnp.float32(0.0), jnp.int32(0), jnp.bool_(False)
        obs, state, avail = self._observe(cell, target, zero_i)
        timestep = TimeStep(obs, state, avail, zero_f, false, false, false, state, zero_f, zero_i)
        return WalkState(cell, target, EpisodeStats(zero_f, zero_i)), timestep

    def step(
        self, key: jax.Array, state: WalkState, actions: jax.Array
    ) -> tuple[WalkState, TimeStep]:
        avail = self._observe(state.cell, state.target, state.stats.episode_length)[2]
        legal = jnp.take_along_axis(avail, actions[:, None], axis=1)[:, 0]  # else: stay
        cell = jnp.where(legal, state.cell + self._moves[actions], state.cell)
        was_there = state.cell == state.target
        arrived = cell == state.target
        reward = jnp.mean((arrived & ~was_there).astype(jnp.float32))
        length = state.stats.episode_length + 1
        episode_return = state.stats.episode_return + reward
        won = jnp.all(arrived)
        done = won | (length >= self.spec.episode_limit)
        reached = self._observe(cell, state.target, length)  # obs, state, avail before reset
        final_state = reached[1]

        next_state, fresh = self.reset(key)
        keep = WalkState(cell, state.target, EpisodeStats(episode_return, length))
        next_state, (obs, global_state, avail) = reset_where(
            done, next_state, keep, (fresh.obs, fresh.state, fresh.avail), reached
        )
        timestep = TimeStep(
            obs=obs,
            state=global_state,
            avail=avail,
            reward=reward,
            terminated=done,
            truncated=jnp.bool_(False),
            won=won,
            final_state=final_state,
            episode_return=episode_return,
            episode_length=length,
        )
        return next_state, timestep
