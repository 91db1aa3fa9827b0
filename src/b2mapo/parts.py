"""The parts factory: the environments, networks and round that a config trains with.

The one place that knows every round: ``partition=learned`` takes B2MAPO's learned DAG
(``b2mapo.upper``), every other partition the fixed-partition round.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from b2mapo.config import ConfigError, TrainConfig
from b2mapo.envs.core import Env
from b2mapo.envs.host.pool import HostPool
from b2mapo.envs.registry import is_host, make_training_envs
from b2mapo.learner import EngineSettings, init_learner
from b2mapo.networks import Networks
from b2mapo.rollout import reset_envs
from b2mapo.rounds import FixedRound, Round
from b2mapo.state import RunnerState


class Parts(NamedTuple):
    """What a config trains with."""

    env: Env | HostPool  # training environments
    eval_env: Env | HostPool  # evaluation environments
    pools: tuple[HostPool, ...]  # host worker pools to close (none for JAX environments)
    networks: Networks  # π's actor and critic
    round: Round


def make_networks(cfg: TrainConfig, env: Env | HostPool) -> Networks:
    """π's actor and critic for ``env``."""
    return Networks(env.spec, cfg.hidden_size, cfg.share_params, cfg.condition_on_actions)


def make_round(cfg: TrainConfig, env: Env | HostPool, networks: Networks) -> Round:
    """The round of ``cfg``'s algorithm on ``env``."""
    if cfg.partition == "learned":
        from b2mapo.upper.round import LearnedRound

        return LearnedRound(cfg, env, networks)
    return FixedRound(cfg, env, networks)


def init_state(parts: Parts, cfg: TrainConfig, key: jax.Array) -> RunnerState:
    """A fresh runner state of one seed: π's learner, the env loop and the round's own state."""
    param_key, env_key, *own_keys, key = jax.random.split(key, 5)
    learner = init_learner(parts.networks, EngineSettings.of(cfg), param_key)
    loop = reset_envs(parts.env, parts.networks, env_key, cfg.num_envs)
    own = parts.round.init_own(tuple(own_keys), cfg.num_envs)
    return RunnerState(learner, loop, key, jnp.int32(0), own)


def build_parts(cfg: TrainConfig) -> Parts:
    """Environments (host worker pools started here), networks and round of ``cfg``."""
    if is_host(cfg.env) and jax.process_count() > 1:
        raise ConfigError(f"env {cfg.env}: host environments train in one process")
    envs = make_training_envs(
        cfg.env,
        cfg.episode_limit or None,
        cfg.env_kwargs_dict(),
        cfg.worker_timeout,
        cfg.num_envs,
        cfg.eval_episodes,
        cfg.env_workers,
    )
    networks = make_networks(cfg, envs.env)
    try:
        return Parts(
            envs.env, envs.eval_env, envs.pools, networks, make_round(cfg, envs.env, networks)
        )
    except BaseException:
        for pool in envs.pools:
            pool.close()
        raise
