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
from b2mapo.train import RunnerState, Trainer


class PolicyState(NamedTuple):
    """What the policy carries from one step to the next, for a batch of ``B`` envs."""

    carry: jax.Array  # [B, n, h], the actor's GRU state (zeros: a fresh episode)
    batch_index: jax.Array  # [B, n], π's batches when it acts batch by batch (else zeros)


@dataclass(frozen=True)
class Policy:
    """The executing policy of one seed of a run, its config and its environment."""

    trainer: Trainer  # built from the run's config: networks, environment, partitioner
    params: Any  # the executing policy's parameters
    update: int  # the update of the checkpoint

    @property
    def config(self) -> TrainConfig:
        return self.trainer.cfg

    @property
    def env(self) -> Env:
        """The run's environment (b2mapo's contract: pure ``reset`` and ``step``)."""
        return self.trainer.env

    @property
    def spec(self) -> EnvSpec:
        return self.trainer.env.spec

    def initial_state(self, num_envs: int, key: jax.Array | None = None) -> PolicyState:
        """A fresh state for ``num_envs`` envs. A policy that acts batch by batch on a fixed
        partition (``b2mapo-fixed``) draws it from ``key`` (default: key 0)."""
        carry = self.trainer.networks.initial_carry((num_envs,))
        n = self.spec.num_agents
        batch_index = jnp.zeros((num_envs, n), jnp.int32)
        if not self.trainer.learned and self.config.condition_on_actions:
            key = jax.random.PRNGKey(0) if key is None else key
            fixed = self.trainer.partitioner.partition(key, jnp.zeros((n,)))
            batch_index = jnp.broadcast_to(fixed, (num_envs, n))
        return PolicyState(carry, batch_index)

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
        if self.trainer.learned:
            carry, actions = self.trainer.derived.act(
                self.params, state.carry, obs, no_restart, avail, key, greedy
            )
        else:
            carry, actions, _ = self.trainer.networks.policy_step(
                self.params["actor"],
                state.carry,
                obs,
                no_restart,
                avail,
                state.batch_index,
                key,
                greedy,
            )
        return state._replace(carry=carry), actions


def load_state(run_dir: Path, update: int | None = None) -> tuple[Trainer, int, RunnerState]:
    """A run's trainer and the checkpoint of ``update`` (None: the newest), all seeds.

    ``ConfigError`` if the directory holds no run or no such checkpoint, or if the checkpoint
    does not fit the run's config (another version of b2mapo, or an edited config.json).
    """
    cfg = checkpoint.load_config(run_dir)
    saved = dict(rundir.checkpoints(run_dir))
    if not saved:
        raise ConfigError(f"{run_dir} has no checkpoint")
    if update is None:
        update = max(saved)
    elif update not in saved:
        kept = ", ".join(str(u) for u in sorted(saved))
        raise ConfigError(f"{run_dir} has no checkpoint of update {update}; saved: {kept}")
    # One device: a checkpoint is read wherever it is looked at, whatever the run trained on.
    trainer = Trainer(replace(cfg, devices=1))
    # The state's structure is all msgpack needs: its shapes, not a (slow) real init.
    template = trainer.state_shapes()
    state = checkpoint.restore(saved[update], template)
    # Device arrays, not the numpy arrays msgpack gives: networks index parameters with traced
    # indices, which numpy arrays refuse outside ``jit``.
    return trainer, update, jax.tree.map(jnp.asarray, state)


def load_policy(run_dir: str | Path, update: int | None = None, seed_index: int = 0) -> Policy:
    """The executing policy of a run directory written by ``b2mapo train``: π_ind for
    B2MAPO, π otherwise, from the newest checkpoint (or that of ``update``) of seed
    ``seed_index`` (0-based, among the run's ``--seeds``)."""
    run_dir = Path(run_dir)
    trainer, update, state = load_state(run_dir, update)
    seeds = trainer.cfg.seeds
    if not 0 <= seed_index < seeds:
        raise ConfigError(f"seed_index={seed_index} must be in 0..{seeds - 1} (the run's seeds)")
    policies = trainer.policies(jax.tree.map(lambda x: x[seed_index], state))
    params = policies.derived if trainer.learned else policies.joint
    return Policy(trainer, params, update)
