"""The batch-sequential engine: MAPPO at K = 1, corrected advantages, per-stage updates."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from b2mapo.engine import (
    StageBatch,
    batch_sequential_update,
    prepare_round,
    run_stage,
    stage_loss,
)
from b2mapo.losses import categorical_log_prob, corrected_gae, gae, td_errors
from b2mapo.networks import preceding_actions
from b2mapo.partition import make_partitioner
from b2mapo.rollout import rollout
from b2mapo.train import Trainer
from tests import mappo_reference


def collect(cfg, batch_index=None):
    """A trainer, its initial learner state (one seed) and one rollout."""
    trainer = Trainer(cfg)
    state = jax.tree.map(lambda x: x[0], trainer.init())
    n = trainer.env.spec.num_agents
    index = jnp.zeros((n,), jnp.int32) if batch_index is None else jnp.asarray(batch_index)
    _, trajectory, _ = rollout(
        trainer.env,
        trainer.networks,
        state.learner.params,
        state.loop,
        jax.random.PRNGKey(7),
        cfg.rollout_len,
        index,
    )
    return trainer, state.learner, trajectory


def assert_trees_close(a, b, atol: float = 1e-6) -> None:
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=atol)


def test_k1_loss_and_gradients_equal_foundation_mappo(tiny_config) -> None:
    """At K = 1 with per-agent ratios and no correction, loss and gradients are MAPPO's."""
    cfg = tiny_config(rollout_len=16)
    trainer, learner, trajectory = collect(cfg)
    reference_batch, _ = mappo_reference.prepare_batch(trajectory, learner.value_norm, cfg)
    everything = jnp.ones_like(reference_batch.active)
    engine_batch = StageBatch(
        transitions=reference_batch.transitions,
        initial_carry=reference_batch.initial_carry,
        advantages=reference_batch.advantages,
        value_targets=reference_batch.value_targets,
        policy_mask=reference_batch.active,
        stage_mask=everything,
        preceding=jnp.ones(everything.shape[:-1]),
    )
    ref_grad = jax.grad(mappo_reference.ppo_loss, has_aux=True)
    eng_grad = jax.grad(stage_loss, has_aux=True)
    ref_g, ref_m = ref_grad(learner.params, trainer.networks, reference_batch, cfg)
    eng_g, eng_m = eng_grad(learner.params, trainer.networks, engine_batch, cfg)
    for name in ("policy_loss", "value_loss", "entropy"):
        np.testing.assert_allclose(float(eng_m[name]), float(ref_m[name]), rtol=1e-6)
    assert_trees_close(eng_g, ref_g, atol=1e-7)


def test_k1_round_equals_foundation_mappo_update(tiny_config) -> None:
    """A whole K = 1 round gives the parameters of the foundation's MAPPO update."""
    cfg = tiny_config(rollout_len=16, epochs=2)
    trainer, learner, trajectory = collect(cfg)
    key = jax.random.PRNGKey(3)
    partitioner = make_partitioner("single", trainer.env.spec.num_agents)
    engine_learner, metrics = jax.jit(
        lambda lr, tr, k: batch_sequential_update(lr, tr, k, trainer.networks, partitioner, cfg)
    )(learner, trajectory, key)
    # The engine draws the stage's key as split(split(key)[1])[1]; give the reference the same.
    stage_key = jax.random.split(jax.random.split(key)[1])[1]
    reference_learner, _ = jax.jit(
        lambda lr, tr, k: mappo_reference.mappo_update(lr, tr, k, trainer.networks, cfg)
    )(learner, trajectory, stage_key)
    assert float(metrics["num_batches"]) == 1.0
    assert_trees_close(engine_learner.params, reference_learner.params, atol=1e-6)


def test_corrected_advantage_with_unit_ratios_is_gae() -> None:
    """When every ratio is 1 the corrected advantage is plain GAE."""
    rng = np.random.default_rng(0)
    rewards, values, next_values = rng.normal(size=(3, 30, 4)).astype(np.float32)
    done = (rng.random((30, 4)) < 0.15).astype(np.float32)
    deltas = td_errors(rewards, values, next_values, done, 0.99)
    np.testing.assert_allclose(
        np.asarray(corrected_gae(deltas, np.ones_like(deltas), done, 0.99, 0.95)),
        np.asarray(gae(rewards, values, next_values, done, done, 0.99, 0.95)),
        rtol=1e-6,
    )


