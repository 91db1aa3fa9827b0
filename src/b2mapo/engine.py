"""The batch-sequential update engine: MAPPO, HAPPO, A2PO and the B2MAPO scheme in one.

Agents are grouped into batches (``Transition.batch_index``, per step and agent); batches
update in order. Stage ``k`` (docs/algorithms.md):

1. the log-probabilities of the agents already updated this round are recomputed under the
   current parameters, and advantages are corrected off-policy for them (eq. 1);
2. PPO epochs x minibatches in which only batch ``k``'s samples enter the loss, with the
   per-agent or joint ratio (eq. 11) times the preceding-ratio factor (eq. 12, or HAPPO's);
3. the critic fitted on the same samples.

Training units (``units.py``): a stage gathers only its own units of the rollout into
fixed-size windows, and a minibatch is a run of windows whose gradients are summed before one
optimiser step. So a round computes each unit about once per epoch whatever K is, shapes
never depend on K, and the stage loop is a ``while_loop`` that stops at the round's K, also
under the seed ``vmap``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from b2mapo.learner import (
    EngineSettings,
    LearnerState,
    make_optimiser,
    optimiser_step,
    ravel,
    round_learning_rate,
    with_learning_rate,
)
from b2mapo.losses import (
    ValueNorm,
    categorical_entropy,
    categorical_kl,
    categorical_log_prob,
    clipped_surrogate,
    clipped_value_loss,
    corrected_gae,
    normalise,
    td_errors,
)
from b2mapo.networks import Networks, Params
from b2mapo.partition import Partitioner
from b2mapo.rollout import Trajectory
from b2mapo.units import (
    Units,
    WindowBatch,
    Windows,
    from_groups,
    make_units,
    pack_windows,
    to_units,
    window_batch,
    window_size,
)

STAGE_METRICS = ("policy_loss", "value_loss", "entropy", "approx_kl", "clipfrac", "grad_norm")


def surrogate_objective(
    log_ratio: jax.Array, advantages: jax.Array, preceding: jax.Array, settings: EngineSettings
) -> jax.Array:
    """Per-sample clipped objective of a stage (eq. 10-12).

    ``log_ratio`` is the new/old log-ratio of the sample (the batch's joint one with
    ``ratio="joint"``, eq. 11). ``preceding`` is the earlier agents' joint ratio: clipped to
    1 ± ε/2 inside the clip (A2PO/B2MAPO), multiplying the clipped objective from outside
    (HAPPO), or ignored (MAPPO).
    """
    ratio = jnp.exp(log_ratio)
    preceding = jax.lax.stop_gradient(preceding)
    if settings.preceding_factor == "clipped":
        half = settings.clip_eps / 2
        return clipped_surrogate(
            ratio * jnp.clip(preceding, 1 - half, 1 + half), advantages, settings.clip_eps
        )
    if settings.preceding_factor == "happo":
        return preceding * clipped_surrogate(ratio, advantages, settings.clip_eps)
    return clipped_surrogate(ratio, advantages, settings.clip_eps)


def advantage_scores(advantages: jax.Array, values: jax.Array, active: jax.Array) -> jax.Array:
    """A2PO's per-agent priority: rollout mean of |advantage| over mean |value|, ``[n]``."""
    axes = tuple(range(advantages.ndim - 1))
    weight = active.astype(advantages.dtype)
    mean_abs_adv = jnp.sum(jnp.abs(advantages) * weight, axes) / jnp.maximum(weight.sum(axes), 1)
    mean_abs_val = jnp.sum(jnp.abs(values) * weight, axes) / jnp.maximum(weight.sum(axes), 1)
    return mean_abs_adv / (mean_abs_val + 1e-8)


def window_logits(actor_params: Params, networks: Networks, batch: WindowBatch) -> jax.Array:
    """The actor's logits ``[L, W, A]`` on a window's units."""
    preceding = batch.preceding if networks.condition_on_actions else None
    return networks.unit_logits(
        actor_params, batch.agent, batch.carry, batch.obs, batch.first, batch.avail, preceding
    )


class StageInputs(NamedTuple):
    """What a stage's loss reads beside a window: per unit and step ``[L, U]``."""

    advantages: jax.Array  # normalised over the stage's samples
    value_targets: jax.Array  # normalised scale
    preceding: jax.Array  # [L, G], joint new/old ratio of the agents updated earlier


