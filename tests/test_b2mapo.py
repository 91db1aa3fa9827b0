"""B2MAPO's upper layer and derived policy: the generator learns from its reward, π_ind acts
alone and is pulled towards π by distillation, and the pieces fit into training."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from b2mapo import rundir, runner
from b2mapo.config import ConfigError
from b2mapo.losses import categorical_kl
from b2mapo.rollout import Distillation, rollout
from b2mapo.train import Trainer
from tests.conftest import leaning_on_partners
from tests.generator_rounds import generator_round


@pytest.fixture
def b2mapo(tiny_config):
    """A tiny B2MAPO config (3 agents, periods of 4 steps)."""

    def make(**overrides):
        return tiny_config(**{"algo": "b2mapo", "dag_period": 4, **overrides})

    return make


def test_period_reward_discounts_and_stops_at_the_episode_end(b2mapo) -> None:
    """``Σ γ^l r`` up to and including the step that ends the episode, minus cost · K; a
    truncation (not a termination) adds the critic's discounted value of the cut state."""
    trainer = Trainer(b2mapo(gamma=0.5, batch_cost=0.25))
    reward = jnp.array([[1.0, 1.0], [1.0, 1.0], [1.0, 1.0], [1.0, 1.0]])
    done = jnp.array([[False, False], [True, False], [False, False], [False, False]])
    end_value = jnp.array([8.0, 8.0])
    period_return, ended = trainer.round.upper.period_reward(
        reward, done, done, end_value, jnp.array([1, 3])
    )
    np.testing.assert_allclose(period_return, [1.5 - 0.25, 1.875 - 0.75])
    np.testing.assert_array_equal(ended, [True, False])
    # The same end as a time-limit truncation bootstraps from the critic: + γ^2 · 8.
    truncated, ended = trainer.round.upper.period_reward(
        reward, done, jnp.zeros_like(done), end_value, jnp.array([1, 3])
    )
    np.testing.assert_allclose(truncated, [1.5 - 0.25 + 0.25 * 8.0, 1.875 - 0.75])
    np.testing.assert_array_equal(ended, [True, False])


def test_generator_learns_to_use_fewer_batches_when_batches_cost(b2mapo) -> None:
    """With only a batch cost as reward, PPO on the upper layer lowers the mean K (uncapped,
    so that untrained DAGs on 3 agents reach up to 3 batches)."""
    cfg = b2mapo(
        dag_max_batches=0,
        batch_cost=1.0,
        dag_lr=1e-2,
        dag_kl_coef=0.0,
        dag_keep_init=0.5,
        epochs=4,
        num_envs=16,
        anneal_lr=False,
    )
    upper = Trainer(cfg).round.upper
    round_ = generator_round(upper, lambda action: jnp.zeros(action.order.shape[0]))

    learner = upper.init(jax.random.key(0))
    mean_k = []
    for i in range(40):
        learner, metrics, _ = round_(learner, jax.random.key(i + 1))
        mean_k.append(float(metrics["num_batches"]))
    assert np.mean(mean_k[:5]) > 1.5, mean_k  # untrained DAGs on 3 agents have edges
    assert np.mean(mean_k[-5:]) < np.mean(mean_k[:5]) - 0.4, mean_k


def test_derived_policy_acts_on_its_own_observation_only(b2mapo) -> None:
    """Changing other agents' observations leaves an agent's π_ind logits unchanged (and
    ``act`` takes no actions of other agents at all)."""
    trainer = Trainer(b2mapo())
    derived = trainer.round.derived
    params = derived.init(jax.random.key(0), 2).learner.params
    spec = trainer.env.spec
    obs = jax.random.normal(jax.random.key(1), (2, spec.num_agents, spec.obs_dim))
    others = obs.at[:, 1:].set(jax.random.normal(jax.random.key(2), obs[:, 1:].shape))
    carry = derived.networks.initial_carry((2,))
    first = jnp.ones((2,), bool)
    avail = jnp.ones((2, spec.num_agents, spec.num_actions), bool)
    _, logits_a = derived.networks.act(params["actor"], carry, obs, first, avail)
    _, logits_b = derived.networks.act(params["actor"], carry, others, first, avail)
    np.testing.assert_allclose(logits_a[:, 0], logits_b[:, 0], rtol=1e-6)
    assert not np.allclose(logits_a[:, 1], logits_b[:, 1])
    assert not derived.networks.condition_on_actions


