"""The DAG generator's update on planted periods: its metrics move, and a reward that pays for
one pair raises that pair's keep probability only."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from b2mapo import rundir
from b2mapo.config import resolve
from b2mapo.runner import train
from b2mapo.train import Trainer
from b2mapo.upper.dag import DagAction, log_prob
from b2mapo.upper.generator import Period, UpperLayer, UpperLearner

PERIODS = 2
# The slow test's budget of env steps on probe:coupled.
STEPS = 200_000


def generator_round(
    upper: UpperLayer, reward_of: Callable[[DagAction], jax.Array]
) -> Callable[[UpperLearner, jax.Array], tuple[UpperLearner, dict, jax.Array]]:
    """A jitted round of the generator alone on fixed random observations: it samples a DAG
    per env and period, is paid ``reward_of(action)`` ``[E]``, and updates. Returns the new
    learner, its metrics and the keep probabilities ``[P, E, n, n]`` it sampled from."""
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
            lp = jax.vmap(log_prob, in_axes=(0, 0, 0, 0, None, None, 0))(
                action,
                dist.order_scores,
                dist.edge_logits,
                dist.g,
                upper.delta,
                cfg.dag_max_batches,
                batch_index,
            )
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
        return learner, metrics, keep

    return round_


def test_generator_kl_is_measured_after_its_update(tiny_config) -> None:
    """One Adam step on a reward that depends on the DAG moves the generator: its reported
    KL to the generator that sampled the periods is positive (it was 0 when measured before
    the step)."""
    cfg = tiny_config(env="probe:coupled", algo="b2mapo", dag_period=4, num_envs=16)
    upper = Trainer(cfg).round.upper
    round_ = generator_round(upper, lambda action: action.keep[:, 0, 1].astype(jnp.float32))
    _, metrics, _ = round_(upper.init(jax.random.key(0)), jax.random.key(1))
    assert float(metrics["dag_kl"]) > 0.0
    assert 0.0 <= float(metrics["dag_clip_frac"]) <= 1.0


def test_planted_advantage_raises_that_pair_only(tiny_config) -> None:
    """Paying 1 for every DAG that keeps the pair (0, 1) raises that pair's keep probability
    and none of the other pairs' by as much."""
    cfg = tiny_config(
        env="probe:coupled",
        algo="b2mapo",
        dag_period=4,
        num_envs=32,
        hidden_size=16,
        dag_keep_init=0.3,
        anneal_lr=False,
    )
    upper = Trainer(cfg).round.upper
    round_ = generator_round(upper, lambda action: action.keep[:, 0, 1].astype(jnp.float32))
    learner = upper.init(jax.random.key(0))
    first = None
    for i in range(15):
        learner, _, keep = round_(learner, jax.random.key(i + 1))
        first = keep.mean(axis=(0, 1)) if first is None else first
    gain = np.asarray(keep.mean(axis=(0, 1)) - first)
    others = np.triu(np.ones_like(gain, bool), k=1)
    others[0, 1] = False
    assert gain[0, 1] > 0.2, gain
    assert gain[others].max() < 0.5 * gain[0, 1], gain


@pytest.mark.slow
def test_generator_separates_the_true_pairs_of_probe_coupled(tmp_path: Path) -> None:
    """On probe:coupled (pairs (0, 1) and (2, 3)) the b2mapo preset's generator puts each
    true pair in different batches in >= 0.9 of its greedy layerings (the most frequent
    sampled layering at each of the DAG history's states, recorded at the run's one
    evaluation, at its end) after STEPS env steps, one seed (about two minutes on two cores)."""
    cfg = resolve(
        {
            "env": "probe:coupled",
            "algo": "b2mapo",
            "total_steps": STEPS,
            "eval_every": STEPS,
            "eval_episodes": 16,
            "final_eval_episodes": 16,
            "out": str(tmp_path / "run"),
        }
    )
    train(cfg)
    apart = np.asarray(rundir.read_history(tmp_path / "run")[-1]["seeds"][0]["separated"])
    assert apart[0, 1] >= 0.9 and apart[2, 3] >= 0.9, apart
