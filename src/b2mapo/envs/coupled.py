"""A planted-coupling probe: a team whose true dependency graph is known, so that a learned
DAG can be scored against it (``b2mapo.reproduce.recovery``).

Some agents form coupled pairs, the others act alone. Every step each agent sees a private
random cue. A singleton scores by playing its cue. A pair scores when both agents play the
same action and that action is one of their two cues: the agent acting second can always
satisfy this by copying its partner's action, which it only sees if the DAG puts the partner
in an earlier batch. Agents that act at once can do no better than agreeing on a fixed action
(right with probability ``1 - (1 - 1/A)^2``), because neither sees the other's cue.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from b2mapo.envs.core import EnvSpec, EpisodeStats, TimeStep, reset_where

DEFAULT_PAIRS = ((0, 1), (2, 3))


class CoupledState(NamedTuple):
    """State of ``CoupledPairs``: the cues of the coming step, the steps so far in which
    every constraint held, and the running episode totals."""

    cue: jax.Array  # [n] int32
    perfect: jax.Array  # [] int32
    stats: EpisodeStats


class CoupledPairs:
    """``n`` agents, of which ``pairs`` are coupled and the rest act alone, for episodes of
    ``episode_limit`` steps (default 8). Observation: the one-hot of the agent's own cue
    (redrawn every step, or once per episode with ``resample_cues=False``); global state: all
    cues and the time fraction; every action is always available.

    One constraint per singleton (play your cue) and one per pair (play the same action, one
    of the pair's two cues); the reward of a step is the fraction of constraints satisfied.
    With no pairs (``probe:uncoupled``) nothing is coupled: the null check that a learned DAG
    invents no structure. Every episode terminates at the limit, won if every constraint held
    in at least ``win_fraction`` of its steps: the limit is part of the game (the state
    carries the time fraction), so a lost episode is no truncation to bootstrap past.
    """

    def __init__(
        self,
        episode_limit: int | None = None,
        num_agents: int = 6,
        num_actions: int = 4,
        pairs: Sequence[tuple[int, int]] = DEFAULT_PAIRS,
        win_fraction: float = 0.75,
        resample_cues: bool = True,
        name: str = "probe:coupled",
    ) -> None:
        coupled = [agent for pair in pairs for agent in pair]
        if any(len(pair) != 2 for pair in pairs):
            raise ValueError(f"pairs {pairs!r} must be pairs of agents")
        if len(set(coupled)) != len(coupled) or not all(0 <= a < num_agents for a in coupled):
            raise ValueError(f"pairs {pairs!r} must name distinct agents in [0, {num_agents - 1}]")
        if num_actions < 2:
            raise ValueError(f"num_actions={num_actions} must be >= 2")
        if not 0.0 < win_fraction <= 1.0:
            raise ValueError(f"win_fraction={win_fraction} must be in (0, 1]")
        self.pairs = tuple((int(i), int(j)) for i, j in pairs)
        self._resample = resample_cues
        limit = episode_limit or 8
        self._needed = math.ceil(win_fraction * limit)  # perfect steps an episode needs to win
        partner = np.arange(num_agents)
        for i, j in self.pairs:
            partner[i], partner[j] = j, i
        self._partner = jnp.asarray(partner, jnp.int32)
        self._single = jnp.asarray(partner == np.arange(num_agents))
        # A pair's constraint is counted once: half on each of its agents.
        self._weight = jnp.where(self._single, 1.0, 0.5).astype(jnp.float32)
        self._num_constraints = num_agents - len(self.pairs)
        self.spec = EnvSpec(
            name=name,
            num_agents=num_agents,
            obs_dim=num_actions,  # one-hot own cue
            state_dim=num_agents * num_actions + 1,  # every agent's cue and the time fraction
            num_actions=num_actions,
            episode_limit=limit,
        )

    def true_dependencies(self) -> np.ndarray:
        """The planted dependency graph: ``[n, n]`` bool, symmetric, True for coupled pairs."""
        n = self.spec.num_agents
        truth = np.zeros((n, n), dtype=bool)
        for i, j in self.pairs:
            truth[i, j] = truth[j, i] = True
        return truth

    def satisfied(self, cue: jax.Array, actions: jax.Array) -> jax.Array:
        """Per agent ``[n]`` bool: its constraint holds (a pair's agents share theirs)."""
        partner_action, partner_cue = actions[self._partner], cue[self._partner]
        agree = (actions == partner_action) & ((actions == cue) | (actions == partner_cue))
        return jnp.where(self._single, actions == cue, agree)

    def _draw_cues(self, key: jax.Array) -> jax.Array:
        return jax.random.randint(key, (self.spec.num_agents,), 0, self.spec.num_actions)

    def _observe(self, cue: jax.Array, length: jax.Array) -> tuple[jax.Array, ...]:
        obs = jax.nn.one_hot(cue, self.spec.num_actions, dtype=jnp.float32)
        time = (length / self.spec.episode_limit).astype(jnp.float32)[None]
        avail = jnp.ones((self.spec.num_agents, self.spec.num_actions), bool)
        return obs, jnp.concatenate([obs.reshape(-1), time]), avail

    def reset(self, key: jax.Array) -> tuple[CoupledState, TimeStep]:
        cue = self._draw_cues(key)
        zero_f, zero_i, false = jnp.float32(0.0), jnp.int32(0), jnp.bool_(False)
        obs, state, avail = self._observe(cue, zero_i)
        timestep = TimeStep(obs, state, avail, zero_f, false, false, false, state, zero_f, zero_i)
        return CoupledState(cue, zero_i, EpisodeStats(zero_f, zero_i)), timestep

    def step(
        self, key: jax.Array, state: CoupledState, actions: jax.Array
    ) -> tuple[CoupledState, TimeStep]:
        ok = self.satisfied(state.cue, actions)
        reward = jnp.sum(jnp.where(ok, self._weight, 0.0)) / self._num_constraints
        perfect = state.perfect + jnp.all(ok).astype(jnp.int32)
        length = state.stats.episode_length + 1
        episode_return = state.stats.episode_return + reward
        done = length >= self.spec.episode_limit
        won = done & (perfect >= self._needed)
        cue_key, reset_key = jax.random.split(key)
        cue = self._draw_cues(cue_key) if self._resample else state.cue
        reached = self._observe(cue, length)  # obs, state, avail before the reset

        next_state, fresh = self.reset(reset_key)
        keep = CoupledState(cue, perfect, EpisodeStats(episode_return, length))
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
            final_state=reached[1],
            episode_return=episode_return,
            episode_length=length,
        )
        return next_state, timestep
