"""probe:coupled (a team with planted pairwise dependencies) and the scorer of a learned DAG
against it (``b2mapo.reproduce.recovery``), down to a tiny trained B2MAPO run."""

from __future__ import annotations

import itertools
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from b2mapo import policy, rundir
from b2mapo.config import resolve
from b2mapo.envs import make_env
from b2mapo.envs.coupled import CoupledPairs
from b2mapo.errors import ConfigError
from b2mapo.reproduce import recovery
from b2mapo.runner import train
from b2mapo.upper import history
from tests.conftest import TINY

# Cues of the six default agents: pairs (0, 1) and (2, 3), singletons 4 and 5.
CUE = np.array([1, 2, 3, 0, 2, 1], np.int32)


def _step(env: CoupledPairs, cue: np.ndarray, actions: list[int]) -> tuple:
    state, _ = env.reset(jax.random.PRNGKey(0))
    state = state._replace(cue=jnp.asarray(cue, jnp.int32))
    return env.step(jax.random.PRNGKey(1), state, jnp.asarray(actions, jnp.int32))


def _graph(n: int, pairs: list[tuple[int, int]]) -> np.ndarray:
    graph = np.zeros((n, n), dtype=bool)
    for i, j in pairs:
        graph[i, j] = graph[j, i] = True
    return graph


# --- the environment ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("actions", "satisfied", "reward"),
    [
        ([1, 1, 0, 0, 2, 1], [1, 1, 1, 1, 1, 1], 1.0),  # pairs agree on a cue, singles on theirs
        ([2, 2, 3, 3, 2, 1], [1, 1, 1, 1, 1, 1], 1.0),  # either agent's cue will do
        ([1, 2, 0, 0, 2, 1], [0, 0, 1, 1, 1, 1], 0.75),  # pair 0 plays its own cues: no agreement
        ([3, 3, 0, 0, 2, 1], [0, 0, 1, 1, 1, 1], 0.75),  # pair 0 agrees on neither cue
        ([1, 1, 0, 0, 0, 1], [1, 1, 1, 1, 0, 1], 0.75),  # singleton 4 misses its cue
        ([2, 1, 0, 3, 2, 0], [0, 0, 0, 0, 1, 0], 0.25),  # both pairs disagree, singleton 5 misses
        ([0, 3, 1, 2, 3, 3], [0, 0, 0, 0, 0, 0], 0.0),
    ],
)
def test_rewards_on_hand_picked_actions(
    actions: list[int], satisfied: list[int], reward: float
) -> None:
    """Per-agent constraints and the reward (fraction of the 4 constraints: 2 pairs, 2
    singletons) on hand-picked joint actions."""
    env = CoupledPairs()
    cue = jnp.asarray(CUE)
    ok = np.asarray(env.satisfied(cue, jnp.asarray(actions, jnp.int32)))
    np.testing.assert_array_equal(ok, np.asarray(satisfied, bool))
    _, timestep = _step(env, CUE, actions)
    assert float(timestep.reward) == pytest.approx(reward)
    assert timestep.reward.dtype == jnp.float32


def test_true_dependencies_are_the_planted_pairs() -> None:
    """The default graph is {0, 1} and {2, 3}; other pairs, and bad pairs refused."""
    np.testing.assert_array_equal(CoupledPairs().true_dependencies(), _graph(6, [(0, 1), (2, 3)]))
    env = CoupledPairs(num_agents=5, pairs=[(4, 1)])
    np.testing.assert_array_equal(env.true_dependencies(), _graph(5, [(1, 4)]))
    assert make_env("probe:coupled").true_dependencies().sum() == 4
    for pairs in ([(0, 1), (1, 2)], [(0, 6)], [(0, 0)]):
        with pytest.raises(ValueError, match="distinct agents"):
            CoupledPairs(pairs=pairs)


