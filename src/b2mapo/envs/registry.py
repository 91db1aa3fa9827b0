"""Registry of environment names (``family:task``) to makers; the CLI's ``--env`` values."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple

from b2mapo.envs.core import Env
from b2mapo.envs.coupled import CoupledPairs
from b2mapo.envs.host.football import SCENARIOS as FOOTBALL_SCENARIOS
from b2mapo.envs.host.football import FootballEnv, check_scenario
from b2mapo.envs.host.pettingzoo import PettingZooEnv
from b2mapo.envs.host.pool import HostEnv, HostPool
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
    "probe:coupled": CoupledPairs,
    # The null check of the coupled game: no pair, every agent plays its own cue, so no DAG
    # pays more than one batch.
    "probe:uncoupled": partial(CoupledPairs, pairs=(), name="probe:uncoupled"),
}


BUILT_IN: frozenset[str] = frozenset(REGISTRY)
"""The environments b2mapo ships (their code is part of b2mapo's own source)."""

HOST_FAMILIES: dict[str, str] = {
    "pettingzoo": "pettingzoo:MODULE, a PettingZoo parallel env, e.g. "
    "pettingzoo:mpe2.simple_spread_v3 (options: --env-kwargs JSON)",
    "grf": "grf:SCENARIO, Google Research Football: " + ", ".join(FOOTBALL_SCENARIOS),
}
"""Families of environments stepped in host worker processes (``b2mapo.envs.host``)."""


def is_host(name: str) -> bool:
    """Whether ``name`` is a host environment (``pettingzoo:...`` or ``grf:...``)."""
    family, sep, task = name.partition(":")
    return bool(sep and task) and family in HOST_FAMILIES


def make_host_env(
    name: str, episode_limit: int | None, kwargs: dict[str, Any], timeout: float
) -> HostEnv:
    """A host environment by name; ``kwargs`` go to its constructor (PettingZoo's
    ``parallel_env``, football's ``create_environment``)."""
    family, _, task = name.partition(":")
    adapter = PettingZooEnv if family == "pettingzoo" else FootballEnv
    return HostEnv(name, partial(adapter, name, task, kwargs, episode_limit), timeout)


class TrainingEnvs(NamedTuple):
    """The environments a run steps: one for training and one for evaluation (the same JAX
    environment, or two pools of host worker processes, which ``pools`` lists to close)."""

    env: Env | HostPool
    eval_env: Env | HostPool
    pools: tuple[HostPool, ...]


def make_training_envs(
    name: str,
    episode_limit: int | None,
    kwargs: dict[str, Any],
    worker_timeout: float,
    num_envs: int,
    eval_episodes: int,
    workers: int,
) -> TrainingEnvs:
    """The training and evaluation environments of a run: a JAX environment steps inside the
    compiled loop; a host environment in a pool of ``num_envs`` (training) and one of
    ``eval_episodes`` (evaluation) environments, each spread over ``workers`` processes."""
    if not is_host(name):
        env = make_env(name, episode_limit)
        return TrainingEnvs(env, env, ())
    host = make_host_env(name, episode_limit, kwargs, worker_timeout)
    pools = (host.pool(num_envs, workers), host.pool(eval_episodes, workers))
    return TrainingEnvs(*pools, pools)


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
    if is_host(name):
        family, _, task = name.partition(":")
        if family == "grf":
            check_scenario(task)
        return
    importable = is_import_path(name)
    if importable and module_exists(name):
        return
    no_module = f"no module {name.partition(':')[0]!r} to import; " if importable else ""
    raise UnknownEnvError(
        f"unknown env {name!r}: {no_module}choose one of: {', '.join(REGISTRY)}, a host env "
        f"(pettingzoo:MODULE, grf:SCENARIO), or your own JAX environment as {IMPORT_FORM} "
        "(docs/environments.md)"
    )


def make_env(name: str, episode_limit: int | None = None) -> Env:
    """Build a JAX environment by name; ``episode_limit`` overrides its default time limit.
    (Host environments are built with ``make_host_env``.)"""
    if is_host(name):
        raise ConfigError(f"env {name!r} is stepped on the host: build it with make_host_env")
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