@pytest.mark.parametrize("derived", ["mappo", pytest.param("ippo", marks=pytest.mark.slow)])
def test_distillation_lowers_kl_to_the_joint_policy(b2mapo, derived: str) -> None:
    """On a fixed rollout and teacher, π_ind updates with the distillation loss bring
    KL(teacher || π_ind) down, and further than the same updates without it."""
    trainer = Trainer(
        b2mapo(derived=derived, num_envs=8, rollout_len=16, epochs=2, anneal_lr=False, lr=1e-2)
    )
    state = jax.tree.map(lambda x: x[0], trainer.init())
    batch_index = jnp.broadcast_to(jnp.array([0, 1, 1]), (8, 3))
    loop, trajectory, _ = rollout(
        trainer.env,
        trainer.networks,
        state.learner.params,
        state.loop,
        jax.random.key(3),
        16,
        batch_index,
        trainer.round.derived.follower(state.own.derived.learner.params, state.own.derived.carry),
    )
    tr = trajectory.transitions
    # A teacher far from the near-uniform untrained π_ind, and learnable: agent i prefers
    # action (i + 2) mod A where it is available.
    num_agents, num_actions = tr.avail.shape[-2:]
    preferred = jnp.arange(num_actions) == (jnp.arange(num_agents)[:, None] + 2) % num_actions
    teacher_logits = jnp.where(tr.avail, 3.0 * preferred, -1e9)
    active = tr.avail.sum(-1) > 1

    def kl_to_teacher(derived_state) -> float:
        logits = trainer.round.derived.networks.unroll(
            derived_state.learner.params["actor"],
            state.own.derived.carry,
            tr.obs,
            tr.first,
            tr.avail,
        )
        kl = categorical_kl(teacher_logits, logits)
        return float(jnp.sum(kl * active) / jnp.sum(active))

    def train(weight: float):
        update = jax.jit(trainer.round.derived.update)
        teacher = Distillation(teacher_logits, jnp.full(tr.reward.shape, weight))
        derived_state = state.own.derived
        for i in range(10):
            derived_state, metrics = update(
                derived_state._replace(carry=state.own.derived.carry),
                trajectory,
                loop.timestep.obs,
                teacher,
                jax.random.key(i),
            )
        return derived_state, metrics

    before = kl_to_teacher(state.own.derived)
    distilled, metrics = train(5.0)
    plain, _ = train(0.0)
    assert "ind_distill_loss" in metrics
    assert kl_to_teacher(distilled) < 0.5 * before, (before, kl_to_teacher(distilled))
    assert kl_to_teacher(distilled) < kl_to_teacher(plain)


def test_b2mapo_run_logs_both_policies_and_eval_uses_pi_ind_only(b2mapo_run) -> None:
    """Training logs K, the upper layer's losses and π_ind's (with its clipped fraction and
    KL to π); evaluation during training scores π_ind and π; ``b2mapo eval`` scores π_ind
    alone."""
    records = rundir.read_metrics(b2mapo_run)
    train_keys = set(records[0])
    assert {"dag_num_batches", "dag_policy_loss", "dag_value_loss", "ind_policy_loss"} <= train_keys
    assert 1.0 <= records[0]["dag_num_batches"] <= 3.0
    # Diagnostics of the derivation: π_ind's clipped fraction and KL(π || π_ind).
    for record in (r for r in records if r["kind"] == "train"):
        assert 0.0 <= record["ind_clipfrac"] <= 1.0
        assert 0.0 <= record["ind_teacher_kl"] < 10.0
        assert record["dag_entropy"] >= 0.0
    evals = [r for r in records if r["kind"] == "eval"]
    assert evals and {"greedy_win_rate", "greedy_joint_win_rate"} <= set(evals[-1])
    evaluated = runner.evaluate_run(b2mapo_run)
    assert "win_rate" in evaluated.eval_greedy
    assert "joint_win_rate" not in evaluated.eval_greedy


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"dag_period": 3}, "dag_period=3 must divide rollout_len=8"),
        ({"condition_on_actions": False}, "condition_on_actions"),
        ({"derived": "qmix"}, "unknown derived 'qmix'"),
        ({"dag_delta": -0.1}, "dag_delta=-0.1"),
        ({"dag_minibatches": 3}, "dag_minibatches=3 must divide num_envs=4"),
        ({"derived_epochs": 0}, "derived_epochs=0 must be a positive integer"),
    ],
)
def test_inconsistent_b2mapo_settings_are_refused(b2mapo, overrides, message) -> None:
    with pytest.raises(ConfigError, match=message):
        b2mapo(**overrides)