def test_only_seeing_the_partner_solves_a_pair() -> None:
    """On one pair with 3 actions: copying the partner's action (the partner playing its cue)
    satisfies every cue pair, while the best of all decentralised deterministic strategies
    (each agent's action a function of its own cue) satisfies 1 - (1 - 1/A)^2 of them."""
    a = 3
    env = CoupledPairs(num_agents=2, num_actions=a, pairs=[(0, 1)])
    cues = np.array(list(itertools.product(range(a), repeat=2)), np.int32)  # [9, 2]
    satisfied = jax.jit(jax.vmap(env.satisfied))
    copying = satisfied(jnp.asarray(cues), jnp.asarray(cues[:, [0, 0]]))
    assert np.all(np.asarray(copying))

    strategies = np.array(list(itertools.product(range(a), repeat=a)), np.int32)  # cue -> action
    f, g = np.meshgrid(np.arange(len(strategies)), np.arange(len(strategies)), indexing="ij")
    f, g = f.reshape(-1), g.reshape(-1)
    actions = np.stack(
        [strategies[f][:, cues[:, 0]], strategies[g][:, cues[:, 1]]], axis=-1
    )  # [strategy pairs, cue pairs, 2]
    flat_cues = np.broadcast_to(cues, actions.shape).reshape(-1, 2)
    ok = np.asarray(satisfied(jnp.asarray(flat_cues), jnp.asarray(actions.reshape(-1, 2))))
    best = ok[:, 0].reshape(len(f), len(cues)).mean(axis=1).max()
    assert best == pytest.approx(1 - (1 - 1 / a) ** 2)


def _play(env: CoupledPairs, mistakes: set[int], seed: int = 0) -> list:
    """An episode in which the pairs copy their first agent's cue and singletons play theirs,
    except at the steps in ``mistakes`` (singleton 4 plays a wrong action there)."""
    step = jax.jit(env.step)
    state, timestep = env.reset(jax.random.PRNGKey(seed))
    timesteps = []
    for t in range(env.spec.episode_limit):
        cue = np.asarray(timestep.obs).argmax(-1)
        np.testing.assert_array_equal(cue, np.asarray(state.cue))  # the obs shows the cue
        actions = cue.copy()
        actions[1], actions[3] = cue[0], cue[2]
        if t in mistakes:
            actions[4] = (cue[4] + 1) % env.spec.num_actions
        state, timestep = step(jax.random.PRNGKey(100 + t), state, jnp.asarray(actions))
        timesteps.append(timestep)
    return timesteps


@pytest.mark.parametrize(("mistakes", "won"), [(set(), True), ({0, 5}, True), ({1, 4, 7}, False)])
def test_episode_win_and_loss(mistakes: set[int], won: bool) -> None:
    """An 8-step episode terminates at the limit, won with at least 6 perfect steps and lost
    otherwise; the return sums the steps' fractions."""
    env = CoupledPairs()
    timesteps = _play(env, mistakes)
    last = timesteps[-1]
    assert not any(bool(ts.done) for ts in timesteps[:-1])
    assert bool(last.won) == won
    assert bool(last.terminated) and not bool(last.truncated)
    assert int(last.episode_length) == 8
    assert float(last.episode_return) == pytest.approx(8 - 0.25 * len(mistakes))


def test_cues_are_redrawn_every_step_unless_asked_not_to() -> None:
    """By default the cues change within an episode (each step is a fresh round); with
    ``resample_cues=False`` they stay for the whole episode and change at the reset."""
    for resample in (True, False):
        env = CoupledPairs(resample_cues=resample)
        step = jax.jit(env.step)
        state, _ = env.reset(jax.random.PRNGKey(3))
        cues = [np.asarray(state.cue)]
        for t in range(2 * env.spec.episode_limit):
            state, _ = step(jax.random.PRNGKey(t), state, jnp.zeros(6, jnp.int32))
            cues.append(np.asarray(state.cue))
        within = [not np.array_equal(cues[t], cues[t + 1]) for t in range(7)]
        assert any(within) == resample
        assert not np.array_equal(cues[0], cues[8])  # a new episode draws new cues


# --- the scorer ---------------------------------------------------------------------------------


TRUTH = _graph(6, [(0, 1), (2, 3)])


def test_the_most_frequent_layering_is_the_greedy_dag() -> None:
    """The greedy DAG is the most frequent sampled layering (ties: the smallest), not a
    per-edge majority: here no pair is kept in most samples, yet [0, 1, 0] wins."""
    batches = np.array([[0, 1, 0], [0, 1, 0], [1, 0, 0], [0, 0, 1], [0, 0, 0]])
    layering_, share = history.most_frequent_layering(batches)
    np.testing.assert_array_equal(layering_, [0, 1, 0])
    assert share == pytest.approx(0.4)
    tie, half = history.most_frequent_layering(np.array([[1, 0], [0, 1]]))
    np.testing.assert_array_equal(tie, [0, 1])
    assert half == 0.5


