"""How much the DAG can change, measured on a trained B2MAPO policy (JAX environments only).

The generator's reward is the return of the period its DAG's layering drove. Whether that
reward can carry anything about the DAG depends on two things this module measures from
states π really reaches: from the same state and the same random keys, π plays one period
under several layerings (one batch, the generator's most frequent layering, random ones);

- ``layering_share``: the share of the period return's variance that the layering explains
  (the variance across layerings at a fixed state and key, over the total variance);
- ``preceding_kl``: π's sensitivity to the earlier batches' actions, the mean
  ``KL(π with them || π without them)`` (nats) over agents that have an earlier batch.

Both are 0 for a π that ignores its partners: with the same key such a π takes the same
actions under every layering (``Networks.policy_step`` draws its noise once per step).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from b2mapo.losses import categorical_kl
from b2mapo.state import Policies
from b2mapo.upper.history import Boundary, PeriodStart, boundaries, most_frequent_layering

if TYPE_CHECKING:
    from b2mapo.upper.round import LearnedRound

# Sampled DAGs per state from which the generator's most frequent layering is read.
LAYERING_SAMPLES = 64


class Replay(NamedTuple):
    """One period played from a start under one layering (``B`` starts)."""

    period_return: jax.Array  # [B] discounted, up to the first episode end
    kl_sum: jax.Array  # [B] Σ over steps and agents with an earlier batch of KL(with || alone)
    kl_count: jax.Array  # [B] how many (step, agent) terms kl_sum holds


@dataclass(frozen=True)
class Lever:
    """The measurement on ``S`` states x ``R`` keys x ``L`` layerings."""

    returns: np.ndarray  # [S, R, L] period returns
    layerings: np.ndarray  # [S, L, n] batch index of each layering at each state
    layering_share: float
    preceding_kl: float

    def to_dict(self) -> dict[str, float | int]:
        states, keys, count = self.returns.shape
        return {
            "states": states,
            "keys_per_state": keys,
            "layerings": count,
            "layering_share": self.layering_share,
            "preceding_kl": self.preceding_kl,
            "return_sd": float(self.returns.std()),
            "return_sd_across_layerings": float(np.sqrt(self.returns.var(axis=-1).mean())),
        }


def replay(
    learned: LearnedRound,
    policies: Policies,
    start: PeriodStart,
    batch_index: jax.Array,
    key: jax.Array,
) -> Replay:
    """π plays ``dag_period`` steps from ``start`` acting batch by batch on ``batch_index``
    (``[B, n]``), sampling with ``key``; at each step its logits are compared with those it
    would have without the earlier batches' actions."""
    env, networks, cfg = learned.env, learned.networks, learned.cfg
    params = policies.joint["actor"]
    alone = jnp.zeros_like(batch_index)
    has_earlier = batch_index > jnp.min(batch_index, axis=-1, keepdims=True)  # [B, n]

    def step(loop: tuple, key: jax.Array) -> tuple[tuple, tuple]:
        carry, env_state, ts, first = loop
        action_key, env_key = jax.random.split(key)
        next_carry, actions, logits = networks.policy_step(
            params, carry, ts.obs, first, ts.avail, batch_index, action_key, False
        )
        _, _, alone_logits = networks.policy_step(
            params, carry, ts.obs, first, ts.avail, alone, action_key, True
        )
        kl = jnp.where(has_earlier, categorical_kl(logits, alone_logits), 0.0)
        env_keys = jax.random.split(env_key, ts.obs.shape[0])
        env_state, ts = jax.vmap(env.step)(env_keys, env_state, actions)
        return (next_carry, env_state, ts, ts.done), (ts.reward, ts.done, ts.terminated, kl)

    loop = (start.actor_carry, start.env_state, start.ts, start.first)
    _, (reward, done, terminated, kl) = jax.lax.scan(
        step, loop, jax.random.split(key, cfg.dag_period)
    )
    nothing = jnp.zeros(reward.shape[1:])
    period_return, _ = learned.upper.period_reward(reward, done, terminated, nothing, nothing)
    count = jnp.broadcast_to(has_earlier.sum(axis=-1), nothing.shape) * cfg.dag_period
    return Replay(period_return, kl.sum(axis=(0, 2)), count.astype(jnp.float32))


def random_layerings(key: jax.Array, states: int, count: int, n: int, batches: int) -> jax.Array:
    """``[states, count, n]`` uniform random assignments of the agents to ``batches``
    batches (a batch may be empty: it is skipped)."""
    return jax.random.randint(key, (states, count, n), 0, batches, jnp.int32)


def measure(
    learned: LearnedRound,
    policies: Policies,
    key: jax.Array,
    resets: int = 8,
    periods: int = 4,
    keys_per_state: int = 4,
    random_count: int = 14,
) -> Lever:
    """The lever of one seed's ``policies`` at the first ``periods`` boundaries of ``resets``
    episodes (π and the generator sampling, as in training): one batch, the generator's
    most frequent layering and ``random_count`` random layerings (into at most
    ``dag_max_batches`` batches, or two where uncapped), each replayed with the same
    ``keys_per_state`` keys."""
    cfg, n = learned.cfg, learned.env.spec.num_agents
    state_key, layering_key, replay_key = jax.random.split(key, 3)

    seen = _period_starts(learned, policies, jax.random.split(state_key, resets), periods)
    states = resets * periods
    start = jax.tree.map(lambda x: x.reshape(states, *x.shape[3:]), seen.start)
    sampled = np.asarray(seen.batch_index).reshape(states, LAYERING_SAMPLES, n)
    generators = np.stack([most_frequent_layering(b)[0] for b in sampled])
    batches = cfg.dag_max_batches or 2
    layerings = jnp.concatenate(
        [
            jnp.zeros((states, 1, n), jnp.int32),
            jnp.asarray(generators, jnp.int32)[:, None],
            random_layerings(layering_key, states, random_count, n, batches),
        ],
        axis=1,
    )  # [S, L, n]

    replay_keys = jax.random.split(replay_key, keys_per_state)
    replays = _replays(learned, policies, start, layerings, replay_keys)
    returns = np.asarray(replays.period_return)  # [S, R, L]
    total = returns.var()
    share = float(returns.var(axis=-1).mean() / total) if total > 0 else 0.0
    kl_count = float(np.asarray(replays.kl_count).sum())
    kl = float(np.asarray(replays.kl_sum).sum() / kl_count) if kl_count else 0.0
    return Lever(returns, np.asarray(layerings), share, kl)


# Compiled once per round object and shapes (not per call): the seeds of a run share them.
@partial(jax.jit, static_argnums=(0, 3))
def _period_starts(
    learned: LearnedRound, policies: Policies, keys: jax.Array, periods: int
) -> Boundary:
    """``boundaries`` of one reset per key, π and the generator sampling."""

    def one_reset(key: jax.Array) -> Boundary:
        return boundaries(learned, policies, key, periods, False, LAYERING_SAMPLES)

    return jax.vmap(one_reset)(keys)


@partial(jax.jit, static_argnums=(0,))
def _replays(
    learned: LearnedRound,
    policies: Policies,
    start: PeriodStart,
    layerings: jax.Array,
    keys: jax.Array,
) -> Replay:
    """Every layering ``[S, L, n]`` replayed from ``start`` with each key: leaves ``[S, R, L]``."""

    def one_key(key: jax.Array) -> Replay:  # every layering with the same key
        under = jax.vmap(lambda b: replay(learned, policies, start, b, key), in_axes=1, out_axes=1)
        return under(layerings)

    return jax.vmap(one_key, out_axes=1)(keys)
