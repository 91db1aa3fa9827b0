"""jaxmarl's MPE ``simple_spread`` behind the b2mapo contract (cooperative navigation)."""

from __future__ import annotations

from typing import Any

from b2mapo.envs import _jaxmarl  # noqa: F401  (quiet, partial jaxmarl import first)

# isort: split
import jax
import jax.numpy as jnp
from jaxmarl.environments.mpe.simple_spread import SimpleSpreadMPE

from b2mapo.envs.core import JaxMARLAdapter


class SimpleSpreadEnv(JaxMARLAdapter):
    """``simple_spread``: the team reward is the mean of the agents' rewards; no wins, only
    truncation at the time limit; every action is always available; the global state is the
    concatenation of all agents' observations."""

    def __init__(self, num_agents: int = 3, episode_limit: int | None = None) -> None:
        # jaxmarl's MPE ends an episode on the step after ``max_steps`` steps.
        limit_kwargs = {} if episode_limit is None else {"max_steps": episode_limit - 1}
        env = SimpleSpreadMPE(num_agents=num_agents, num_landmarks=num_agents, **limit_kwargs)
        obs_dim = int(env.observation_spaces[env.agents[0]].shape[0])
        super().__init__(
            env,
            name="mpe:simple_spread",
            state_dim=obs_dim * num_agents,
            episode_limit=int(env.max_steps) + 1,
        )

    def _global_state(self, raw_obs: dict[str, jax.Array], inner: Any) -> jax.Array:
        return jnp.concatenate([raw_obs[agent] for agent in self._agents])

    def _avail(self, inner: Any) -> jax.Array:
        return jnp.ones((self.spec.num_agents, self.spec.num_actions), dtype=bool)

    def _raw_obs(self, inner: Any) -> dict[str, jax.Array]:
        return self._env.get_obs(inner)  # what jaxmarl's MPE reset and step return

    def _outcome(
        self, inner: Any, rewards: dict[str, jax.Array], all_done: jax.Array, infos: dict
    ) -> tuple[jax.Array, jax.Array, jax.Array]:
        reward = jnp.mean(jnp.stack([rewards[agent] for agent in self._agents]))
        false = jnp.bool_(False)
        return reward, false, false
