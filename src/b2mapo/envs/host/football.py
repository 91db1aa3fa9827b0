"""Google Research Football as a host environment: ``--env grf:<scenario>``, e.g. the paper's
``grf:academy_counterattack_easy`` and ``grf:academy_counterattack_hard``.

Each controlled player of the left team is an agent observing its ``simple115v2`` vector;
the critic's state is the agents' observations concatenated. The reward is the scoring
reward (+1 when the left team scores, -1 when it concedes), an episode is won when the left
team scores, and the scenario's game duration (400 steps in the academy) is a truncation.
``--env-kwargs`` passes further ``gfootball.env.create_environment`` options, e.g.
``{"rewards": "scoring,checkpoints"}`` or ``{"number_of_left_players_agent_controls": 3}``.
Needs the ``football`` extra (README: a C++ build of about ten minutes).
"""

from __future__ import annotations

import contextlib
import io
import warnings
from types import ModuleType
from typing import Any

import numpy as np

from b2mapo.envs.host.stacked import AgentStacked, Observed, Stepped
from b2mapo.envs.spec import EnvSpec
from b2mapo.errors import ConfigError

# Academy scenarios: controlled left players by default, and the game duration in steps.
SCENARIOS: dict[str, tuple[int, int]] = {
    "academy_empty_goal_close": (1, 400),
    "academy_empty_goal": (1, 400),
    "academy_run_to_score": (1, 400),
    "academy_run_to_score_with_keeper": (1, 400),
    "academy_pass_and_shoot_with_keeper": (2, 400),
    "academy_run_pass_and_shoot_with_keeper": (2, 400),
    "academy_3_vs_1_with_keeper": (3, 400),
    "academy_corner": (4, 400),
    "academy_counterattack_easy": (4, 400),  # the paper's scenarios: 4 agents
    "academy_counterattack_hard": (4, 400),
    "academy_single_goal_versus_lazy": (10, 3000),
}
OBS_DIM, NUM_ACTIONS = 115, 19  # simple115v2; gfootball's default action set


def _football() -> ModuleType:
    """``gfootball.env``, imported without the notice its gym (0.25) prints on import."""
    with contextlib.redirect_stderr(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import gfootball.env

    return gfootball.env


def check_scenario(scenario: str) -> None:
    """``ConfigError`` unless ``scenario`` is one b2mapo knows the players and duration of."""
    if scenario not in SCENARIOS:
        raise ConfigError(
            f"unknown football scenario {scenario!r}; choose one of: {', '.join(SCENARIOS)}"
        )


class FootballEnv(AgentStacked):
    """One game of a football scenario; the engine is built on the first episode, seeded."""

    def __init__(
        self, name: str, scenario: str, kwargs: dict[str, Any], episode_limit: int | None
    ) -> None:
        check_scenario(scenario)
        players, duration = SCENARIOS[scenario]
        self._options = {
            "env_name": scenario,
            "representation": "simple115v2",
            "number_of_left_players_agent_controls": players,
            "rewards": "scoring",
            "render": False,
            **kwargs,
        }
        players = int(self._options["number_of_left_players_agent_controls"])
        if self._options["representation"] != "simple115v2":
            raise ConfigError(f"env {name!r}: b2mapo reads simple115v2 observations only")
        try:
            _football()  # the engine itself is built per worker, on the first episode
        except ImportError:
            raise ConfigError(
                f"env {name!r} needs Google Research Football: see the README's football "
                "section (system packages, then pip install -e '.[football]')"
            ) from None
        self._duration = duration
        self._env: Any = None
        limit = episode_limit or duration
        super().__init__(EnvSpec(name, players, OBS_DIM, OBS_DIM * players, NUM_ACTIONS, limit))

    def _observe(self, raw_obs: np.ndarray) -> Observed:
        obs = np.asarray(raw_obs, np.float32).reshape(self.spec.num_agents, OBS_DIM)
        avail = np.ones((self.spec.num_agents, NUM_ACTIONS), bool)
        return Observed(obs, obs.reshape(-1), avail)

    def start(self, seed: int | None) -> Observed:
        if self._env is None:
            options = dict(self._options)
            if seed is not None:
                options["other_config_options"] = {
                    **options.get("other_config_options", {}),
                    "game_engine_random_seed": seed,
                }
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # gym's deprecations of its old step API
                self._env = _football().create_environment(**options)
        self._steps = 0
        return self._observe(self._env.reset())

    def advance(self, actions: np.ndarray) -> Stepped:
        raw_obs, reward, done, info = self._env.step(np.asarray(actions).tolist())
        self._steps += 1
        scored = float(info.get("score_reward", 0))
        out_of_time = bool(done) and self._steps >= self._duration
        return Stepped(
            self._observe(raw_obs),
            float(np.mean(reward)),
            bool(done) and not out_of_time,
            out_of_time,
            scored > 0,
        )

    def close(self) -> None:
        if self._env is not None:
            self._env.close()
