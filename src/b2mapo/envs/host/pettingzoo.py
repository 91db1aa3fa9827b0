"""Any PettingZoo parallel-API environment with discrete actions, as a host environment:
``--env pettingzoo:<module>`` builds ``<module>.parallel_env(**env_kwargs)``.

Agents are stacked in ``possible_agents`` order and padded to the largest observation and
action sizes. An agent that is absent (dead, or not yet spawned) sees zeros and may only
take action 0, which is not sent to the environment. Action masks come from an
``action_mask`` entry of the observation or of the agent's info; the global state is
``state()`` where the environment has one, else the concatenated observations.
"""

from __future__ import annotations

import importlib
from typing import Any

import gymnasium
import numpy as np

from b2mapo.envs.host.stacked import AgentStacked, Observed, Stepped
from b2mapo.envs.spec import EnvSpec
from b2mapo.errors import ConfigError


def _observation_part(space: gymnasium.Space) -> gymnasium.Space:
    """The observation inside PettingZoo's ``{"observation", "action_mask"}`` convention."""
    if isinstance(space, gymnasium.spaces.Dict) and "observation" in space.spaces:
        return space["observation"]
    return space


class PettingZooEnv(AgentStacked):
    """A PettingZoo ``ParallelEnv`` behind b2mapo's agent-stacked time steps."""

    def __init__(
        self, name: str, module: str, kwargs: dict[str, Any], episode_limit: int | None
    ) -> None:
        try:
            maker = importlib.import_module(module).parallel_env
        except ImportError as error:
            raise ConfigError(
                f"env {name!r}: cannot import {module!r} ({error}); PettingZoo environments "
                "need their package installed, e.g. pip install -e '.[pettingzoo]'"
            ) from None
        except AttributeError:
            raise ConfigError(
                f"env {name!r}: module {module!r} has no parallel_env (PettingZoo's parallel API)"
            ) from None
        try:
            self._env = maker(**kwargs)
        except TypeError as error:
            raise ConfigError(f"env {name!r}: bad env_kwargs {kwargs}: {error}") from None
        self._agents = list(self._env.possible_agents)
        self._obs_sizes, self._action_sizes = [], []
        for agent in self._agents:
            action_space = self._env.action_space(agent)
            if not isinstance(action_space, gymnasium.spaces.Discrete):
                raise ConfigError(
                    f"env {name!r}: agent {agent!r} has actions {action_space}; b2mapo needs "
                    "discrete actions (gymnasium.spaces.Discrete)"
                )
            self._action_sizes.append(int(action_space.n))
            part = _observation_part(self._env.observation_space(agent))
            if not isinstance(part, gymnasium.spaces.Box):
                raise ConfigError(
                    f"env {name!r}: agent {agent!r} observes {part}; b2mapo needs array "
                    "observations (gymnasium.spaces.Box)"
                )
            self._obs_sizes.append(int(np.prod(part.shape)))
        limit = episode_limit or getattr(self._env.unwrapped, "max_cycles", None)
        if not limit:
            raise ConfigError(
                f"env {name!r} has no max_cycles to take its time limit from: give --episode-limit"
            )
        self._env.reset(seed=0)  # state() needs an episode
        self._has_state = self._state_or_none() is not None
        obs_dim = max(self._obs_sizes)
        state_dim = (
            int(np.asarray(self._env.state()).size)
            if self._has_state
            else obs_dim * len(self._agents)
        )
        super().__init__(
            EnvSpec(name, len(self._agents), obs_dim, state_dim, max(self._action_sizes), limit)
        )

    def _state_or_none(self) -> np.ndarray | None:
        try:
            return np.asarray(self._env.state(), np.float32).reshape(-1)
        except (NotImplementedError, AttributeError):
            return None

    def _observe(self, raw_obs: dict[str, Any], infos: dict[str, Any]) -> Observed:
        spec = self.spec
        obs = np.zeros((spec.num_agents, spec.obs_dim), np.float32)
        avail = np.zeros((spec.num_agents, spec.num_actions), bool)
        for i, agent in enumerate(self._agents):
            if agent not in raw_obs:  # absent: action 0 only, never sent to the env
                avail[i, 0] = True
                continue
            seen = raw_obs[agent]
            mask = (infos.get(agent) or {}).get("action_mask")
            if isinstance(seen, dict):
                mask = seen.get("action_mask", mask)
                seen = seen["observation"]
            obs[i, : self._obs_sizes[i]] = np.asarray(seen, np.float32).reshape(-1)
            own = self._action_sizes[i]
            avail[i, :own] = True if mask is None else np.asarray(mask, bool)
        state = self._state_or_none() if self._has_state else obs.reshape(-1)
        return Observed(obs, state, avail)

    def start(self, seed: int | None) -> Observed:
        raw_obs, infos = self._env.reset(seed=seed)
        return self._observe(raw_obs, infos)

    def advance(self, actions: np.ndarray) -> Stepped:
        present = set(self._env.agents)
        joint = {a: int(actions[i]) for i, a in enumerate(self._agents) if a in present}
        raw_obs, rewards, terminations, truncations, infos = self._env.step(joint)
        stepped = list(joint)
        ended = not self._env.agents or all(
            terminations.get(a, False) or truncations.get(a, False) for a in stepped
        )
        truncated = ended and not all(terminations.get(a, False) for a in stepped)
        reward = float(np.mean([rewards[a] for a in rewards])) if rewards else 0.0
        won = any(bool((infos.get(a) or {}).get("won", False)) for a in stepped)
        observed = self._observe(raw_obs, infos)
        return Stepped(observed, reward, ended and not truncated, truncated, won)

    def close(self) -> None:
        self._env.close()
