"""Registry of environment names (``family:task``) to makers; the CLI's ``--env`` values."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from b2mapo.envs.core import Env
from b2mapo.envs.mpe import SimpleSpreadEnv
from b2mapo.envs.probes import TargetWalk, climbing_game
from b2mapo.envs.smax import SMAX_MAPS, SMAXEnv
from b2mapo.envs.user import IMPORT_FORM, UserEnv, is_import_path, load_env, module_exists
from b2mapo.errors import ConfigError

EnvMaker = Callable[..., Env]

REGISTRY: dict[str, EnvMaker] = {
    **{f"smax:{map_name}": partial(SMAXEnv, map_name) for map_name in SMAX_MAPS},
    "mpe:simple_spread": SimpleSpreadEnv,
    "probe:climbing": climbing_game,
    "probe:walk": TargetWalk,
}


BUILT_IN: frozenset[str] = frozenset(REGISTRY)
"""The environments b2mapo ships (their code is part of b2mapo's own source)."""


class UnknownEnvError(ConfigError):
    """An environment name that is neither registered nor an importable ``module:attribute``."""


def register(name: str, maker: Callable[[], Any]) -> None:
    """Make ``name`` an environment name for this process (``resolve``, ``Trainer``, ``train``):
    ``maker()`` returns a jaxmarl ``MultiAgentEnv``, wrapped and checked as ``--env
    module:attribute`` environments are (``b2mapo.envs.user``), or a b2mapo ``Env``."""
    if name in BUILT_IN:
        raise ConfigError(f"env {name!r} is built in; register under another name")
    REGISTRY[name] = maker


def check_name(name: str) -> None:
    """``UnknownEnvError`` unless ``make_env`` can try ``name``: registered, or
    ``module:attribute`` with a module that exists (whether the attribute and the environment
    are right is found when it is built)."""
    if name in REGISTRY:
        return
    importable = is_import_path(name)
    if importable and module_exists(name):
        return
    no_module = f"no module {name.partition(':')[0]!r} to import; " if importable else ""
    raise UnknownEnvError(
        f"unknown env {name!r}: {no_module}choose one of: {', '.join(REGISTRY)}, or give "
        f"your own JAX environment as {IMPORT_FORM} (docs/environments.md)"
    )


def make_env(name: str, episode_limit: int | None = None) -> Env:
    """Build an environment by name; ``episode_limit`` overrides its default time limit."""
    if name in BUILT_IN:
        return REGISTRY[name](episode_limit=episode_limit)
    if name in REGISTRY:
        made = REGISTRY[name]()
        if not hasattr(made, "spec"):  # a jaxmarl environment
            return UserEnv(made, name, episode_limit)
        if episode_limit is not None:
            raise ConfigError(f"env {name!r} is a b2mapo Env: set its time limit in its maker")
        return made
    check_name(name)
    return load_env(name, episode_limit)
