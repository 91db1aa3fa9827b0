"""The DAG generator alone on planted periods: a jitted round of sampling, reward and update
(``tests/test_generator.py``, ``tests/test_b2mapo.py``)."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from b2mapo.upper.dag import DagAction
from b2mapo.upper.generator import Period, UpperLayer, UpperLearner

PERIODS = 2


def generator_round(
    upper: UpperLayer, reward_of: Callable[[DagAction], jax.Array]
) -> Callable[[UpperLearner, jax.Array], tuple[UpperLearner, dict, jax.Array]]:
    """A jitted round of the generator alone on fixed random observations: it samples a DAG
    per env and period, is paid ``reward_of(action)`` ``[E]``, and updates. Returns the new
    learner, its metrics (with ``num_batches``, the sampled DAGs' mean K) and the keep
    probabilities ``[P, E, n, n]`` it sampled from."""
    cfg, spec = upper.cfg, upper.spec
    shape = (PERIODS, cfg.num_envs, spec.num_agents, spec.obs_dim)
    obs = jax.random.normal(jax.random.key(1), shape)
    state = jnp.zeros((PERIODS, cfg.num_envs, spec.state_dim))

    @jax.jit
    def round_(learner: UpperLearner, key: jax.Array) -> tuple:
        def period(carry, inputs):
            obs, state, key = inputs
            next_carry, action, dist, batch_index = upper.act(
                learner.params, carry, obs, state, key
            )
            k = jnp.max(batch_index, axis=-1) + 1
            never = jnp.zeros((cfg.dag_period, cfg.num_envs), bool)
            lp = upper.log_prob(action, dist, batch_index)
            reward = reward_of(action) - cfg.batch_cost * k
            ended = never[0]
            record = Period(
                obs,
                state,
                carry.reset,
                (carry.agents, carry.critic),
                action,
                dist.g,
                lp,
                dist.value,
                reward,
                jnp.zeros_like(reward),
                ended,
                batch_index,
            )
            return next_carry._replace(reset=ended), (record, jax.nn.sigmoid(dist.edge_logits))

        start = upper.initial_carry(cfg.num_envs)
        keys = jax.random.split(key, PERIODS)
        carry, (periods, keep) = jax.lax.scan(period, start, (obs, state, keys))
        last_value = upper.value(learner.params, carry, obs[0], state[0])
        learner, metrics = upper.update(learner, periods, last_value, key)
        return learner, metrics | {"num_batches": periods.num_batches.mean()}, keep

    return round_