def test_dependency_stats_and_score() -> None:
    """Two states: the greedy layering splits (0, 1) at one state and (2, 3) at both; the keep
    rates are averaged over states and samples; the score means them over true and other
    pairs."""
    batches = np.zeros((2, 3, 6), int)
    batches[0, :2] = [1, 0, 1, 0, 0, 0]  # 2 of 3 samples: splits (0, 1) and (2, 3)
    batches[1, :] = [0, 0, 1, 0, 0, 0]  # every sample: splits (2, 3), not (0, 1)
    keep = np.zeros((2, 3, 6, 6), bool)
    keep[:, :, 0, 1] = keep[:, :, 1, 0] = True  # (0, 1) kept everywhere
    keep[0, 0, 4, 5] = keep[0, 0, 5, 4] = True  # (4, 5) in one sample of six
    stats = history.dependency_stats(batches, keep)
    separated, kept = np.asarray(stats["separated"]), np.asarray(stats["kept"])
    assert separated[0, 1] == 0.5 and separated[2, 3] == 1.0
    assert kept[0, 1] == 1.0 and kept[4, 5] == pytest.approx(1 / 6, abs=1e-4)
    assert stats["batches"] == 2.0
    scores = recovery.score(stats, TRUTH)
    assert scores["true_separated"] == 0.75
    assert scores["true_kept"] == 0.5
    assert scores["other_kept"] == pytest.approx(1 / 6 / 13, abs=1e-4)
    others = np.triu(~TRUTH, k=1)
    assert scores["other_separated"] == pytest.approx(separated[others].mean())
    with pytest.raises(ConfigError, match="symmetric"):
        recovery.score(stats, np.triu(TRUTH))
    nothing = recovery.score(stats, np.zeros((6, 6), bool))
    assert nothing["true_separated"] is None and nothing["true_kept"] is None


# --- the session's tiny trained run (conftest.B2MAPO_RUN: B2MAPO on probe:coupled) -------------


def test_recorded_dags_are_the_sampled_ones(b2mapo_run: Path) -> None:
    """The last record's drawing fields are seed 0's DAGs sampled at the fixed state, as
    ``history.boundaries`` gives them; every evaluation scores one row per seed."""
    trainer, update, state = policy.load_learned_state(b2mapo_run)
    policies = jax.tree.map(lambda x: x[0], trainer.policies(state))
    key = jax.random.fold_in(jax.random.PRNGKey(history.PLOT_RESET_KEY), 0)
    seen = history.boundaries(trainer.round, policies, key, 1, True, history.DAG_SAMPLES)
    record = rundir.read_history(b2mapo_run)[-1]
    assert record["update"] == update
    layering_, share = history.most_frequent_layering(np.asarray(seen.batch_index[0]))
    np.testing.assert_array_equal(record["batch_index"], layering_)
    assert record["layering_share"] == pytest.approx(share)
    np.testing.assert_allclose(record["keep"], np.asarray(seen.keep[0]).mean(0), atol=1e-4)
    for b in np.asarray(seen.batch_index[0]):
        assert sorted(set(b.tolist())) == list(range(b.max() + 1)), "an empty batch"
    rows = recovery.recovery_over_training(b2mapo_run)
    assert len(rows) == len(rundir.read_history(b2mapo_run)) * trainer.cfg.seeds
    assert set(recovery.SCORES) <= set(rows[-1])
    assert rows[0]["env_steps"] == 2 * TINY["num_envs"] * TINY["rollout_len"]


def test_recovery_refuses_a_run_without_history(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no DAG history"):
        recovery.recovery_over_training(tmp_path)


@pytest.mark.slow
def test_no_structure_is_invented_without_coupling(tmp_path: Path) -> None:
    """The null check: on probe:uncoupled (no pair pays) with batch_cost 0.05, after 200k env
    steps (seed 0, the b2mapo preset) the greedy layerings have K <= 1.2 on average and no
    pair is split more often than chance (the mean over all pairs, + 0.1 for the 16 states)."""
    cfg = resolve(
        {
            "env": "probe:uncoupled",
            "algo": "b2mapo",
            "batch_cost": 0.05,
            "total_steps": 200_000,
            "eval_every": 10,
            "out": str(tmp_path / "run"),
        }
    )
    train(cfg)
    stats = rundir.read_history(Path(cfg.run_dir))[-1]["seeds"][0]
    separated = np.asarray(stats["separated"])[np.triu_indices(6, k=1)]
    assert stats["batches"] <= 1.2, stats
    assert separated.max() <= separated.mean() + 0.1, stats
