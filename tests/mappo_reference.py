"""The foundation's MAPPO update, kept verbatim as the reference the engine must equal at K = 1.

Test code only: the engine (``b2mapo.engine``) is what trains.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from b2mapo.config import TrainConfig
from b2mapo.learner import EngineSettings, LearnerState, make_optimiser
from b2mapo.losses import (
    ValueNorm,
    categorical_entropy,
    categorical_log_prob,
    clipped_surrogate,
    clipped_value_loss,
    gae,
    masked_mean,
    normalise,
)
from b2mapo.networks import Networks, Params
from b2mapo.rollout import Trajectory, Transition


class Batch(NamedTuple):
    """What one PPO minibatch needs: the transitions plus the targets computed from them."""

    transitions: Transition  # leaves [T, B, ...]
    initial_carry: jax.Array  # [B, n, h]
    advantages: jax.Array  # [T, B, n], normalised
    value_targets: jax.Array  # [T, B, n], normalised scale
    active: jax.Array  # [T, B, n], the agent had a choice of action


def ppo_loss(
    params: dict[str, Params], networks: Networks, batch: Batch, cfg: TrainConfig
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Actor loss (clipped surrogate and entropy bonus) plus critic loss (clipped, Huber)."""
    tr = batch.transitions
    logits = networks.unroll(params["actor"], batch.initial_carry, tr.obs, tr.first, tr.avail)
    log_prob = categorical_log_prob(logits, tr.action)
    ratio = jnp.exp(log_prob - tr.log_prob)
    surrogate = clipped_surrogate(ratio, batch.advantages, cfg.clip_eps)
    policy_loss = -masked_mean(surrogate, batch.active)
    entropy = masked_mean(categorical_entropy(logits), batch.active)

    values = networks.value(params["critic"], tr.state)
    value_loss = jnp.mean(
        clipped_value_loss(values, tr.value, batch.value_targets, cfg.clip_eps, cfg.huber_delta)
    )
    total = policy_loss - cfg.ent_coef * entropy + value_loss
    metrics = {
        "policy_loss": policy_loss,
        "value_loss": value_loss,
        "entropy": entropy,
        "approx_kl": masked_mean((ratio - 1.0) - jnp.log(ratio), batch.active),
        "clipfrac": masked_mean(jnp.abs(ratio - 1.0) > cfg.clip_eps, batch.active),
    }
    return total, metrics


def prepare_batch(
    trajectory: Trajectory, value_norm: ValueNorm, cfg: TrainConfig
) -> tuple[Batch, ValueNorm]:
    """GAE advantages and value targets for a rollout; folds the targets into ``value_norm``."""
    tr = trajectory.transitions
    values = value_norm.denormalise(tr.value)
    next_values = value_norm.denormalise(tr.next_value)
    advantages = gae(
        tr.reward[..., None],
        values,
        next_values,
        tr.terminated[..., None].astype(jnp.float32),
        tr.done[..., None].astype(jnp.float32),
        cfg.gamma,
        cfg.gae_lambda,
    )
    targets = advantages + values
    everything = jnp.ones_like(targets, dtype=bool)
    if cfg.value_norm:
        value_norm = value_norm.update(targets, everything, beta=0.99999)
    active = tr.avail.sum(-1) > 1
    batch = Batch(
        transitions=tr,
        initial_carry=trajectory.initial_carry,
        advantages=normalise(advantages, active),
        value_targets=value_norm.normalise(targets),
        active=active,
    )
    return batch, value_norm


def _minibatches(batch: Batch, key: jax.Array, count: int) -> Batch:
    """Shuffle environments and split them into ``count`` minibatches (new leading axis)."""
    num_envs = batch.initial_carry.shape[0]
    order = jax.random.permutation(key, num_envs)

    def split(x: jax.Array, env_axis: int) -> jax.Array:
        x = jnp.take(x, order, axis=env_axis)
        x = jnp.moveaxis(x, env_axis, 0)
        x = x.reshape(count, num_envs // count, *x.shape[1:])
        return jnp.moveaxis(x, 1, env_axis + 1)

    def split_time_major(tree: jax.Array | Transition) -> jax.Array | Transition:
        return jax.tree.map(lambda x: split(x, 1), tree)

    return Batch(
        transitions=split_time_major(batch.transitions),
        initial_carry=split(batch.initial_carry, 0),
        advantages=split_time_major(batch.advantages),
        value_targets=split_time_major(batch.value_targets),
        active=split_time_major(batch.active),
    )


def mappo_update(
    learner: LearnerState,
    trajectory: Trajectory,
    key: jax.Array,
    networks: Networks,
    cfg: TrainConfig,
) -> tuple[LearnerState, dict[str, jax.Array]]:
    """One MAPPO update: ``epochs`` passes of ``minibatches`` PPO steps over the rollout."""
    batch, value_norm = prepare_batch(trajectory, learner.value_norm, cfg)
    optimiser = make_optimiser(EngineSettings.of(cfg))
    grad_fn = jax.value_and_grad(ppo_loss, has_aux=True)

    def minibatch_step(
        state: LearnerState, minibatch: Batch
    ) -> tuple[LearnerState, dict[str, jax.Array]]:
        (_, metrics), grads = grad_fn(state.params, networks, minibatch, cfg)
        actor_updates, actor_opt = optimiser.update(
            grads["actor"], state.actor_opt, state.params["actor"]
        )
        critic_updates, critic_opt = optimiser.update(
            grads["critic"], state.critic_opt, state.params["critic"]
        )
        params = {
            "actor": optax.apply_updates(state.params["actor"], actor_updates),
            "critic": optax.apply_updates(state.params["critic"], critic_updates),
        }
        metrics["grad_norm"] = optax.tree.norm(grads["actor"])
        return state._replace(params=params, actor_opt=actor_opt, critic_opt=critic_opt), metrics

    def epoch(state: LearnerState, key: jax.Array) -> tuple[LearnerState, dict[str, jax.Array]]:
        return jax.lax.scan(minibatch_step, state, _minibatches(batch, key, cfg.minibatches))

    learner = learner._replace(value_norm=value_norm)
    learner, metrics = jax.lax.scan(epoch, learner, jax.random.split(key, cfg.epochs))
    return learner, jax.tree.map(jnp.mean, metrics)