@pytest.mark.parametrize("frozen", [False, True])
def test_frozen_generator_keeps_its_initial_parameters(b2mapo, frozen: bool) -> None:
    """With dag_frozen the generator (parameters and optimiser state) leaves a chunk exactly
    as it entered it, so its DAGs keep the initial K distribution; π and π_ind still train.
    Without it the same chunk moves the generator."""
    trainer = Trainer(b2mapo(dag_frozen=frozen, num_envs=4, dag_minibatches=2))
    state = trainer.init()
    after, metrics = trainer.chunk(state)

    def same(before, trained) -> bool:
        pairs = zip(jax.tree.leaves(before), jax.tree.leaves(trained), strict=True)
        return all(np.array_equal(a, b) for a, b in pairs)

    assert same(state.own.upper, after.own.upper) == frozen
    assert ("dag_kl" in metrics) != frozen
    pi_and_pi_ind = [
        (state.learner.params, after.learner.params),
        (state.own.derived.learner.params, after.own.derived.learner.params),
    ]
    for before, trained in pi_and_pi_ind:
        assert not same(before, trained)


def test_frozen_generator_needs_the_learned_partition(tiny_config) -> None:
    with pytest.raises(ConfigError, match="dag_frozen=True freezes B2MAPO's DAG generator"):
        tiny_config(algo="b2mapo-fixed", dag_frozen=True)


@pytest.mark.parametrize(("keep_init", "differs"), [(1e-6, False), (0.5, True)])
def test_paired_credit_replays_the_period_exactly_on_the_same_dag(
    tiny_config, keep_init: float, differs: bool
) -> None:
    """With dag_credit=paired every period is replayed from its start with its keys on the
    most likely DAG. Where the generator keeps no pair, sampled and most likely DAGs have the
    same layering (one batch), and the replay's return equals the period's bit for bit; on
    probe:coupled, with a π that leans on its partners' actions and half the pairs kept at
    random, some replays differ."""
    cfg = tiny_config(
        env="probe:coupled",
        algo="b2mapo",
        dag_period=4,
        dag_credit="paired",
        dag_keep_init=keep_init,
        num_envs=8,
        dag_minibatches=2,
    )
    trainer = Trainer(cfg)
    state = jax.tree.map(lambda x: x[0], trainer.init())
    params = state.learner.params
    actor = leaning_on_partners(params["actor"], 30.0, 100.0)
    state = state._replace(learner=state.learner._replace(params={**params, "actor": actor}))
    periods = jax.jit(trainer.round.collect)(state, state.key).own.periods
    reward, baseline = np.asarray(periods.reward), np.asarray(periods.baseline)
    if differs:
        assert (reward != baseline).any()
    else:
        np.testing.assert_array_equal(reward, baseline)
        assert (np.asarray(periods.num_batches) == 1).all()


def test_paired_credit_is_refused_for_host_environments(tiny_config) -> None:
    with pytest.raises(ConfigError, match="dag_credit=paired replays periods"):
        tiny_config(env="pettingzoo:mpe2.simple_spread_v3", algo="b2mapo", dag_credit="paired")
