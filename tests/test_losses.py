"""Return estimators and losses against plain-Python references."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from b2mapo.losses import (
    ValueNorm,
    categorical_entropy,
    categorical_log_prob,
    clipped_surrogate,
    clipped_value_loss,
    gae,
    normalise,
)


def reference_gae(rewards, values, next_values, terminated, done, gamma, lam):
    """GAE written as the textbook backward loop over one trajectory."""
    advantages = np.zeros_like(rewards)
    running = 0.0
    for t in reversed(range(len(rewards))):
        delta = rewards[t] + gamma * (1 - terminated[t]) * next_values[t] - values[t]
        running = delta + gamma * lam * (1 - done[t]) * running
        advantages[t] = running
    return advantages


@settings(deadline=None, max_examples=25)
@given(
    length=st.integers(1, 40),
    seed=st.integers(0, 2**16),
    gamma=st.floats(0.5, 1.0),
    lam=st.floats(0.0, 1.0),
)
def test_gae_matches_python_loop(length: int, seed: int, gamma: float, lam: float) -> None:
    """GAE equals the plain loop, with terminations cutting bootstraps and truncations not."""
    rng = np.random.default_rng(seed)
    rewards, values, next_values = rng.normal(size=(3, length)).astype(np.float32)
    terminated = (rng.random(length) < 0.1).astype(np.float32)
    truncated = ((rng.random(length) < 0.1) & (terminated == 0)).astype(np.float32)
    done = np.maximum(terminated, truncated)
    expected = reference_gae(rewards, values, next_values, terminated, done, gamma, lam)
    got = gae(rewards, values, next_values, terminated, done, gamma, lam)
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-4, atol=1e-4)


def test_gae_broadcasts_over_agents() -> None:
    """A trailing agent axis is handled per agent, as if each agent were its own trajectory."""
    rng = np.random.default_rng(0)
    values = rng.normal(size=(20, 3)).astype(np.float32)
    next_values = rng.normal(size=(20, 3)).astype(np.float32)
    rewards = rng.normal(size=(20, 1)).astype(np.float32)
    done = (rng.random((20, 1)) < 0.2).astype(np.float32)
    got = np.asarray(gae(rewards, values, next_values, done, done, 0.99, 0.95))
    for agent in range(3):
        expected = reference_gae(
            rewards[:, 0],
            values[:, agent],
            next_values[:, agent],
            done[:, 0],
            done[:, 0],
            0.99,
            0.95,
        )
        np.testing.assert_allclose(got[:, agent], expected, rtol=1e-4, atol=1e-5)


def test_clipped_surrogate_is_pessimistic() -> None:
    """The surrogate never exceeds the unclipped objective and is flat outside the clip range."""
    ratios = np.linspace(0.5, 1.5, 11, dtype=np.float32)
    for advantage in (1.0, -1.0):
        surrogate = np.asarray(clipped_surrogate(ratios, np.float32(advantage), 0.2))
        assert np.all(surrogate <= ratios * advantage + 1e-6)
    positive = np.asarray(clipped_surrogate(ratios, np.float32(1.0), 0.2))
    assert np.allclose(positive[ratios >= 1.2], 1.2)


def test_clipped_value_loss_takes_the_larger_error() -> None:
    """Value clipping keeps the larger of the clipped and unclipped errors."""
    loss = clipped_value_loss(np.float32(2.0), np.float32(0.0), np.float32(1.0), 0.2, 10.0)
    # Unclipped error 1 -> 0.5; clipped prediction 0.2 gives error 0.8 -> 0.32.
    assert float(loss) == pytest.approx(0.5)
    loss = clipped_value_loss(np.float32(0.9), np.float32(0.0), np.float32(1.0), 0.2, 10.0)
    assert float(loss) == pytest.approx(0.5 * 0.8**2)


def test_masked_categorical_ignores_unavailable_actions() -> None:
    """Masked logits give zero probability to masked actions and the right entropy."""
    logits = np.array([[0.0, 0.0, -1e9, 0.0]], dtype=np.float32)
    assert float(categorical_entropy(logits)[0]) == pytest.approx(np.log(3), rel=1e-5)
    log_prob = categorical_log_prob(logits, np.array([1]))
    assert float(log_prob[0]) == pytest.approx(-np.log(3), rel=1e-5)


def test_value_norm_tracks_statistics_and_round_trips() -> None:
    """ValueNorm learns a batch's mean/std (debiased) and denormalise inverts normalise."""
    rng = np.random.default_rng(1)
    x = (rng.normal(size=1000) * 5.0 + 3.0).astype(np.float32)
    norm = ValueNorm.create().update(x, np.ones_like(x, bool), beta=0.99999)
    normalised = np.asarray(norm.normalise(x))
    assert abs(normalised.mean()) < 1e-2
    assert abs(normalised.std() - 1.0) < 1e-2
    np.testing.assert_allclose(np.asarray(norm.denormalise(normalised)), x, rtol=1e-4, atol=1e-3)
    identity = ValueNorm.identity()
    np.testing.assert_allclose(np.asarray(identity.normalise(x)), x)


def test_normalise_uses_only_masked_entries() -> None:
    """Advantage normalisation ignores samples outside the mask."""
    x = np.array([1.0, 3.0, 1000.0], dtype=np.float32)
    mask = np.array([True, True, False])
    np.testing.assert_allclose(np.asarray(normalise(x, mask))[:2], [-1.0, 1.0], atol=1e-5)
