"""A batch-sequential round written the plain way: every stage runs the whole rollout under
masks, in a Python loop, with one minibatch per epoch. Test code only: the engine, which
gathers each stage's own units into windows, must give the same update."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from b2mapo.config import TrainConfig
from b2mapo.engine import surrogate_objective
from b2mapo.learner import (
    EngineSettings,
    LearnerState,
    make_optimiser,
    optimiser_step,
    round_learning_rate,
)
from b2mapo.losses import (
    categorical_entropy,
    categorical_kl,
    categorical_log_prob,
    clipped_value_loss,
    corrected_gae,
    masked_mean,
    normalise,
    td_errors,
)
from b2mapo.networks import Networks
from b2mapo.rollout import Trajectory
from b2mapo.units import make_units


def masked_round(
    learner: LearnerState,
    trajectory: Trajectory,
    batch_index: jax.Array,
    networks: Networks,
    cfg: TrainConfig,
    num_stages: int,
) -> LearnerState:
    """One round of ``num_stages`` stages on ``batch_index[T, E, n]`` (constant within each
    training chunk); jit-able, with the Python loops unrolled."""
    assert cfg.minibatches == 1, "the reference has one minibatch per epoch"
    settings = EngineSettings.of(cfg)
    tr = trajectory.transitions
    steps, envs, n = tr.action.shape
    chunk = cfg.recurrent_chunk
    units = make_units(trajectory, batch_index, chunk)
    num_units = units.num_units
    agent = jnp.arange(num_units) % n
    group = jnp.arange(num_units) // n
    own = units.batch_index
    num_actions = tr.avail.shape[-1]
    earlier_view = units.group_batch[group] < own[:, None]  # [U, n]
    preceding = jnp.where(earlier_view, units.group_action[:, group], num_actions)
    preceding = preceding if networks.condition_on_actions else None
    first = units.first[:, group]
    state = units.state[:, group]

    def log_probs(actor: dict) -> tuple[jax.Array, jax.Array]:
        logits = networks.unit_logits(
            actor, agent, units.carry, units.obs, first, units.avail, preceding
        )
        return logits, categorical_log_prob(logits, units.action)

    def per_group(x: jax.Array) -> jax.Array:  # [L, U] -> [T, E, n]
        x = x.reshape(chunk, steps // chunk, envs, n)
        return jnp.moveaxis(x, 0, 1).reshape(steps, envs, n)

    lr = round_learning_rate(settings, learner.rounds)
    for part in ("actor_opt", "critic_opt"):
        clip_state, adam = getattr(learner, part)
        hyper = {**adam.hyperparams}
        hyper["learning_rate"] = jnp.broadcast_to(lr, hyper["learning_rate"].shape)
        learner = learner._replace(**{part: (clip_state, adam._replace(hyperparams=hyper))})
    values = learner.value_norm.denormalise(tr.value)
    next_values = learner.value_norm.denormalise(tr.next_value)
    deltas = td_errors(
        tr.reward[..., None], values, next_values, tr.terminated[..., None], cfg.gamma
    )
    done = tr.done[..., None].astype(jnp.float32)
    active = tr.avail.sum(-1) > 1
    optimiser = make_optimiser(settings)
    updated = jnp.zeros_like(units.log_prob)
    for stage in range(num_stages):
        _, now = log_probs(learner.params["actor"])
        # Every earlier unit under the current parameters (SPEC §2), computed in full.
        updated = jnp.where(own < stage, now - units.log_prob, updated)
        earlier_ratio = per_group(jnp.where(own < stage, updated, 0.0)).sum(-1)  # [T, E]
        rho = jnp.exp(earlier_ratio)
        trace = jnp.minimum(1.0, rho) if cfg.advantage == "corrected" else jnp.ones_like(rho)
        trace = jnp.broadcast_to(trace[..., None], deltas.shape)
        advantages = corrected_gae(deltas, trace, done, cfg.gamma, cfg.gae_lambda)
        targets = advantages + values
        in_stage = batch_index == stage
        value_norm = learner.value_norm
        if cfg.value_norm:
            value_norm = value_norm.update(targets, in_stage, beta=0.99999)
        advantages = normalise(advantages, in_stage & active)
        targets = value_norm.normalise(targets)
        learner = learner._replace(value_norm=value_norm)
        policy_mask = in_stage & active

        def loss(
            params,
            advantages=advantages,
            targets=targets,
            rho=rho,
            policy_mask=policy_mask,
            member=in_stage,
        ):
            logits, log_prob = log_probs(params["actor"])
            log_ratio = per_group(log_prob - units.log_prob)
            if cfg.ratio == "joint":
                joint = jnp.sum(jnp.where(member, log_ratio, 0.0), -1, keepdims=True)
                log_ratio = jnp.broadcast_to(joint, log_ratio.shape)
            surrogate = surrogate_objective(log_ratio, advantages, rho[..., None], settings)
            entropy = masked_mean(per_group(categorical_entropy(logits)), policy_mask)
            total = -masked_mean(surrogate, policy_mask) - cfg.ent_coef * entropy
            if trajectory.distill is not None:
                kl = categorical_kl(units.teacher, logits) * units.teacher_weight[:, group]
                total += masked_mean(per_group(kl), policy_mask)
            values = networks.unit_values(params["critic"], agent, state, units.obs)
            errors = clipped_value_loss(
                per_group(values), tr.value, targets, cfg.clip_eps, cfg.huber_delta
            )
            return total + masked_mean(errors, member)

        for _ in range(cfg.epochs):
            grads = jax.grad(loss)(learner.params)
            agents_with = jnp.any(in_stage, axis=(0, 1))
            agents_acting = jnp.any(policy_mask, axis=(0, 1))
            params, opts = {}, {}
            for part, opt, stepping in (
                ("actor", learner.actor_opt, agents_acting),
                ("critic", learner.critic_opt, agents_with),
            ):
                if networks.share_params:
                    stepping = jnp.any(stepping)
                params[part], opts[part] = optimiser_step(
                    optimiser,
                    grads[part],
                    opt,
                    learner.params[part],
                    stepping,
                    networks.share_params,
                )
            learner = learner._replace(
                params=params, actor_opt=opts["actor"], critic_opt=opts["critic"]
            )
    return learner._replace(rounds=learner.rounds + 1)