def window_loss(
    params: dict[str, Params],
    networks: Networks,
    batch: WindowBatch,
    inputs: StageInputs,
    settings: EngineSettings,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Sum over a window's samples of the actor loss (surrogate, entropy bonus, distillation)
    plus the critic loss (clipped, Huber); the minibatch divides by its sample counts.

    Actor and critic have disjoint parameters, so one summed loss gives both gradients.
    """
    logits = window_logits(params["actor"], networks, batch)
    log_ratio = categorical_log_prob(logits, batch.action) - batch.log_prob  # [L, W]
    sample_ratio = log_ratio
    if settings.ratio == "joint":  # eq. 11: product over the group's units (same step, batch k)
        window = batch.segment.shape[0]
        summed = jax.ops.segment_sum(
            jnp.where(batch.valid, log_ratio, 0.0).T, batch.segment, num_segments=window
        )
        log_ratio = summed[batch.segment].T
    advantages = jnp.take(inputs.advantages, batch.unit, axis=1)
    preceding = jnp.take(inputs.preceding, batch.group, axis=1)
    surrogate = surrogate_objective(log_ratio, advantages, preceding, settings)
    policy_weight = batch.active.astype(jnp.float32)
    value_weight = jnp.broadcast_to(batch.valid, batch.action.shape).astype(jnp.float32)

    def total(x: jax.Array, weight: jax.Array) -> jax.Array:
        return jnp.sum(x * weight)

    entropy = total(categorical_entropy(logits), policy_weight)
    policy = -total(surrogate, policy_weight)
    actor_loss = policy - settings.ent_coef * entropy
    sums = {"policy_loss": policy, "entropy": entropy}
    if batch.teacher is not None:
        kl = categorical_kl(batch.teacher, logits) * batch.teacher_weight
        sums["distill_loss"] = total(kl, policy_weight)
        actor_loss = actor_loss + sums["distill_loss"]
    values = networks.unit_values(params["critic"], batch.agent, batch.state, batch.obs)
    targets = jnp.take(inputs.value_targets, batch.unit, axis=1)
    errors = clipped_value_loss(
        values, batch.value, targets, settings.clip_eps, settings.huber_delta
    )
    sums["value_loss"] = total(errors, value_weight)
    ratio = jnp.exp(sample_ratio)
    sums["approx_kl"] = total((ratio - 1.0) - sample_ratio, policy_weight)
    sums["clipfrac"] = total(jnp.abs(ratio - 1.0) > settings.clip_eps, policy_weight)
    return actor_loss + sums["value_loss"], sums


class RoundContext(NamedTuple):
    """What every stage of a round reads: the rollout and quantities fixed for the round."""

    units: Units
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
    settings: EngineSettings,
) -> RoundContext:
    """TD errors of the rollout, the partition (A2PO's is chosen here, from advantages) and
    the rollout as training units."""
    tr = trajectory.transitions
    values = learner.value_norm.denormalise(tr.value)
    next_values = learner.value_norm.denormalise(tr.next_value)
    terminated = tr.terminated[..., None].astype(jnp.float32)
    deltas = td_errors(tr.reward[..., None], values, next_values, terminated, settings.gamma)
    done = tr.done[..., None].astype(jnp.float32)
    active = tr.avail.sum(-1) > 1
    batch_index = tr.batch_index
    if partitioner.needs_scores:
        plain = corrected_gae(
            deltas, jnp.ones_like(deltas), done, settings.gamma, settings.gae_lambda
        )
        order = partitioner.partition(key, advantage_scores(plain, values, active))
        batch_index = jnp.broadcast_to(order, batch_index.shape)
    units = make_units(trajectory, batch_index, settings.recurrent_chunk)
    return RoundContext(units, batch_index, values, deltas, done, active)


def refresh_log_ratios(
    actor_params: Params,
    log_ratio: jax.Array,
    member: jax.Array,
    units: Units,
    networks: Networks,
    width: int,
) -> jax.Array:
    """``log_ratio[L, U]`` with the new/old log-ratios of the ``member[U]`` units recomputed
    under ``actor_params`` (a forward pass over those units only)."""
    windows = pack_windows(member, jnp.arange(units.num_units), width, 0, units.num_agents)

    def refresh(index: jax.Array, log_ratio: jax.Array) -> jax.Array:
        batch = window_batch(units, windows, index, width)
        logits = window_logits(actor_params, networks, batch)
        new = categorical_log_prob(logits, batch.action) - batch.log_prob
        target = jnp.where(batch.valid, batch.unit, units.num_units)
        return log_ratio.at[:, target].set(new, mode="drop")

    return jax.lax.fori_loop(0, windows.count, refresh, log_ratio)


class StageCarry(NamedTuple):
    """What the stage loop carries."""

    learner: LearnerState
    log_ratio: jax.Array  # [L, U], new/old log-ratios of the units updated so far
    refreshed_at: jax.Array  # [U], stage at whose start the unit's log-ratio was computed
    agent_updated_at: jax.Array  # [n], last stage that changed the agent's parameters
    key: jax.Array
    stage: jax.Array
    metric_sums: dict[str, jax.Array]  # per-stage means, summed over stages


def earlier_log_ratios(
    carry: StageCarry, ctx: RoundContext, networks: Networks, settings: EngineSettings, width: int
) -> tuple[jax.Array, jax.Array]:
    """The log-ratios with those of the earlier batches' units that this stage needs brought
    up to date, and which units were recomputed (``[L, U]``, ``[U]``).

    ρ needs the earlier batches' probabilities under the current parameters:
    recompute a unit's where its agent's parameters changed since it was last computed (with
    shared parameters every stage changes every agent), and only where this stage's
    advantages look: from the env's first chunk that holds a unit of this batch on.
    """
    units, stage = ctx.units, carry.stage
    n, num_envs = units.num_agents, ctx.deltas.shape[1]
    earlier = units.batch_index < stage
    here = (units.batch_index == stage).reshape(-1, num_envs, n).any(-1)  # [C, E]
    needed = jnp.repeat((jnp.cumsum(here, axis=0) > 0).reshape(-1), n)  # [U]
    agent_of = jnp.arange(units.num_units) % n
    stale = carry.agent_updated_at[agent_of] >= carry.refreshed_at
    refresh = earlier & needed & stale
    if settings.single_stage:  # no earlier batch: nothing to refresh, and no refresh to compile
        return carry.log_ratio, refresh
    actor = carry.learner.params["actor"]
    return refresh_log_ratios(actor, carry.log_ratio, refresh, units, networks, width), refresh


def stage_inputs(
    log_ratio: jax.Array,
    ctx: RoundContext,
    value_norm: ValueNorm,
    stage: jax.Array,
    settings: EngineSettings,
) -> tuple[StageInputs, ValueNorm]:
    """The stage's advantages (corrected for the earlier batches' ratios, eq. 1) and value
    targets, and the value normaliser updated on its targets."""
    units, chunk = ctx.units, settings.recurrent_chunk
    earlier = units.batch_index < stage
    preceding_log = jnp.where(earlier, log_ratio, 0.0).reshape(chunk, -1, units.num_agents)
    preceding = jnp.exp(preceding_log.sum(-1))  # [L, G]
    if settings.advantage == "corrected":
        trace = jnp.minimum(1.0, from_groups(preceding, ctx.deltas.shape[1]))[..., None]
    else:
        trace = jnp.ones((1, 1, 1))
    trace = jnp.broadcast_to(trace, ctx.deltas.shape)
    advantages = corrected_gae(ctx.deltas, trace, ctx.done, settings.gamma, settings.gae_lambda)
    targets = advantages + ctx.values
    stage_mask = ctx.batch_index == stage
    if settings.value_norm:  # a stage without samples leaves the statistics alone
        updated_norm = value_norm.update(targets, stage_mask, beta=0.99999)
        value_norm = jax.tree.map(
            lambda new, old: jnp.where(jnp.any(stage_mask), new, old), updated_norm, value_norm
        )
    inputs = StageInputs(
        advantages=to_units(normalise(advantages, stage_mask & ctx.active), chunk),
        value_targets=to_units(value_norm.normalise(targets), chunk),
        preceding=preceding,
    )
    return inputs, value_norm


FlatParams = dict[str, jax.Array]
"""Actor and critic parameters each raveled into one vector (``ravel``)."""


def ravel_learner_params(
    params: dict[str, Params], per_agent: bool
) -> tuple[FlatParams, Callable[[FlatParams], dict[str, Params]]]:
    """Actor and critic parameters as flat vectors, and the function that restores them."""
    flat_actor, unravel_actor = ravel(params["actor"], per_agent)
    flat_critic, unravel_critic = ravel(params["critic"], per_agent)

    def unravel(flat: FlatParams) -> dict[str, Params]:
        return {"actor": unravel_actor(flat["actor"]), "critic": unravel_critic(flat["critic"])}

    return {"actor": flat_actor, "critic": flat_critic}, unravel


class StageData(NamedTuple):
    """What the PPO steps of a stage read beside the learner state, fixed for the stage."""

    units: Units
    inputs: StageInputs
    member: jax.Array  # [U], the units of this stage's batch
    width: int  # window positions where a group may start
    slack: int  # slots a window has beyond ``width``: n - 1 keeps groups whole (joint ratio)
    unravel: Callable[[FlatParams], dict[str, Params]]

    @property
    def window(self) -> int:
        return self.width + self.slack


def flat_window_loss(
    flat: FlatParams,
    unravel: Callable[[FlatParams], dict[str, Params]],
    networks: Networks,
    batch: WindowBatch,
    inputs: StageInputs,
    settings: EngineSettings,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """``window_loss`` of parameters given as flat vectors."""
    return window_loss(unravel(flat), networks, batch, inputs, settings)


class GradientSums(NamedTuple):
    """A minibatch's gradients and loss sums over its windows so far, with its sample counts
    per agent."""

    grads: FlatParams
    sums: dict[str, jax.Array]
    policy_count: jax.Array  # [n], samples in the policy loss
    value_count: jax.Array  # [n], samples in the value loss


def add_window(
    index: jax.Array,
    acc: GradientSums,
    params: FlatParams,
    windows: Windows,
    data: StageData,
    networks: Networks,
    settings: EngineSettings,
) -> GradientSums:
    """``acc`` plus the gradients, loss sums and sample counts of window ``index``."""
    batch = window_batch(data.units, windows, index, data.window)
    grad_fn = jax.grad(flat_window_loss, has_aux=True)
    new_grads, new_sums = grad_fn(params, data.unravel, networks, batch, data.inputs, settings)
    per_agent = batch.agent[:, None] == jnp.arange(data.units.num_agents)  # [W, n]
    policy_count = acc.policy_count + jnp.sum(per_agent * batch.active.sum(0)[:, None], axis=0)
    value_count = acc.value_count + (
        jnp.sum(per_agent * batch.valid[:, None], axis=0) * settings.recurrent_chunk
    )
    grads = jax.tree.map(jnp.add, acc.grads, new_grads)
    sums = {k: acc.sums[k] + v for k, v in new_sums.items()}
    return GradientSums(grads, sums, policy_count, value_count)


def minibatch_step(
    state: tuple[LearnerState, Windows],
    bounds: tuple[jax.Array, jax.Array],
    data: StageData,
    networks: Networks,
    settings: EngineSettings,
) -> tuple[tuple[LearnerState, Windows], tuple[dict[str, jax.Array], jax.Array]]:
    """One optimiser step on the gradients summed over windows ``bounds = (first, last)``;
    returns the minibatch's metrics and whether it held any sample."""
    learner, windows = state
    first, last = bounds
    n = data.units.num_agents
    teacher = ("distill_loss",) if data.units.teacher is not None else ()
    start = GradientSums(
        jax.tree.map(jnp.zeros_like, learner.params),
        {k: jnp.float32(0.0) for k in (*STAGE_METRICS[:-1], *teacher)},
        jnp.zeros(n),
        jnp.zeros(n),
    )
    add = functools.partial(
        add_window,
        params=learner.params,
        windows=windows,
        data=data,
        networks=networks,
        settings=settings,
    )
    grads, sums, policy_count, value_count = jax.lax.fori_loop(first, last, add, start)
    policy_total = jnp.maximum(policy_count.sum(), 1.0)
    value_total = jnp.maximum(value_count.sum(), 1.0)
    grads = {
        "actor": jax.tree.map(lambda g: g / policy_total, grads["actor"]),
        "critic": jax.tree.map(lambda g: g / value_total, grads["critic"]),
    }
    if networks.share_params:
        actor_steps, critic_steps = policy_count.sum() > 0, value_count.sum() > 0
    else:
        actor_steps, critic_steps = policy_count > 0, value_count > 0
    optimiser = make_optimiser(settings)
    params, opts = dict(learner.params), {}
    for part, steps, opt in (
        ("actor", actor_steps, learner.actor_opt),
        ("critic", critic_steps, learner.critic_opt),
    ):
        params[part], opts[part] = optimiser_step(
            optimiser, grads[part], opt, learner.params[part], steps, networks.share_params
        )
    learner = learner._replace(params=params, actor_opt=opts["actor"], critic_opt=opts["critic"])
    metrics = {k: v / (value_total if k == "value_loss" else policy_total) for k, v in sums.items()}
    metrics["grad_norm"] = optax.tree.norm(grads["actor"])
    took_step = value_count.sum() > 0
    return (learner, windows), (metrics, took_step)


def stage_epoch(
    learner: LearnerState,
    key: jax.Array,
    data: StageData,
    networks: Networks,
    settings: EngineSettings,
) -> tuple[LearnerState, tuple[dict[str, jax.Array], jax.Array]]:
    """One PPO epoch over the stage's units: whole groups in a random order, laid out in
    windows, the windows split into ``minibatches`` optimiser steps."""
    n, num_units = data.units.num_agents, data.units.num_units
    group_rank = jax.random.permutation(key, num_units // n)
    unit_ids = jnp.arange(num_units)
    rank = group_rank[unit_ids // n] * n + unit_ids % n
    windows = pack_windows(data.member, rank, data.width, data.slack, n)
    edges = windows.count * jnp.arange(settings.minibatches + 1) // settings.minibatches
    step = functools.partial(minibatch_step, data=data, networks=networks, settings=settings)
    (learner, _), out = jax.lax.scan(step, (learner, windows), (edges[:-1], edges[1:]))
    return learner, out


def run_stage(
    carry: StageCarry, ctx: RoundContext, networks: Networks, settings: EngineSettings
) -> StageCarry:
    """Update batch ``carry.stage``: refresh the earlier agents' ratios, correct the
    advantages, then PPO on this batch's units only."""
    learner, units, stage = carry.learner, ctx.units, carry.stage
    n = units.num_agents
    width = window_size(units.num_units, n, settings.minibatches, settings.single_stage)
    log_ratio, refresh = earlier_log_ratios(carry, ctx, networks, settings, width)
    inputs, value_norm = stage_inputs(log_ratio, ctx, learner.value_norm, stage, settings)
    member = units.batch_index == stage
    # The PPO steps run on the parameters as flat vectors (see ``make_optimiser``).
    flat, unravel = ravel_learner_params(learner.params, not networks.share_params)
    slack = n - 1 if settings.ratio == "joint" else 0
    data = StageData(units, inputs, member, width, slack, unravel)
    key, stage_key = jax.random.split(carry.key)
    learner = learner._replace(value_norm=value_norm, params=flat)
    epoch = functools.partial(stage_epoch, data=data, networks=networks, settings=settings)
    learner, (metrics, took_step) = jax.lax.scan(
        epoch, learner, jax.random.split(stage_key, settings.epochs)
    )
    learner = learner._replace(params=unravel(learner.params))
    steps = jnp.maximum(took_step.sum(), 1)
    sums = {
        k: carry.metric_sums[k] + jnp.sum(jnp.where(took_step, v, 0.0)) / steps
        for k, v in metrics.items()
    }
    if networks.share_params:
        updated = jnp.ones((n,), bool)
    else:
        updated = jnp.any(member.reshape(-1, n), axis=0)
    return StageCarry(
        learner,
        log_ratio,
        jnp.where(refresh, stage, carry.refreshed_at),
        jnp.where(updated, stage, carry.agent_updated_at),
        key,
        stage + 1,
        sums,
    )


def batch_sequential_update(
    learner: LearnerState,
    trajectory: Trajectory,
    key: jax.Array,
    networks: Networks,
    partitioner: Partitioner,
    settings: EngineSettings,
) -> tuple[LearnerState, dict[str, jax.Array]]:
    """One round of the engine over a rollout; returns the new learner state and metrics
    (stage metrics averaged over the K stages, plus ``num_batches``)."""
    partition_key, key = jax.random.split(key)
    lr = round_learning_rate(settings, learner.rounds)
    learner = learner._replace(
        actor_opt=with_learning_rate(learner.actor_opt, lr),
        critic_opt=with_learning_rate(learner.critic_opt, lr),
    )
    ctx = prepare_round(learner, trajectory, partition_key, partitioner, settings)
    num_batches = jnp.max(ctx.batch_index) + 1
    names = STAGE_METRICS + (("distill_loss",) if trajectory.distill is not None else ())
    start = StageCarry(
        learner,
        jnp.zeros_like(ctx.units.log_prob),
        jnp.full_like(ctx.units.batch_index, -1),
        jnp.full((ctx.units.num_agents,), -1, jnp.int32),
        key,
        jnp.int32(0),
        {name: jnp.float32(0.0) for name in names},
    )
    if settings.single_stage:
        final = run_stage(start, ctx, networks, settings)
    else:
        final = jax.lax.while_loop(
            lambda carry: carry.stage < num_batches,
            lambda carry: run_stage(carry, ctx, networks, settings),
            start,
        )
    metrics = {k: v / num_batches for k, v in final.metric_sums.items()}
    metrics["num_batches"] = num_batches.astype(jnp.float32)
    metrics["learning_rate"] = lr
    return final.learner._replace(rounds=final.learner.rounds + 1), metrics
