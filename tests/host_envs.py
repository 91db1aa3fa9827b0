"""PettingZoo parallel environments a user might bring, for the tests of the host runner
(``--env pettingzoo:tests.host_envs``, ``env_kwargs`` choosing the game and its faults).

``parallel_env(game=...)`` is the module's PettingZoo entry point, as in PettingZoo's own
environment modules.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from gymnasium import spaces
from pettingzoo import ParallelEnv

NUM_ACTIONS = 4


class CallTheTarget(ParallelEnv):
    """``tests.user_envs.CallTheTarget`` as a PettingZoo game: agents see a target action
    (one-hot, and the step as a fraction of the episode) and are paid the fraction of them
    that take it; the last action is never available (masks in the info); four steps, won
    when every agent hits the last target. ``cycle``: target ``t mod 3`` at step ``t``
    instead of random ones, the same game as ``tests.user_envs.CycleTheTarget``.

    ``jax_free``: raise if JAX was imported in the worker (workers need only numpy).
    Faults for the tests, each when its file exists after ``fault_after`` steps of the
    instance: ``crash_file`` (deleted, then the process dies), ``hang_file`` (sleeps),
    ``raise_file`` (raises).
    """

    metadata: ClassVar[dict[str, str]] = {"name": "call_the_target_v0"}

    def __init__(
        self,
        num_agents: int = 2,
        max_cycles: int = 4,
        cycle: bool = False,
        crash_file: str = "",
        hang_file: str = "",
        raise_file: str = "",
        fault_after: int = 0,
        jax_free: bool = False,
    ) -> None:
        self.possible_agents = [f"agent_{i}" for i in range(num_agents)]
        self.max_cycles, self.cycle = max_cycles, cycle
        self._faults = (crash_file, hang_file, raise_file)
        self._fault_after, self._steps_taken = fault_after, 0
        self._rng = np.random.default_rng(0)
        self._jax_free = jax_free

    def observation_space(self, agent: str) -> spaces.Space:
        return spaces.Box(0.0, 1.0, (NUM_ACTIONS + 1,), np.float32)

    def action_space(self, agent: str) -> spaces.Space:
        return spaces.Discrete(NUM_ACTIONS)

    def _new_target(self) -> None:
        if self.cycle:
            self._target = self._step % (NUM_ACTIONS - 1)
        else:
            self._target = int(self._rng.integers(NUM_ACTIONS - 1))

    def _observe(self) -> tuple[dict[str, np.ndarray], dict[str, dict[str, Any]]]:
        seen = np.zeros(NUM_ACTIONS + 1, np.float32)
        seen[self._target] = 1.0
        seen[-1] = self._step / self.max_cycles
        mask = (np.arange(NUM_ACTIONS) < NUM_ACTIONS - 1).astype(np.int8)
        return (
            {a: seen for a in self.agents},
            {a: {"action_mask": mask} for a in self.agents},
        )

    def reset(self, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        self.agents = list(self.possible_agents)
        self._step = 0
        self._new_target()
        return self._observe()

    def _fault(self) -> None:
        self._steps_taken += 1
        if self._steps_taken <= self._fault_after:
            return
        crash, hang, fail = (Path(f) if f else None for f in self._faults)
        if crash is not None and crash.exists():
            crash.unlink()
            os._exit(3)
        if hang is not None and hang.exists():
            time.sleep(3600)
        if fail is not None and fail.exists():
            raise ValueError("the referee walked off")

    def step(self, actions: dict[str, int]) -> tuple[dict, ...]:
        if self._jax_free and "jax" in sys.modules:
            raise RuntimeError("JAX was imported in a host worker")
        self._fault()
        hits = [actions[a] == self._target for a in self.agents]
        reward = float(np.mean(hits))
        self._step += 1
        over = self._step >= self.max_cycles
        won = over and all(hits)
        self._new_target()
        obs, infos = self._observe()
        for info in infos.values():
            info["won"] = won
        rewards = {a: reward for a in self.agents}
        terminations = {a: False for a in self.agents}
        truncations = {a: over for a in self.agents}
        if over:
            self.agents = []
        return obs, rewards, terminations, truncations, infos


class Relay(ParallelEnv):
    """Three agents, one of which leaves: the last agent is gone after the first step, the
    others see their action masks inside dict observations (PettingZoo's
    ``{"observation", "action_mask"}`` convention) and there is no ``state()``. The second
    agent observes less than the first and has fewer actions (padding). The episode
    terminates after two steps and is won when agent 0 took action 1 last."""

    metadata: ClassVar[dict[str, str]] = {"name": "relay_v0"}

    def __init__(self) -> None:
        self.possible_agents = ["runner", "passer", "leaver"]
        self._sizes = {"runner": (3, 3), "passer": (2, 2), "leaver": (3, 3)}

    def observation_space(self, agent: str) -> spaces.Space:
        size, actions = self._sizes[agent]
        return spaces.Dict(
            {
                "observation": spaces.Box(-1.0, 1.0, (size,), np.float32),
                "action_mask": spaces.Box(0, 1, (actions,), np.int8),
            }
        )

    def action_space(self, agent: str) -> spaces.Space:
        return spaces.Discrete(self._sizes[agent][1])

    def _observe(self) -> dict[str, dict[str, np.ndarray]]:
        out = {}
        for i, agent in enumerate(self.agents):
            size, actions = self._sizes[agent]
            mask = np.ones(actions, np.int8)
            mask[0] = 0  # action 0 is never allowed to the agents present
            out[agent] = {
                "observation": np.full(size, (i + 1) * 0.1 + self._step, np.float32),
                "action_mask": mask,
            }
        return out

    def reset(self, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        self.agents = list(self.possible_agents)
        self._step = 0
        return self._observe(), {a: {} for a in self.agents}

    def step(self, actions: dict[str, int]) -> tuple[dict, ...]:
        self.last_actions = dict(actions)
        self._step += 1
        over = self._step >= 2
        won = over and actions["runner"] == 1
        rewards = {a: float(self._step) for a in self.agents}
        terminations = {a: over or a == "leaver" for a in self.agents}
        truncations = {a: False for a in self.agents}
        infos = {a: {"won": won} for a in self.agents}
        self.agents = [] if over else ["runner", "passer"]
        return self._observe(), rewards, terminations, truncations, infos


GAMES = {"call_the_target": CallTheTarget, "relay": Relay}


def parallel_env(game: str = "call_the_target", **kwargs: Any) -> ParallelEnv:
    """PettingZoo's entry point: ``--env pettingzoo:tests.host_envs --env-kwargs
    '{"game": "relay"}'``."""
    return GAMES[game](**kwargs)
