"""Probe environments that test one property each; pure JAX, the b2mapo contract."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from b2mapo.envs.core import EnvSpec, TimeStep

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
