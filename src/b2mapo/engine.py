"""The batch-sequential update engine: MAPPO, HAPPO, A2PO and the B2MAPO scheme in one.

Agents are grouped into batches (``Transition.batch_index``, per step and agent); batches
update in order. Stage ``k`` (SPEC.md §2):

1. advantages corrected off-policy for the agents already updated this round (eq. 1);
2. PPO epochs x minibatches in which only batch ``k``'s samples enter the loss, with the
   per-agent or joint ratio (eq. 11) times the preceding-ratio factor (eq. 12, or HAPPO's);
3. the critic fitted on the same samples;
4. batch ``k``'s new log-probabilities recomputed for the next stage's correction.

The whole round is one compiled program for any K: stages run in a bounded loop over
``n`` with a condition, never recompiling. The rollout and the networks know nothing of it.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from b2mapo.config import TrainConfig
from b2mapo.losses import (
    ValueNorm,
    categorical_entropy,
    categorical_kl,
    categorical_log_prob,
    clipped_surrogate,
    clipped_value_loss,
    corrected_gae,
    masked_mean,
    normalise,
    td_errors,
)
from b2mapo.networks import Networks, Params
from b2mapo.partition import Partitioner
from b2mapo.rollout import Distillation, Trajectory, Transition

STAGE_METRICS = ("policy_loss", "value_loss", "entropy", "approx_kl", "clipfrac", "grad_norm")


class LearnerState(NamedTuple):
    """Parameters and optimiser states of actor and critic, the value normaliser, and the
    number of update rounds done (it sets the learning rate)."""

    params: dict[str, Params]
    actor_opt: optax.OptState
    critic_opt: optax.OptState
    value_norm: ValueNorm
    rounds: jax.Array


class StageBatch(NamedTuple):
    """What one PPO minibatch of a stage needs (leaves ``[T, B, ...]``)."""

    transitions: Transition
    initial_carry: jax.Array  # [B, n, h]
    advantages: jax.Array  # [T, B, n], normalised over the stage's samples
    value_targets: jax.Array  # [T, B, n], normalised scale
    policy_mask: jax.Array  # [T, B, n], sample in this stage and the agent had a choice
    stage_mask: jax.Array  # [T, B, n], sample in this stage
    preceding: jax.Array  # [T, B], joint new/old ratio of the agents updated earlier
    distill: Distillation | None = None  # teacher to distil into the actor (π_ind only)


def make_optimiser(cfg: TrainConfig) -> optax.GradientTransformation:
    """Adam with global-norm clipping; its learning rate is a state entry that
    ``batch_sequential_update`` sets once per round (``round_learning_rate``)."""
    adam = optax.inject_hyperparams(optax.adam)(learning_rate=cfg.lr, eps=1e-5)
    return optax.chain(optax.clip_by_global_norm(cfg.max_grad_norm), adam)


def round_learning_rate(cfg: TrainConfig, rounds: jax.Array) -> jax.Array:
    """Learning rate of round ``rounds``: linear decay to zero over the run when annealed.

    It decays per round, not per optimiser step, so a round of K stages (K x the optimiser
    steps of a MAPPO round) follows the same schedule as MAPPO's.
    """
    if not cfg.anneal_lr:
        return jnp.float32(cfg.lr)
    return jnp.float32(cfg.lr) * jnp.maximum(0.0, 1.0 - rounds / cfg.num_updates)


def _with_learning_rate(opt_state: optax.OptState, lr: jax.Array) -> optax.OptState:
    """``opt_state`` of ``make_optimiser`` with its learning rate replaced."""
    clip_state, adam_state = opt_state
    hyperparams = {**adam_state.hyperparams, "learning_rate": lr}
    return clip_state, adam_state._replace(hyperparams=hyperparams)


def init_learner(networks: Networks, cfg: TrainConfig, key: jax.Array) -> LearnerState:
    """Fresh parameters, optimiser states and value normaliser."""
    params = networks.init(key)
    optimiser = make_optimiser(cfg)
    value_norm = ValueNorm.create() if cfg.value_norm else ValueNorm.identity()
    return LearnerState(
        params,
        optimiser.init(params["actor"]),
        optimiser.init(params["critic"]),
        value_norm,
        jnp.int32(0),
    )


def surrogate_objective(
    log_ratio: jax.Array,
    advantages: jax.Array,
    preceding: jax.Array,
    stage_mask: jax.Array,
    cfg: TrainConfig,
) -> jax.Array:
    """Per-sample clipped objective of a stage (eq. 10-12), ``[T, B, n]``.

    ``log_ratio`` is each agent's new/old log-ratio; with ``ratio="joint"`` every agent of
    the stage uses the product over the stage's agents at that step (eq. 11). ``preceding``
    is the earlier agents' joint ratio: clipped to 1 ± ε/2 inside the clip (A2PO/B2MAPO),
    multiplying the clipped objective from outside (HAPPO), or ignored (MAPPO).
    """
    if cfg.ratio == "joint":
        joint = jnp.sum(jnp.where(stage_mask, log_ratio, 0.0), axis=-1, keepdims=True)
        log_ratio = jnp.broadcast_to(joint, log_ratio.shape)
    ratio = jnp.exp(log_ratio)
    preceding = jax.lax.stop_gradient(preceding)[..., None]
    if cfg.preceding_factor == "clipped":
        half = cfg.clip_eps / 2
        return clipped_surrogate(
            ratio * jnp.clip(preceding, 1 - half, 1 + half), advantages, cfg.clip_eps
        )
    if cfg.preceding_factor == "happo":
        return preceding * clipped_surrogate(ratio, advantages, cfg.clip_eps)
    return clipped_surrogate(ratio, advantages, cfg.clip_eps)


def stage_loss(
    params: dict[str, Params], networks: Networks, batch: StageBatch, cfg: TrainConfig
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Actor loss (surrogate and entropy bonus) plus critic loss (clipped, Huber), both over
    the stage's samples only."""
    tr = batch.transitions
    preceding = networks.preceding(tr.action, tr.batch_index)
    logits = networks.unroll(
        params["actor"], batch.initial_carry, tr.obs, tr.first, tr.avail, preceding
    )
    log_ratio = categorical_log_prob(logits, tr.action) - tr.log_prob
    surrogate = surrogate_objective(
        log_ratio, batch.advantages, batch.preceding, batch.stage_mask, cfg
    )
    policy_loss = -masked_mean(surrogate, batch.policy_mask)
    entropy = masked_mean(categorical_entropy(logits), batch.policy_mask)
    distill_loss = jnp.float32(0.0)
    if batch.distill is not None:
        kl = categorical_kl(batch.distill.logits, logits) * batch.distill.weight[..., None]
        distill_loss = masked_mean(kl, batch.policy_mask)

    values = networks.value(params["critic"], tr.state, tr.obs)
    value_errors = clipped_value_loss(
        values, tr.value, batch.value_targets, cfg.clip_eps, cfg.huber_delta
    )
    value_loss = masked_mean(value_errors, batch.stage_mask)
    ratio = jnp.exp(log_ratio)
    metrics = {
        "policy_loss": policy_loss,
        "value_loss": value_loss,
        "entropy": entropy,
        "approx_kl": masked_mean((ratio - 1.0) - log_ratio, batch.policy_mask),
        "clipfrac": masked_mean(jnp.abs(ratio - 1.0) > cfg.clip_eps, batch.policy_mask),
    }
    if batch.distill is not None:
        metrics["distill_loss"] = distill_loss
    return policy_loss - cfg.ent_coef * entropy + value_loss + distill_loss, metrics


