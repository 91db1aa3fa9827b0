"""The final evaluation's numbers: Wilson intervals from the episode count, and a summary
that shows a spread over seeds only when there are several seeds."""

from __future__ import annotations

import numpy as np
import pytest

from b2mapo.evaluation import evaluate, wilson_interval
from b2mapo.summary import format_result
from b2mapo.train import Trainer


@pytest.mark.parametrize(
    ("wins", "episodes", "low", "high"),
    [
        (8, 10, 0.4902, 0.9433),
        (0, 10, 0.0, 0.2775),
        (10, 10, 0.7225, 1.0),
        (50, 100, 0.4038, 0.5962),
    ],
)
def test_wilson_interval_matches_its_closed_form(
    wins: int, episodes: int, low: float, high: float
) -> None:
    """Published 95% Wilson intervals (e.g. 8 of 10: 0.490-0.943), inside [0, 1] at the ends."""
    got = wilson_interval(wins, episodes)
    np.testing.assert_allclose(got, (low, high), atol=1e-4)


def test_default_final_evaluation_is_within_five_points() -> None:
    """400 episodes, the default final evaluation, give at most about ±0.05 at any win rate."""
    for wins in range(0, 401, 20):
        low, high = wilson_interval(wins, 400)
        assert (high - low) / 2 <= 0.0505, (wins, low, high)


def test_one_seed_has_its_episodes_interval_and_several_seeds_an_interval_over_seeds() -> None:
    """One seed: the Wilson interval of its 32 episodes. Two seeds: the t-interval of the
    mean over the seeds (12.71 x sd / sqrt(2)), clipped to [0, 1] for win rates, not a
    Wilson interval that treats 64 episodes of two seeds as independent."""
    one = format_result("win_rate", np.array([0.75]), 32)
    assert "±" not in one and "seeds" not in one
    low, high = wilson_interval(24, 32)
    assert one == f"0.750 (95% Wilson CI {low:.3f}-{high:.3f} over 32 episodes)"
    several = format_result("win_rate", np.array([0.5, 0.75]), 32)
    assert several == "0.625 ± 0.125 sd over 2 seeds (95% CI over the seeds 0.000-1.000)"
    close = format_result("episode_return", np.array([1.0, 1.1, 1.2]), 32)
    half = 4.3027 * 0.1 / np.sqrt(3)
    interval = f"(95% CI over the seeds {1.1 - half:.3f}-{1.1 + half:.3f})"
    assert close == f"1.100 ± 0.082 sd over 3 seeds {interval}"
    returns = format_result("episode_return", np.array([1.5]), 32)
    assert returns == "1.500"


def test_no_episodes_is_an_error() -> None:
    with pytest.raises(ValueError, match="episodes=0"):
        wilson_interval(0, 0)


def test_longer_evaluations_and_both_modes_share_one_compiled_program(tiny_config) -> None:
    """Greedy and sampled, and a final evaluation longer than ``eval_episodes``, all run the
    same compiled evaluation: a default run compiles it once, not four times. Means pool the
    episodes of every call."""
    trainer = Trainer(tiny_config(seeds=2, eval_episodes=2))
    state = trainer.init()
    greedy, sampled = evaluate(trainer, state, episodes=5)
    assert trainer.evaluate._cache_size() == 1
    for result in (greedy, sampled):
        assert result["win_rate"].shape == (2,)
        # Each seed's mean is over 5 episodes (a multiple of 1/5) and a valid rate.
        assert np.all((result["win_rate"] >= 0) & (result["win_rate"] <= 1))
        np.testing.assert_allclose(result["win_rate"] * 5, np.round(result["win_rate"] * 5))
        assert np.all(result["episode_length"] > 0)
