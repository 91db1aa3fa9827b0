"""probe:coupled (a team with planted pairwise dependencies) and the scorer of a learned DAG
against it (``b2mapo.reproduce.recovery``), down to a tiny trained B2MAPO run."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from b2mapo import dag_plots, rundir
from b2mapo.envs import make_env
from b2mapo.envs.coupled import CoupledPairs
from b2mapo.errors import ConfigError
from b2mapo.reproduce import recovery
from b2mapo.upper.dag import edges, layering
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


def test_perfect_recovery() -> None:
    score = recovery.score_dependencies(TRUTH.copy(), TRUTH)
    assert score["precision"] == 1.0 and score["recall"] == 1.0 and score["f1"] == 1.0
    assert (score["true_positives"], score["false_positives"], score["false_negatives"]) == (
        2,
        0,
        0,
    )
    assert score["pairs"] == 15
    assert recovery.format_score(score).startswith("precision 1.00 (2/2")


def test_one_spurious_and_one_missing_pair() -> None:
    spurious = recovery.score_dependencies(_graph(6, [(0, 1), (2, 3), (4, 5)]), TRUTH)
    assert spurious["precision"] == pytest.approx(2 / 3) and spurious["recall"] == 1.0
    assert spurious["spurious"] == [(4, 5)] and spurious["missing"] == []
    missing = recovery.score_dependencies(_graph(6, [(3, 2)]).astype(int), TRUTH)  # 0/1 ok
    assert missing["precision"] == 1.0 and missing["recall"] == 0.5
    assert missing["missing"] == [(0, 1)] and missing["kept_pairs"] == 1
    assert missing["f1"] == pytest.approx(2 / 3)
    assert "missing [(0, 1)]" in recovery.format_score(missing)


def test_empty_graphs() -> None:
    """Nothing kept: precision is 0/0 (NaN, said in words), recall 0; nothing to find:
    recall NaN."""
    empty = np.zeros((6, 6), bool)
    score = recovery.score_dependencies(empty, TRUTH)
    assert math.isnan(score["precision"]) and score["recall"] == 0.0
    assert math.isnan(score["f1"]) and score["kept_pairs"] == 0
    text = recovery.format_score(score)
    assert "precision undefined (no pair kept)" in text and "recall 0.00 (0/2" in text
    nothing_true = recovery.score_dependencies(TRUTH, empty)
    assert math.isnan(nothing_true["recall"]) and nothing_true["precision"] == 0.0
    assert "recall undefined" in recovery.format_score(nothing_true)


@pytest.mark.parametrize(
    ("kept", "truth", "message"),
    [
        (np.triu(TRUTH), TRUTH, r"kept must be symmetric.*\[0, 1\]"),
        (TRUTH, np.tril(TRUTH), "truth must be symmetric"),
        (TRUTH[:5], TRUTH, "square"),
        (TRUTH[:5, :5], TRUTH, "not the same agents"),
        (np.eye(6, dtype=bool), TRUTH, "diagonal"),
        (TRUTH * 0.5, TRUTH, "boolean"),
    ],
)
def test_bad_graphs_are_refused(kept: np.ndarray, truth: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        recovery.score_dependencies(kept, truth)


# --- the session's tiny trained run (conftest.B2MAPO_RUN: B2MAPO on probe:coupled) -------------


def test_learned_dependencies_of_a_tiny_run(b2mapo_run: Path) -> None:
    """The vmapped probe agrees with ``dag_plots.generator_at`` called state by state (a reset
    with the probe's key, after ``s % 2`` periods of 4 steps), for the kept pairs and for the
    agents its batches separate; the thresholds select from the frequencies: everything off
    the diagonal below 0, nothing at 1."""
    states = 5
    frequency = recovery.keep_frequency(b2mapo_run, states=states)
    assert frequency.shape == (6, 6)
    np.testing.assert_array_equal(frequency, frequency.T)
    assert np.all(np.diag(frequency) == 0) and frequency.min() >= 0 and frequency.max() <= 1
    assert frequency.max() > 0, "no DAG kept a pair: the checks below test nothing"

    trainer, _, state = dag_plots.load_checkpoint(b2mapo_run)
    policies = jax.tree.map(lambda x: x[0], trainer.policies(state))
    keys = jax.random.split(jax.random.PRNGKey(recovery.RECOVERY_KEY), states)
    kept, apart = [], []
    generator_at = jax.jit(
        lambda p, k, periods: dag_plots.generator_at(trainer.round, p, k, periods, True)[1],
        static_argnums=2,
    )
    for s in range(states):
        action = generator_at(policies, keys[s], s % 2)
        batch = np.asarray(layering(edges(action)))
        kept.append(np.asarray(action.keep))
        apart.append(batch[:, None] != batch[None, :])
    np.testing.assert_allclose(frequency, np.mean(kept, axis=0))
    separation = recovery.separation_frequency(b2mapo_run, states=states)
    np.testing.assert_allclose(separation, np.mean(apart, axis=0))
    assert np.all(separation >= frequency)  # a kept pair is always split (two batches at most)

    learned = recovery.learned_dependencies(b2mapo_run, states=states, threshold=-1.0)
    np.testing.assert_array_equal(learned, ~np.eye(6, dtype=bool))  # every pair is above -1
    assert learned.dtype == bool


def test_recovery_over_training(b2mapo_run: Path) -> None:
    """One row per kept checkpoint, each the score of that checkpoint's learned pairs; a run
    of an environment without a planted graph needs ``truth``."""
    saved = [update for update, _ in rundir.checkpoints(b2mapo_run)]
    assert saved == [2, 4]
    rows = recovery.recovery_over_training(b2mapo_run, states=4)
    assert [row["update"] for row in rows] == saved
    assert rows[0]["env_steps"] == 2 * TINY["num_envs"] * TINY["rollout_len"]
    row = rows[-1]  # the newest checkpoint, scored directly (each probe call compiles)
    learned = recovery.learned_dependencies(b2mapo_run, row["update"], states=4)
    expected = recovery.score_dependencies(learned, TRUTH)
    np.testing.assert_equal({k: row[k] for k in expected}, expected)  # NaN equals NaN
    separation = recovery.separation_frequency(b2mapo_run, row["update"], states=4)
    upper = np.triu(np.ones((6, 6), bool), k=1)
    assert row["separated_true"] == pytest.approx(separation[TRUTH & upper].mean())
    assert row["separated_other"] == pytest.approx(separation[~TRUTH & upper].mean())
    empty = recovery.recovery_over_training([b2mapo_run], states=4, truth=np.zeros((6, 6)))
    assert all(row["true_pairs"] == 0 and math.isnan(row["separated_true"]) for row in empty)


def test_learned_dependencies_refuses_a_run_without_a_dag(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a run directory"):
        recovery.learned_dependencies(tmp_path)
