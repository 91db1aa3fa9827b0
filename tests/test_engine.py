"""The batch-sequential engine: MAPPO at K = 1, corrected advantages, per-stage updates."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from b2mapo import engine
from b2mapo.engine import StageCarry, batch_sequential_update, prepare_round, run_stage
from b2mapo.learner import EngineSettings
from b2mapo.losses import categorical_log_prob, corrected_gae, gae, td_errors
from b2mapo.networks import preceding_actions
from b2mapo.partition import make_partitioner
from b2mapo.rollout import rollout
from b2mapo.train import Trainer
from b2mapo.units import make_units, pack_windows, window_batch
from tests import mappo_reference, masked_reference


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


def test_k1_round_equals_foundation_mappo_update(tiny_config) -> None:
    """A whole K = 1 round gives the parameters of the foundation's MAPPO update (whole
    sequences, one minibatch: there the engine's windows are only a way to sum gradients)."""
    cfg = tiny_config(rollout_len=16, recurrent_chunk=16, epochs=2, minibatches=1)
    trainer, learner, trajectory = collect(cfg)
    key = jax.random.PRNGKey(3)
    partitioner = make_partitioner("single", trainer.env.spec.num_agents)
    engine_learner, metrics = jax.jit(
        lambda lr, tr, k: batch_sequential_update(
            lr, tr, k, trainer.networks, partitioner, EngineSettings.of(cfg)
        )
    )(learner, trajectory, key)
    reference_learner, _ = jax.jit(
        lambda lr, tr, k: mappo_reference.mappo_update(lr, tr, k, trainer.networks, cfg)
    )(learner, trajectory, key)
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


def stage_carry(learner, ctx, stage: int) -> StageCarry:
    names = (*engine.STAGE_METRICS, *(("distill_loss",) if ctx.units.teacher is not None else ()))
    return StageCarry(
        learner,
        jnp.zeros_like(ctx.units.log_prob),
        jnp.full_like(ctx.units.batch_index, -1),
        jnp.full((ctx.units.num_agents,), -1, jnp.int32),
        jax.random.PRNGKey(1),
        jnp.int32(stage),
        {name: jnp.float32(0.0) for name in names},
    )


def leaves_per_agent(tree, n: int) -> list[np.ndarray]:
    return [np.asarray(x).reshape(n, -1) for x in jax.tree.leaves(tree) if np.ndim(x) >= 1]


# The config of the two stage checks below: they share one compiled stage.
STAGE_CHECK = {"rollout_len": 16, "partition": "random_k"}


@pytest.mark.parametrize("stage", [0, pytest.param(1, marks=pytest.mark.slow)])
def test_only_the_stage_agents_change(tiny_config, stage: int) -> None:
    """With independent parameters, stage k changes exactly the parameters of batch k, and
    every other agent keeps bit-identical parameters and optimiser state (own Adam moments
    and step count)."""
    cfg = tiny_config(**STAGE_CHECK, share_params=False)
    batch_index = jnp.array([0, 1, 0], jnp.int32)
    trainer, learner, trajectory = collect(cfg, batch_index)
    partitioner = make_partitioner("random_k", 3, 2)
    settings = EngineSettings.of(cfg)
    ctx = prepare_round(learner, trajectory, jax.random.PRNGKey(0), partitioner, settings)
    new = jax.jit(lambda c: run_stage(c, ctx, trainer.networks, settings))(
        stage_carry(learner, ctx, stage)
    ).learner
    in_stage = np.asarray(batch_index) == stage
    for before, after in (
        (learner.params, new.params),
        (learner.actor_opt, new.actor_opt),
        (learner.critic_opt, new.critic_opt),
    ):
        for old, now in zip(leaves_per_agent(before, 3), leaves_per_agent(after, 3), strict=True):
            np.testing.assert_array_equal(old[~in_stage], now[~in_stage])
    for old, now in zip(
        leaves_per_agent(learner.params, 3), leaves_per_agent(new.params, 3), strict=True
    ):
        assert np.all(np.abs(now[in_stage] - old[in_stage]).max(axis=1) > 0)