def _minibatches(batch: StageBatch, key: jax.Array, count: int) -> StageBatch:
    """Shuffle environments and split them into ``count`` minibatches (new leading axis)."""
    num_envs = batch.initial_carry.shape[0]
    order = jax.random.permutation(key, num_envs)

    def split(x: jax.Array, env_axis: int) -> jax.Array:
        x = jnp.moveaxis(jnp.take(x, order, axis=env_axis), env_axis, 0)
        x = x.reshape(count, num_envs // count, *x.shape[1:])
        return jnp.moveaxis(x, 1, env_axis + 1)

    return jax.tree.map(
        lambda x: split(x, 1),
        batch._replace(initial_carry=None),  # type: ignore[arg-type]
    )._replace(initial_carry=split(batch.initial_carry, 0))


def _agent_update_mask(updates: Params, agents: jax.Array, share_params: bool) -> Params:
    """Zero the updates of agents outside the stage (independent parameters only)."""
    if share_params:
        return updates
    return jax.tree.map(lambda u: u * agents.reshape(-1, *([1] * (u.ndim - 1))), updates)


def advantage_scores(advantages: jax.Array, values: jax.Array, active: jax.Array) -> jax.Array:
    """A2PO's per-agent priority: rollout mean of |advantage| over mean |value|, ``[n]``."""
    axes = tuple(range(advantages.ndim - 1))
    weight = active.astype(advantages.dtype)
    mean_abs_adv = jnp.sum(jnp.abs(advantages) * weight, axes) / jnp.maximum(weight.sum(axes), 1)
    mean_abs_val = jnp.sum(jnp.abs(values) * weight, axes) / jnp.maximum(weight.sum(axes), 1)
    return mean_abs_adv / (mean_abs_val + 1e-8)


class RoundContext(NamedTuple):
    """What every stage of a round reads: the rollout and quantities fixed for the round."""

    trajectory: Trajectory
    batch_index: jax.Array  # [T, E, n]
    values: jax.Array  # [T, E, n], denormalised rollout-time values
    deltas: jax.Array  # [T, E, n], TD errors
    done: jax.Array  # [T, E, 1]
    active: jax.Array  # [T, E, n], the agent had a choice of action


def prepare_round(
    learner: LearnerState,
    trajectory: Trajectory,
    key: jax.Array,
    partitioner: Partitioner,
    cfg: TrainConfig,
) -> RoundContext:
    """TD errors of the rollout, and the partition (A2PO's is chosen here, from advantages)."""
    tr = trajectory.transitions
    values = learner.value_norm.denormalise(tr.value)
    next_values = learner.value_norm.denormalise(tr.next_value)
    terminated = tr.terminated[..., None].astype(jnp.float32)
    deltas = td_errors(tr.reward[..., None], values, next_values, terminated, cfg.gamma)
    done = tr.done[..., None].astype(jnp.float32)
    active = tr.avail.sum(-1) > 1
    batch_index = tr.batch_index
    if partitioner.needs_scores:
        plain = corrected_gae(deltas, jnp.ones_like(deltas), done, cfg.gamma, cfg.gae_lambda)
        order = partitioner.partition(key, advantage_scores(plain, values, active))
        batch_index = jnp.broadcast_to(order, batch_index.shape)
    return RoundContext(trajectory, batch_index, values, deltas, done, active)


def run_stage(
    learner: LearnerState,
    updated_log_ratio: jax.Array,
    key: jax.Array,
    stage: jax.Array,
    ctx: RoundContext,
    networks: Networks,
    cfg: TrainConfig,
) -> tuple[LearnerState, jax.Array, dict[str, jax.Array]]:
    """Update batch ``stage``; ``updated_log_ratio[T, E, n]`` holds new/old log-ratios of
    the agents updated earlier this round and is returned with this batch's filled in."""
    tr = ctx.trajectory.transitions
    stage_mask = ctx.batch_index == stage
    earlier = ctx.batch_index < stage
    preceding = jnp.exp(jnp.sum(jnp.where(earlier, updated_log_ratio, 0.0), axis=-1))  # [T, E]
    trace = (
        jnp.minimum(1.0, preceding) if cfg.advantage == "corrected" else jnp.ones_like(preceding)
    )
    trace = jnp.broadcast_to(trace[..., None], ctx.deltas.shape)
    advantages = corrected_gae(ctx.deltas, trace, ctx.done, cfg.gamma, cfg.gae_lambda)
    targets = advantages + ctx.values
    value_norm = learner.value_norm
    if cfg.value_norm:
        value_norm = value_norm.update(targets, stage_mask, beta=0.99999)
    policy_mask = stage_mask & ctx.active
    batch = StageBatch(
        transitions=tr,
        initial_carry=ctx.trajectory.initial_carry,
        advantages=normalise(advantages, policy_mask),
        value_targets=value_norm.normalise(targets),
        policy_mask=policy_mask,
        stage_mask=stage_mask,
        preceding=preceding,
        distill=ctx.trajectory.distill,
    )
    agents_in_stage = jnp.any(stage_mask, axis=tuple(range(stage_mask.ndim - 1)))
    optimiser = make_optimiser(cfg)
    grad_fn = jax.value_and_grad(stage_loss, has_aux=True)

    def minibatch_step(state: LearnerState, minibatch: StageBatch) -> tuple:
        (_, metrics), grads = grad_fn(state.params, networks, minibatch, cfg)
        new_params, opt_states = {}, {}
        for part, opt_state in (("actor", state.actor_opt), ("critic", state.critic_opt)):
            updates, opt_states[part] = optimiser.update(grads[part], opt_state, state.params[part])
            updates = _agent_update_mask(updates, agents_in_stage, cfg.share_params)
            new_params[part] = optax.apply_updates(state.params[part], updates)
        metrics["grad_norm"] = optax.tree.norm(grads["actor"])
        new_state = state._replace(
            params=new_params, actor_opt=opt_states["actor"], critic_opt=opt_states["critic"]
        )
        return new_state, metrics

    def epoch(state: LearnerState, key: jax.Array) -> tuple:
        return jax.lax.scan(minibatch_step, state, _minibatches(batch, key, cfg.minibatches))

    learner = learner._replace(value_norm=value_norm)
    learner, metrics = jax.lax.scan(epoch, learner, jax.random.split(key, cfg.epochs))
    logits = networks.unroll(
        learner.params["actor"],
        ctx.trajectory.initial_carry,
        tr.obs,
        tr.first,
        tr.avail,
        networks.preceding(tr.action, tr.batch_index),
    )
    new_log_ratio = categorical_log_prob(logits, tr.action) - tr.log_prob
    updated_log_ratio = jnp.where(stage_mask, new_log_ratio, updated_log_ratio)
    return learner, updated_log_ratio, jax.tree.map(jnp.mean, metrics)


def batch_sequential_update(
    learner: LearnerState,
    trajectory: Trajectory,
    key: jax.Array,
    networks: Networks,
    partitioner: Partitioner,
    cfg: TrainConfig,
) -> tuple[LearnerState, dict[str, jax.Array]]:
    """One round of the engine over a rollout; returns the new learner state and metrics
    (stage metrics averaged over the K stages, plus ``num_batches``)."""
    partition_key, key = jax.random.split(key)
    lr = round_learning_rate(cfg, learner.rounds)
    learner = learner._replace(
        actor_opt=_with_learning_rate(learner.actor_opt, lr),
        critic_opt=_with_learning_rate(learner.critic_opt, lr),
    )
    ctx = prepare_round(learner, trajectory, partition_key, partitioner, cfg)
    num_batches = jnp.max(ctx.batch_index) + 1
    names = STAGE_METRICS + (("distill_loss",) if trajectory.distill is not None else ())
    skipped = {name: jnp.float32(0.0) for name in names}

    def stage_step(carry: tuple, stage: jax.Array) -> tuple:
        def run(carry: tuple) -> tuple:
            learner, updated_log_ratio, key = carry
            key, stage_key = jax.random.split(key)
            learner, updated_log_ratio, metrics = run_stage(
                learner, updated_log_ratio, stage_key, stage, ctx, networks, cfg
            )
            return (learner, updated_log_ratio, key), metrics

        return jax.lax.cond(stage < num_batches, run, lambda carry: (carry, skipped), carry)

    num_agents = trajectory.transitions.action.shape[-1]
    start = (learner, jnp.zeros_like(trajectory.transitions.log_prob), key)
    (learner, _, _), stage_metrics = jax.lax.scan(stage_step, start, jnp.arange(num_agents))
    metrics = {k: v.sum() / num_batches for k, v in stage_metrics.items()}
    metrics["num_batches"] = num_batches.astype(jnp.float32)
    metrics["learning_rate"] = lr
    learner = learner._replace(rounds=learner.rounds + 1)
    return learner, metrics
