"""A trained policy outside the training loop: ``load_policy(RUN_DIR)``.

The loaded policy is the one that executes: π_ind for B2MAPO (decentralised, no
communication), π for every other algorithm. It is a value with jit-friendly methods::

    policy = b2mapo.load_policy("runs/smax_3m_b2mapo")
    state = policy.initial_state(num_envs)
    state, actions = jax.jit(policy.act)(state, obs, avail, key)   # obs [B, n, o], avail [B, n, A]

``docs/using_a_policy.md`` plays whole episodes of the run's environment with it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from b2mapo import checkpoint, rundir
from b2mapo.config import ConfigError, TrainConfig
from b2mapo.envs.core import Env, EnvSpec
from b2mapo.envs.registry import is_host, make_env, make_host_env
from b2mapo.parts import Parts, init_state, make_networks, make_round
from b2mapo.rounds import Round
from b2mapo.state import RunnerState
from b2mapo.train import Trainer


class PolicyState(NamedTuple):
    """What the policy carries from one step to the next, for a batch of ``B`` envs."""

    carry: jax.Array  # [B, n, h], the actor's GRU state (zeros: a fresh episode)
    batch_index: jax.Array  # [B, n], π's batches when it acts batch by batch (else zeros)


@dataclass(frozen=True)
class Policy:
    """The executing policy of one seed of a run, its config and its environment."""

    round: Round  # the run's round: its environment, networks and executing policy
    params: Any  # the executing policy's parameters
    update: int  # the update of the checkpoint

    @property
    def config(self) -> TrainConfig:
        return self.round.cfg

    @property
    def env(self) -> Env:
        """The run's environment (b2mapo's contract: pure ``reset`` and ``step``)."""
        return self.round.env

    @property
    def spec(self) -> EnvSpec:
        return self.round.env.spec

    def initial_state(self, num_envs: int, key: jax.Array | None = None) -> PolicyState:
        """A fresh state for ``num_envs`` envs. A policy that acts batch by batch on a fixed
        partition (``b2mapo-fixed``) draws it from ``key`` (default: key 0)."""
        carry = self.round.networks.initial_carry((num_envs,))
        key = jax.random.PRNGKey(0) if key is None else key
        return PolicyState(carry, self.round.executing_batches(key, num_envs))

    def reset(self, state: PolicyState, done: jax.Array) -> PolicyState:
        """``state`` with the GRU state of the envs where ``done[B]`` restarted."""
        carry = jnp.where(done[:, None, None], jnp.zeros_like(state.carry), state.carry)
        return state._replace(carry=carry)

    def act(
        self,
        state: PolicyState,
        obs: jax.Array,
        avail: jax.Array,
        key: jax.Array,
        greedy: bool = True,
    ) -> tuple[PolicyState, jax.Array]:
        """Actions ``[B, n]`` for observations ``[B, n, obs_dim]`` and available actions
        ``[B, n, num_actions]`` (bool); returns the next state too. ``greedy`` takes the most
        likely action, otherwise one is sampled with ``key``. Pure: ``jax.jit`` it (with
        ``greedy`` static) or call it inside your own compiled loop."""
        no_restart = jnp.zeros(obs.shape[:1], bool)  # restarts: ``reset`` zeroes the state
        carry, actions = self.round.execute(
            self.params, state.carry, obs, no_restart, avail, state.batch_index, key, greedy
        )
        return state._replace(carry=carry), actions


def _checkpoint_path(run_dir: Path, update: int | None) -> tuple[int, Path]:
    """The checkpoint of ``update`` (None: the newest) of a run directory."""
    saved = dict(rundir.checkpoints(run_dir))
    if not saved:
        raise ConfigError(f"{run_dir} has no checkpoint")
    if update is None:
        update = max(saved)
    elif update not in saved:
        kept = ", ".join(str(u) for u in sorted(saved))
        raise ConfigError(f"{run_dir} has no checkpoint of update {update}; saved: {kept}")
    return update, saved[update]


def _restore(path: Path, template: RunnerState) -> RunnerState:
    """The checkpoint at ``path`` as device arrays: networks index parameters with traced
    indices, which the numpy arrays msgpack gives refuse outside ``jit``."""
    return jax.tree.map(jnp.asarray, checkpoint.restore(path, template))


def load_state(run_dir: Path, update: int | None = None) -> tuple[Trainer, int, RunnerState]:
    """A run's trainer and the checkpoint of ``update`` (None: the newest), all seeds.

    ``ConfigError`` if the directory holds no run or no such checkpoint, or if the checkpoint
    does not fit the run's config (another version of b2mapo, or an edited config.json).
    """
    cfg = checkpoint.load_config(run_dir)
    update, path = _checkpoint_path(run_dir, update)
    # One device: a checkpoint is read wherever it is looked at, whatever the run trained on.
    trainer = Trainer(replace(cfg, devices=1))
    # The state's structure is all msgpack needs: its shapes, not a (slow) real init.
    return trainer, update, _restore(path, trainer.state_shapes())


def load_learned_state(
    run_dir: Path, update: int | None = None
) -> tuple[Trainer, int, RunnerState]:
    """``load_state`` of a B2MAPO run; ``ConfigError`` if the run learns no DAG."""
    cfg = checkpoint.load_config(run_dir)
    if cfg.partition != "learned":
        raise ConfigError(
            f"{run_dir} is a {cfg.algo} run (partition={cfg.partition}); only B2MAPO runs "
            "(partition=learned) have a DAG generator"
        )
    return load_state(run_dir, update)


def _acting_parts(cfg: TrainConfig) -> Parts:
    """What acting needs of a run: its environment (a host environment's spec, no worker
    process started), networks and round."""
    if is_host(cfg.env):
        host = make_host_env(cfg.env, cfg.episode_limit or None, cfg.env_kwargs_dict(), 1.0)
        env = host.pool(cfg.num_envs, 1)  # its workers start at the first reset, never here
    else:
        env = make_env(cfg.env, cfg.episode_limit or None)
    networks = make_networks(cfg, env)
    return Parts(env, env, (), networks, make_round(cfg, env, networks))


def load_policy(run_dir: str | Path, update: int | None = None, seed_index: int = 0) -> Policy:
    """The executing policy of a run directory written by ``b2mapo train``: π_ind for
    B2MAPO, π otherwise, from the newest checkpoint (or that of ``update``) of seed
    ``seed_index`` (0-based, among the run's ``--seeds``)."""
    run_dir = Path(run_dir)
    cfg = checkpoint.load_config(run_dir)
    update, path = _checkpoint_path(run_dir, update)
    if not 0 <= seed_index < cfg.seeds:
        raise ConfigError(
            f"seed_index={seed_index} must be in 0..{cfg.seeds - 1} (the run's seeds)"
        )
    parts = _acting_parts(cfg)
    keys = jnp.zeros((cfg.seeds, 2), jnp.uint32)
    template = jax.eval_shape(jax.vmap(lambda key: init_state(parts, cfg, key)), keys)
    state = _restore(path, template)
    policies = parts.round.policies(jax.tree.map(lambda x: x[seed_index], state))
    return Policy(parts.round, parts.round.executing_params(policies), update)