@pytest.mark.parametrize("share_params", [pytest.param(True, marks=pytest.mark.slow), False])
def test_stage_without_samples_changes_nothing(tiny_config, share_params: bool) -> None:
    """A stage (or minibatch) that holds no sample takes no optimiser step: parameters,
    Adam state and value normaliser stay bit-identical."""
    cfg = tiny_config(**STAGE_CHECK, share_params=share_params)
    trainer, learner, trajectory = collect(cfg, jnp.array([0, 1, 0], jnp.int32))
    partitioner = make_partitioner("random_k", 3, 2)
    settings = EngineSettings.of(cfg)
    ctx = prepare_round(learner, trajectory, jax.random.PRNGKey(0), partitioner, settings)
    # Warm the optimiser up first, so that a step on zero gradients would still move
    # parameters through Adam's momentum.
    warm = jax.jit(lambda c: run_stage(c, ctx, trainer.networks, settings))(
        stage_carry(learner, ctx, 0)
    ).learner
    after = jax.jit(lambda c: run_stage(c, ctx, trainer.networks, settings))(
        stage_carry(warm, ctx, 2)  # no agent is in batch 2
    ).learner
    for x, y in zip(jax.tree.leaves(warm), jax.tree.leaves(after), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def random_batch_index(key, trajectory, n: int, chunk: int, num_batches: int) -> jax.Array:
    """A batch index that changes per (chunk, env), as learned DAGs make it: most chunks have
    one batch, some up to ``num_batches`` (so some envs never reach the later stages)."""
    steps, envs = trajectory.transitions.reward.shape
    k_key, index_key = jax.random.split(key)
    deep = jax.random.uniform(k_key, (steps // chunk, envs, 1)) < 0.3
    per_chunk = jax.random.randint(index_key, (steps // chunk, envs, n), 0, num_batches)
    per_chunk = jnp.where(deep, per_chunk, 0)
    return jnp.repeat(per_chunk, chunk, axis=0).astype(jnp.int32)


@pytest.mark.parametrize(
    ("algo", "share_params", "varying"),
    [
        pytest.param("a2po", True, False, marks=pytest.mark.slow),
        pytest.param("happo", False, False, marks=pytest.mark.slow),
        pytest.param("b2mapo-fixed", True, False, marks=pytest.mark.slow),
        pytest.param("b2mapo-fixed", True, True, marks=pytest.mark.slow),
        ("b2mapo-fixed", False, True),
    ],
)
def test_gathered_stages_equal_masked_stages(
    tiny_config, algo: str, share_params: bool, varying: bool
) -> None:
    """The engine (each stage gathers its own units into windows) gives the update of the
    plain masked round, for fixed partitions and for a batch index that changes per
    (chunk, env) like learned DAGs; ρ comes from the current parameters."""
    cfg = tiny_config(
        algo=algo,
        share_params=share_params,
        rollout_len=16,
        recurrent_chunk=4,
        num_envs=6,
        epochs=2,
        minibatches=1,
        num_batches=2,
    )
    trainer, learner, trajectory = collect(cfg, jnp.array([1, 0, 1], jnp.int32))
    n = trainer.env.spec.num_agents
    tr = trajectory.transitions
    if varying:
        index = random_batch_index(jax.random.PRNGKey(5), trajectory, n, 4, 3)
    elif algo == "b2mapo-fixed":
        index = tr.batch_index
    else:
        index = jnp.broadcast_to(jnp.array([2, 0, 1], jnp.int32), tr.batch_index.shape)
    trajectory = trajectory._replace(transitions=tr._replace(batch_index=index))
    partitioner = make_partitioner("single", n)  # keeps the stored index (A2PO's would reorder)
    got, metrics = jax.jit(
        lambda lr, t: batch_sequential_update(
            lr, t, jax.random.PRNGKey(3), trainer.networks, partitioner, EngineSettings.of(cfg)
        )
    )(learner, trajectory)
    num_stages = int(index.max()) + 1
    want = jax.jit(
        lambda lr, t, i: masked_reference.masked_round(lr, t, i, trainer.networks, cfg, num_stages)
    )(learner, trajectory, index)
    assert float(metrics["num_batches"]) == num_stages
    assert_trees_close(got.params, want.params, atol=2e-5)
    assert_trees_close(got.value_norm, want.value_norm)


def test_windows_hold_each_member_once_and_keep_groups_whole() -> None:
    """Packing: every member unit sits in exactly one slot, no other unit does, and with
    slack a group never straddles two windows; the window count covers them all."""
    rng = np.random.default_rng(0)
    n, groups, width = 4, 50, 9
    member = jnp.asarray(rng.random(groups * n) < 0.4)
    rank = jnp.asarray(
        rng.permutation(groups)[np.arange(groups * n) // n] * n + np.arange(groups * n) % n
    )
    for slack in (0, n - 1):
        windows = pack_windows(member, rank, width, slack, n)
        window = width + slack
        slots = np.asarray(windows.unit)[np.asarray(windows.valid)]
        assert sorted(slots.tolist()) == np.flatnonzero(np.asarray(member)).tolist()
        used = np.flatnonzero(np.asarray(windows.valid)) // window
        assert used.max() + 1 == int(windows.count)
        if slack:
            where = {}
            for slot in np.flatnonzero(np.asarray(windows.valid)):
                unit = int(windows.unit[slot])
                where.setdefault(unit // n, set()).add(slot // window)
            assert all(len(w) == 1 for w in where.values())
            segment = np.asarray(windows.segment)
            for slot in np.flatnonzero(np.asarray(windows.valid)):
                mates = np.flatnonzero(
                    np.asarray(windows.valid)
                    & (np.arange(len(segment)) // window == slot // window)
                    & (segment == segment[slot])
                )
                assert {int(windows.unit[m]) // n for m in mates} == {int(windows.unit[slot]) // n}


def test_stage_loop_stops_at_the_largest_k_under_the_seed_vmap(tiny_config, monkeypatch) -> None:
    """Under the seed ``vmap`` the engine runs max-over-seeds K stages, not n stage slots:
    count the stages that really execute with a host callback in the stage body."""
    cfg = tiny_config(algo="b2mapo-fixed", num_batches=1, rollout_len=8)
    trainer, learner, trajectory = collect(cfg, jnp.zeros((3,), jnp.int32))
    executed = []
    real = engine.run_stage

    def counted(carry, *args):
        jax.debug.callback(lambda stage: executed.append(int(stage)), carry.stage)
        return real(carry, *args)

    monkeypatch.setattr(engine, "run_stage", counted)
    partitioner = make_partitioner("single", 3)
    seeds = 2
    batched = jax.tree.map(lambda x: jnp.stack([x] * seeds), (learner, trajectory))
    update = jax.jit(
        jax.vmap(
            lambda lr, t: batch_sequential_update(
                lr, t, jax.random.PRNGKey(0), trainer.networks, partitioner, EngineSettings.of(cfg)
            )
        )
    )
    _, metrics = update(*batched)
    jax.block_until_ready(metrics)
    assert np.asarray(metrics["num_batches"]).tolist() == [1.0, 1.0]
    assert sorted(executed) == [0] * seeds  # one stage per seed; n = 3 slots would be 3


@pytest.mark.parametrize("algo", [pytest.param("mappo", marks=pytest.mark.slow), "b2mapo-fixed"])
def test_units_replay_reproduces_rollout_log_probs(tiny_config, algo: str) -> None:
    """Replaying the rollout as training units (each chunk from its stored GRU state, with
    the earlier batches' actions as input when conditioned) gives back the behaviour
    log-probabilities the rollout stored."""
    cfg = tiny_config(algo=algo, rollout_len=12, recurrent_chunk=4, num_batches=2)
    batch_index = jnp.array([1, 0, 1], jnp.int32)
    trainer, learner, trajectory = collect(cfg, batch_index)
    units = make_units(trajectory, trajectory.transitions.batch_index, 4)
    windows = pack_windows(
        jnp.ones(units.num_units, bool), jnp.arange(units.num_units), units.num_units, 0, 3
    )
    batch = window_batch(units, windows, jnp.int32(0), units.num_units)
    logits = engine.window_logits(learner.params["actor"], trainer.networks, batch)
    replayed = categorical_log_prob(logits, batch.action)
    np.testing.assert_allclose(
        np.asarray(replayed), np.asarray(units.log_prob)[:, np.asarray(batch.unit)], atol=1e-5
    )


@pytest.mark.parametrize("algo", ["mappo", "b2mapo-fixed"])
def test_training_replay_reproduces_rollout_log_probs(tiny_config, algo: str) -> None:
    """Replaying a rollout (with the earlier batches' actions as input when conditioned)
    gives back the behaviour log-probabilities the rollout stored."""
    cfg = tiny_config(algo=algo, rollout_len=12, recurrent_chunk=4, num_batches=2)
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
