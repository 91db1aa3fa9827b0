"""The DAG generator's update on planted periods: its metrics move, and a reward that pays for
one pair raises that pair's keep probability only."""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from b2mapo import rundir
from b2mapo.config import resolve
from b2mapo.runner import train
from b2mapo.train import Trainer
from tests.generator_rounds import generator_round

# The slow test's budget of env steps on probe:coupled.
STEPS = 200_000


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
