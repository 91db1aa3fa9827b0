"""Registry of environment names (``family:task``) to makers; the CLI's ``--env`` values."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from b2mapo.envs.core import Env
from b2mapo.envs.mpe import SimpleSpreadEnv
from b2mapo.envs.probes import TargetWalk, climbing_game
from b2mapo.envs.smax import SMAX_MAPS, SMAXEnv

EnvMaker = Callable[..., Env]

REGISTRY: dict[str, EnvMaker] = {
    **{f"smax:{map_name}": partial(SMAXEnv, map_name) for map_name in SMAX_MAPS},
    "mpe:simple_spread": SimpleSpreadEnv,
    "probe:climbing": climbing_game,
    "probe:walk": TargetWalk,
}


class UnknownEnvError(ValueError):
    """An environment name that is not in the registry."""


def make_env(name: str, episode_limit: int | None = None) -> Env:
    """Build a registered environment; ``episode_limit`` overrides its default time limit."""
    if name not in REGISTRY:
        raise UnknownEnvError(f"unknown environment {name!r}; choose one of: {', '.join(REGISTRY)}")
    return REGISTRY[name](episode_limit=episode_limit)
