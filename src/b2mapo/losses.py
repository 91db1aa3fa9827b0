"""Return estimators and PPO losses: small pure functions, each tested against a reference."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp


def td_errors(
    rewards: jax.Array,
    values: jax.Array,
    next_values: jax.Array,
    terminated: jax.Array,
    gamma: float,
) -> jax.Array:
    """One-step TD errors ``r + γ V(s') − V(s)``; terminations cut the bootstrap.

    ``next_values[t]`` is the value of the state reached by step t before any auto-reset,
    so a truncated episode still bootstraps.
    """
    return rewards + gamma * (1.0 - terminated) * next_values - values


def corrected_gae(
    deltas: jax.Array,
    trace_weights: jax.Array,
    done: jax.Array,
    gamma: float,
    lam: float,
) -> jax.Array:
    """Off-policy corrected advantages (paper eq. 1), a reverse scan over time (axis 0):
    ``A_t = δ_t + γ λ (1 − done_t) c_{t+1} A_{t+1}``.

    ``trace_weights`` are the truncated importance weights ``c_t = min(1, ρ_t)``; all ones
    give plain GAE(λ). ``done`` (terminated or truncated) cuts the trace.
    """

    def backward(
        carry: jax.Array, x: tuple[jax.Array, jax.Array, jax.Array]
    ) -> tuple[jax.Array, jax.Array]:
        delta, cut, weight = x
        advantage = delta + gamma * lam * (1.0 - cut) * carry
        return weight * advantage, advantage

    _, advantages = jax.lax.scan(
        backward,
        jnp.zeros_like(deltas[0]),
        (deltas, jnp.broadcast_to(done, deltas.shape), trace_weights),
        reverse=True,
    )
    return advantages


def gae(
    rewards: jax.Array,
    values: jax.Array,
    next_values: jax.Array,
    terminated: jax.Array,
    done: jax.Array,
    gamma: float,
    lam: float,
) -> jax.Array:
    """Generalised advantage estimates over a time-major rollout (axis 0 is time).

    ``terminated`` cuts the bootstrap and ``done`` (terminated or truncated) cuts the trace.
    Extra trailing axes (agents) broadcast.
    """
    deltas = td_errors(rewards, values, next_values, terminated, gamma)
    return corrected_gae(deltas, jnp.ones_like(deltas), done, gamma, lam)


def masked_mean(x: jax.Array, mask: jax.Array) -> jax.Array:
    """Mean of ``x`` over the entries where ``mask`` is true (0 if there are none)."""
    mask = mask.astype(x.dtype)
    return jnp.sum(x * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def normalise(x: jax.Array, mask: jax.Array, eps: float = 1e-8) -> jax.Array:
    """Standardise ``x`` with the mean and std of its masked entries."""
    mean = masked_mean(x, mask)
    std = jnp.sqrt(masked_mean(jnp.square(x - mean), mask))
    return (x - mean) / (std + eps)


def clipped_surrogate(ratio: jax.Array, advantages: jax.Array, clip_eps: float) -> jax.Array:
    """PPO's clipped surrogate objective per sample (to be maximised)."""
    clipped = jnp.clip(ratio, 1.0 - clip_eps, 1.0 + clip_eps)
    return jnp.minimum(ratio * advantages, clipped * advantages)


def huber(x: jax.Array, delta: float) -> jax.Array:
    """Huber penalty of the residual ``x``."""
    abs_x = jnp.abs(x)
    return jnp.where(abs_x <= delta, 0.5 * jnp.square(x), delta * (abs_x - 0.5 * delta))


def clipped_value_loss(
    values: jax.Array,
    old_values: jax.Array,
    targets: jax.Array,
    clip_eps: float,
    huber_delta: float,
) -> jax.Array:
    """MAPPO's value loss per sample: the larger of the clipped and unclipped Huber errors."""
    clipped_values = old_values + jnp.clip(values - old_values, -clip_eps, clip_eps)
    return jnp.maximum(
        huber(targets - values, huber_delta), huber(targets - clipped_values, huber_delta)
    )


def categorical_log_prob(logits: jax.Array, actions: jax.Array) -> jax.Array:
    """Log-probability of integer ``actions`` under (masked) ``logits``."""
    log_probs = jax.nn.log_softmax(logits)
    return jnp.take_along_axis(log_probs, actions[..., None], axis=-1)[..., 0]


def categorical_entropy(logits: jax.Array) -> jax.Array:
    """Entropy of the categorical distribution given by (masked) ``logits``."""
    log_probs = jax.nn.log_softmax(logits)
    return -jnp.sum(jnp.exp(log_probs) * log_probs, axis=-1)


def categorical_kl(teacher_logits: jax.Array, student_logits: jax.Array) -> jax.Array:
    """``KL(teacher || student)`` of masked categoricals ``[..., A]`` (masked actions have
    exactly zero teacher probability, so they contribute nothing)."""
    teacher_log_p = jax.nn.log_softmax(teacher_logits)
    student_log_p = jax.nn.log_softmax(student_logits)
    return jnp.sum(jnp.exp(teacher_log_p) * (teacher_log_p - student_log_p), axis=-1)


class ValueNorm(NamedTuple):
    """Running mean and variance of value targets, debiased (MAPPO's ValueNorm)."""

    mean: jax.Array
    mean_sq: jax.Array
    debias: jax.Array

    @classmethod
    def create(cls) -> ValueNorm:
        zero = jnp.zeros((), jnp.float32)
        return cls(zero, zero, zero)

    @classmethod
    def identity(cls) -> ValueNorm:
        """Statistics that leave values unchanged (for runs without normalisation)."""
        zero, one = jnp.zeros((), jnp.float32), jnp.ones((), jnp.float32)
        return cls(zero, one, one)

    def update(self, x: jax.Array, mask: jax.Array, beta: float) -> ValueNorm:
        """Fold a batch of targets into the running statistics."""
        return ValueNorm(
            mean=beta * self.mean + (1 - beta) * masked_mean(x, mask),
            mean_sq=beta * self.mean_sq + (1 - beta) * masked_mean(jnp.square(x), mask),
            debias=beta * self.debias + (1 - beta),
        )

    def _stats(self) -> tuple[jax.Array, jax.Array]:
        debias = jnp.maximum(self.debias, 1e-5)
        mean = self.mean / debias
        var = jnp.maximum(self.mean_sq / debias - jnp.square(mean), 1e-2)
        return mean, jnp.sqrt(var)

    def normalise(self, x: jax.Array) -> jax.Array:
        mean, std = self._stats()
        return (x - mean) / std

    def denormalise(self, x: jax.Array) -> jax.Array:
        mean, std = self._stats()
        return x * std + mean