def test_corrected_advantage_truncates_and_cuts_at_episode_ends() -> None:
    """Trace weights scale the future (never above 1 in use) and a done step cuts the trace."""
    deltas = np.ones((5,), np.float32)
    no_done = np.zeros((5,), np.float32)
    half = np.full((5,), 0.5, np.float32)
    a_half = np.asarray(corrected_gae(deltas, half, no_done, 1.0, 1.0))
    np.testing.assert_allclose(a_half, [1.9375, 1.875, 1.75, 1.5, 1.0])
    # The engine's weights are min(1, rho): a large ratio never increases the trace.
    weights = np.minimum(1.0, np.array([3.0, 10.0, 1.0, 7.0, 2.0], np.float32))
    a_big = np.asarray(corrected_gae(deltas, weights, no_done, 1.0, 1.0))
    a_one = np.asarray(corrected_gae(deltas, np.ones_like(deltas), no_done, 1.0, 1.0))
    np.testing.assert_allclose(a_big, a_one)
    done = np.array([0, 1, 0, 0, 0], np.float32)
    a_cut = np.asarray(corrected_gae(deltas, np.ones_like(deltas), done, 1.0, 1.0))
    np.testing.assert_allclose(a_cut[:2], [2.0, 1.0])  # nothing flows back across step 1


@pytest.mark.parametrize("stage", [0, 1])
def test_only_the_stage_agents_change(tiny_config, stage: int) -> None:
    """With independent parameters, stage k changes exactly the parameters of batch k."""
    cfg = tiny_config(rollout_len=16, share_params=False, partition="random_k")
    batch_index = jnp.array([0, 1, 0], jnp.int32)
    trainer, learner, trajectory = collect(cfg, batch_index)
    partitioner = make_partitioner("random_k", 3, 2)
    ctx = prepare_round(learner, trajectory, jax.random.PRNGKey(0), partitioner, cfg)
    new, _, _ = jax.jit(
        lambda lr: run_stage(
            lr,
            jnp.zeros_like(trajectory.transitions.log_prob),
            jax.random.PRNGKey(1),
            jnp.int32(stage),
            ctx,
            trainer.networks,
            cfg,
        )
    )(learner)
    in_stage = np.asarray(batch_index) == stage
    for part in ("actor", "critic"):
        for before, after in zip(
            jax.tree.leaves(learner.params[part]), jax.tree.leaves(new.params[part]), strict=True
        ):
            changed = np.abs(np.asarray(after - before)).reshape(3, -1).max(axis=1) > 0
            np.testing.assert_array_equal(changed, in_stage)


@pytest.mark.parametrize("algo", ["mappo", "b2mapo-fixed"])
def test_training_replay_reproduces_rollout_log_probs(tiny_config, algo: str) -> None:
    """Replaying a rollout (with the earlier batches' actions as input when conditioned)
    gives back the behaviour log-probabilities the rollout stored."""
    cfg = tiny_config(algo=algo, rollout_len=12, num_batches=2)
    batch_index = jnp.array([1, 0, 1], jnp.int32)
    trainer, learner, trajectory = collect(cfg, batch_index)
    tr = trajectory.transitions
    preceding = trainer.networks.preceding(tr.action, tr.batch_index)
    assert (preceding is None) == (algo == "mappo")
    logits = trainer.networks.unroll(
        learner.params["actor"], trajectory.initial_carry, tr.obs, tr.first, tr.avail, preceding
    )
    replayed = categorical_log_prob(logits, tr.action)
    np.testing.assert_allclose(np.asarray(replayed), np.asarray(tr.log_prob), atol=1e-5)


def test_conditioned_agents_see_only_earlier_batches() -> None:
    """Agent i's action input holds exactly the actions of agents in earlier batches."""
    actions = jnp.array([2, 0, 1])
    batch_index = jnp.array([1, 0, 1])
    nothing = 3  # = num_actions: "no action seen"
    view = np.asarray(preceding_actions(actions, batch_index, 3))
    np.testing.assert_array_equal(view[1], [nothing] * 3)  # batch 0 sees nothing
    for agent in (0, 2):  # batch 1 sees agent 1's action only
        np.testing.assert_array_equal(view[agent], [nothing, 0, nothing])
