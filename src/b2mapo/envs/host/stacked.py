"""What a worker process runs: host environments whose every step is b2mapo's whole time
step with the agents stacked, grouped so that one worker steps several of them.

The episode bookkeeping lives here, in the worker: auto-reset, the time limit, running
totals, and the state the finished episode ended in. Gymnasium's vector environment never
sees an episode end (its own auto-reset stays idle), so each of its steps is exactly one
transition of every environment. No JAX here: workers import only numpy and gymnasium.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Any, NamedTuple

import gymnasium
import numpy as np

from b2mapo.envs.spec import EnvSpec


class Observed(NamedTuple):
    """What the agents see, agents stacked: observations, global state, available actions."""

    obs: np.ndarray  # [n, obs_dim] float32
    state: np.ndarray  # [state_dim] float32
    avail: np.ndarray  # [n, num_actions] bool


class Stepped(NamedTuple):
    """A transition of the wrapped environment."""

    observed: Observed
    reward: float  # the team's reward
    terminated: bool
    truncated: bool  # the environment's own time limit
    won: bool


class AgentStacked(abc.ABC):
    """Base of the host adapters: a subclass passes its ``EnvSpec`` and implements ``start``
    and ``advance``; ``reset`` and ``step`` turn them into b2mapo time steps (dicts with the
    fields of ``b2mapo.envs.core.TimeStep``)."""

    def __init__(self, spec: EnvSpec) -> None:
        self.spec = spec
        self._return, self._length = 0.0, 0

    @abc.abstractmethod
    def start(self, seed: int | None) -> Observed:
        """Begin an episode (seeded when ``seed`` is given)."""

    @abc.abstractmethod
    def advance(self, actions: np.ndarray) -> Stepped:
        """Apply one joint action ``[n]`` (actions of absent agents are ignored)."""

    def close(self) -> None:  # noqa: B027 (optional: most adapters have something to close)
        """Release the wrapped environment."""

    def reset(self, seed: int | None) -> dict[str, np.ndarray]:
        observed = self.start(seed)
        self._return, self._length = 0.0, 0
        return _time_step(observed, observed.state, 0.0, False, False, False, 0.0, 0)

    def step(self, actions: np.ndarray) -> dict[str, np.ndarray]:
        stepped = self.advance(actions)
        self._return += stepped.reward
        self._length += 1
        truncated = stepped.truncated or self._length >= self.spec.episode_limit
        truncated &= not stepped.terminated
        ended = stepped.terminated or truncated
        ended_return, ended_length = self._return, self._length
        observed = stepped.observed
        if ended:
            observed = self.start(None)
            self._return, self._length = 0.0, 0
        return _time_step(
            observed,
            stepped.observed.state,
            stepped.reward,
            stepped.terminated,
            truncated,
            stepped.won and ended,
            ended_return,
            ended_length,
        )


def _time_step(
    observed: Observed,
    final_state: np.ndarray,
    reward: float,
    terminated: bool,
    truncated: bool,
    won: bool,
    episode_return: float,
    episode_length: int,
) -> dict[str, np.ndarray]:
    return {
        "obs": observed.obs.astype(np.float32),
        "state": observed.state.astype(np.float32),
        "avail": observed.avail.astype(np.int8),
        "reward": np.float32(reward),
        "terminated": np.int8(terminated),
        "truncated": np.int8(truncated),
        "won": np.int8(won),
        "final_state": final_state.astype(np.float32),
        "episode_return": np.float32(episode_return),
        "episode_length": np.int32(episode_length),
    }


def time_step_space(spec: EnvSpec, count: int) -> gymnasium.spaces.Dict:
    """The space of ``count`` stacked time steps of an environment of ``spec``."""
    n, actions, state = spec.num_agents, spec.num_actions, spec.state_dim

    def box(shape: tuple[int, ...], dtype: Any, low: float = -np.inf, high: float = np.inf):
        return gymnasium.spaces.Box(low, high, (count, *shape), dtype)

    return gymnasium.spaces.Dict(
        {
            "obs": box((n, spec.obs_dim), np.float32),
            "state": box((state,), np.float32),
            "avail": box((n, actions), np.int8, 0, 1),
            "reward": box((), np.float32),
            "terminated": box((), np.int8, 0, 1),
            "truncated": box((), np.int8, 0, 1),
            "won": box((), np.int8, 0, 1),
            "final_state": box((state,), np.float32),
            "episode_return": box((), np.float32),
            "episode_length": box((), np.int32, 0, np.iinfo(np.int32).max),
        }
    )


class EnvGroup(gymnasium.Env):
    """``count`` environments stepped one after another in one worker: a gymnasium
    environment whose observation is their stacked time steps and whose action is their
    stacked joint actions ``[count, n]``.

    The environments are built on the first reset, so that the copy gymnasium builds in the
    main process to read the spaces costs nothing.
    """

    def __init__(self, factory: Callable[[], AgentStacked], spec: EnvSpec, count: int) -> None:
        self._factory, self._count = factory, count
        self._envs: list[AgentStacked] = []
        self.observation_space = time_step_space(spec, count)
        self.action_space = gymnasium.spaces.MultiDiscrete(
            np.full((count, spec.num_agents), spec.num_actions)
        )

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict]:
        del options
        if not self._envs:
            self._envs = [self._factory() for _ in range(self._count)]
        steps = [  # seeds below 2**31: football's engine takes nothing larger
            env.reset(None if seed is None else (seed * self._count + i) % 2**31)
            for i, env in enumerate(self._envs)
        ]
        return _stack(steps), {}

    def step(self, action: np.ndarray) -> tuple[dict[str, np.ndarray], float, bool, bool, dict]:
        steps = [env.step(actions) for env, actions in zip(self._envs, action, strict=True)]
        return _stack(steps), 0.0, False, False, {}

    def close(self) -> None:
        for env in self._envs:
            env.close()


def _stack(steps: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {key: np.stack([step[key] for step in steps]) for key in steps[0]}
