"""Environments a user might write to jaxmarl's ``MultiAgentEnv`` API, outside b2mapo, for the
tests of ``--env module:attribute`` and ``b2mapo.envs.register``."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jaxmarl.environments.multi_agent_env import MultiAgentEnv
from jaxmarl.environments.spaces import Box, Discrete

NUM_ACTIONS = 4


class GameState(NamedTuple):
    target: jax.Array  # [] int32, the action every agent should take this step
    step: jax.Array  # [] int32


class CallTheTarget(MultiAgentEnv):
    """Two agents see a target action and are paid when both take it; the last action is
    never available; an episode is four steps and is won when both hit the last target."""

    def __init__(self, num_agents: int = 2, max_steps: int = 4) -> None:
        super().__init__(num_agents)
        self.max_steps = max_steps
        self.observation_spaces = {a: Box(0.0, 1.0, (NUM_ACTIONS + 1,)) for a in self.agents}
        self.action_spaces = {a: Discrete(NUM_ACTIONS) for a in self.agents}

    def _observe(self, state: GameState) -> dict[str, jax.Array]:
        seen = jnp.concatenate(
            [jax.nn.one_hot(state.target, NUM_ACTIONS), state.step[None] / self.max_steps]
        )
        return {a: seen for a in self.agents}

    def reset(self, key: jax.Array) -> tuple[dict[str, jax.Array], GameState]:
        state = GameState(jax.random.randint(key, (), 0, NUM_ACTIONS - 1), jnp.int32(0))
        return self._observe(state), state

    def step_env(self, key, state, actions):
        hits = jnp.stack([actions[a] == state.target for a in self.agents])
        reward = jnp.mean(hits.astype(jnp.float32))
        step = state.step + 1
        done = step >= self.max_steps
        next_state = GameState(jax.random.randint(key, (), 0, NUM_ACTIONS - 1), step)
        rewards = {a: reward for a in self.agents}
        dones = {a: done for a in self.agents} | {"__all__": done}
        return self._observe(next_state), next_state, rewards, dones, {"won": done & hits.all()}

    def get_avail_actions(self, state: GameState) -> dict[str, jax.Array]:
        mask = jnp.arange(NUM_ACTIONS) < NUM_ACTIONS - 1
        return {a: mask for a in self.agents}


class CycleTheTarget(CallTheTarget):
    """``CallTheTarget`` without randomness: the target at step t is t mod 3, the same game
    as ``tests.host_envs.CallTheTarget(cycle=True)`` (a PettingZoo twin for the host runner)."""

    def reset(self, key: jax.Array) -> tuple[dict[str, jax.Array], GameState]:
        state = GameState(jnp.int32(0), jnp.int32(0))
        return self._observe(state), state

    def step_env(self, key, state, actions):
        _, next_state, rewards, dones, infos = super().step_env(key, state, actions)
        next_state = next_state._replace(target=next_state.step % (NUM_ACTIONS - 1))
        return self._observe(next_state), next_state, rewards, dones, infos


def three_agents() -> CallTheTarget:
    """A zero-argument factory, as ``--env tests.user_envs:three_agents`` calls it."""
    return CallTheTarget(num_agents=3)


class RaggedObservations(CallTheTarget):
    """Breaks the contract: the second agent sees less than the first."""

    def _observe(self, state: GameState) -> dict[str, jax.Array]:
        seen = super()._observe(state)
        return seen | {self.agents[1]: seen[self.agents[1]][:2]}


class ContinuousActions(CallTheTarget):
    """Breaks the contract: actions are a box, not a choice."""

    def __init__(self) -> None:
        super().__init__()
        self.action_spaces = {a: Box(-1.0, 1.0, (2,)) for a in self.agents}


NOT_AN_ENV = 42
