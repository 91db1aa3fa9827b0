"""Users' own JAX environments, written to jaxmarl's ``MultiAgentEnv`` API, trained inside the
compiled loop like SMAX: named by import path (``--env mypkg.envs:MyGame``) or registered
from Python (``b2mapo.envs.register("mygame:v0", maker)``).

What such an environment must provide (checked on loading, each break a one-line error):

- ``agents`` (a non-empty list of names), ``reset(key) -> (obs, state)`` and
  ``step_env(key, state, actions) -> (obs, state, rewards, dones, infos)``, pure and
  jit-able, with ``dones["__all__"]``;
- a 1-D observation of the same size for every agent, and a discrete action space
  (``action_spaces[agent].n``) of the same size for every agent;
- optionally: ``get_avail_actions(state)`` (masks, else every action is available), an
  ``obs["world_state"]`` entry (the critic's global state, else the agents' observations
  concatenated), ``infos["won"]`` (a win flag, else no episode counts as won) and
  ``max_steps`` (its time limit, else ``--episode-limit`` must be given).

The team reward is the mean of the agents' rewards. An episode the environment ends counts
as terminated unless ``state.step`` has reached ``max_steps`` (jaxmarl's time-limit
convention), which is a truncation; an episode b2mapo ends at ``--episode-limit`` is one too.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

import jax
import jax.numpy as jnp

from b2mapo.envs.core import EnvSpec, JaxMARLAdapter
from b2mapo.errors import ConfigError

IMPORT_FORM = "MODULE:ATTRIBUTE"


class EnvContractError(ConfigError):
    """A user's environment that cannot be loaded or breaks the contract above."""


def is_import_path(name: str) -> bool:
    """Whether ``name`` has the ``module:attribute`` form (``smax:3m`` does not: ``3m`` is no
    Python name)."""
    module, sep, attribute = name.partition(":")
    return bool(sep and module and attribute.isidentifier())


def module_exists(name: str) -> bool:
    """Whether the module of ``module:attribute`` can be found (without importing it)."""
    try:
        return importlib.util.find_spec(name.partition(":")[0]) is not None
    except (ImportError, ValueError):  # a parent package that does not exist
        return False


def load_env(name: str, episode_limit: int | None = None) -> UserEnv:
    """Import ``module:attribute``, call it (a class or a zero-argument factory) and wrap the
    environment it returns."""
    module_name, _, attribute = name.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise EnvContractError(f"env {name!r}: cannot import {module_name!r} ({error})") from None
    maker = getattr(module, attribute, None)
    if maker is None:
        raise EnvContractError(f"env {name!r}: module {module_name!r} has no {attribute!r}")
    if not callable(maker):
        raise EnvContractError(
            f"env {name!r}: {attribute!r} must be a class or a zero-argument factory"
        )
    return UserEnv(maker(), name, episode_limit)


class UserEnv(JaxMARLAdapter):
    """A user's ``MultiAgentEnv`` behind the b2mapo contract (the module docstring's rules).
    Its spec comes from the shapes ``reset`` returns, not from the adapter's space reading."""

    def __init__(self, env: Any, name: str, episode_limit: int | None = None) -> None:
        def broken(what: str) -> EnvContractError:
            return EnvContractError(f"env {name!r}: {what}")

        for method in ("reset", "step_env"):
            if not callable(getattr(env, method, None)):
                raise broken(f"has no {method}() (jaxmarl's MultiAgentEnv API)")
        agents = list(getattr(env, "agents", None) or [])
        if not agents:
            raise broken("has no agents (a list of agent names)")
        obs, state = jax.eval_shape(env.reset, jax.random.PRNGKey(0))
        missing = [agent for agent in agents if agent not in obs]
        if missing:
            raise broken(f"reset() returns no observation for {', '.join(missing)}")
        shapes = {agent: obs[agent].shape for agent in agents}
        if len(set(shapes.values())) > 1 or len(shapes[agents[0]]) != 1:
            raise broken(f"observations must be 1-D and of one size for all agents, got {shapes}")
        spaces = getattr(env, "action_spaces", {})
        sizes = {agent: getattr(spaces.get(agent), "n", None) for agent in agents}
        if any(size is None for size in sizes.values()):
            kinds = {agent: type(spaces.get(agent)).__name__ for agent in agents}
            raise broken(f"actions must be discrete (action_spaces[agent].n), got {kinds}")
        if len(set(sizes.values())) > 1:
            raise broken(f"every agent needs the same number of actions, got {sizes}")
        max_steps = getattr(env, "max_steps", None)
        if episode_limit is None and max_steps is None:
            raise broken("has no max_steps: give its time limit with --episode-limit")
        self._env = env
        self._agents = agents
        self._enforced_limit = episode_limit
        self._max_steps = max_steps
        self._has_world_state = "world_state" in obs
        obs_dim = shapes[agents[0]][0]
        state_dim = obs["world_state"].size if self._has_world_state else obs_dim * len(agents)
        num_actions = int(sizes[agents[0]])
        self._has_masks = self._masks_available(env, state, agents, num_actions)
        self.spec = EnvSpec(
            name=name,
            num_agents=len(agents),
            obs_dim=int(obs_dim),
            state_dim=int(state_dim),
            num_actions=num_actions,
            episode_limit=int(episode_limit if episode_limit is not None else max_steps + 1),
        )

    @staticmethod
    def _masks_available(env: Any, state: Any, agents: list[str], num_actions: int) -> bool:
        """Whether ``env.get_avail_actions`` exists and gives one mask per agent."""
        try:
            masks = jax.eval_shape(env.get_avail_actions, state)
        except (AttributeError, NotImplementedError):
            return False
        if not all(agent in masks and masks[agent].shape == (num_actions,) for agent in agents):
            raise EnvContractError(
                f"get_avail_actions() must give a mask of {num_actions} actions per agent"
            )
        return True

    def _global_state(self, raw_obs: dict[str, jax.Array], inner: Any) -> jax.Array:
        if self._has_world_state:
            return raw_obs["world_state"].reshape(-1)
        return jnp.concatenate([raw_obs[agent] for agent in self._agents])

    def _avail(self, inner: Any) -> jax.Array:
        if not self._has_masks:
            return jnp.ones((self.spec.num_agents, self.spec.num_actions), dtype=bool)
        masks = self._env.get_avail_actions(inner)
        return jnp.stack([masks[agent] for agent in self._agents]).astype(bool)

    def _outcome(
        self, inner: Any, rewards: dict[str, jax.Array], all_done: jax.Array, infos: dict
    ) -> tuple[jax.Array, jax.Array, jax.Array]:
        reward = jnp.mean(jnp.stack([rewards[agent] for agent in self._agents]))
        out_of_time = jnp.bool_(False)
        if self._max_steps is not None and hasattr(inner, "step"):
            out_of_time = inner.step >= self._max_steps
        terminated = all_done & ~out_of_time
        won = jnp.any(jnp.asarray(infos["won"], bool)) if "won" in infos else jnp.bool_(False)
        return reward, terminated, all_done & won

    def _time_limit(self, episode_length: jax.Array) -> jax.Array:
        if self._enforced_limit is None:
            return jnp.bool_(False)
        return episode_length >= self._enforced_limit
