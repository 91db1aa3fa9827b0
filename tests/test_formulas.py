"""Formulas of the update that a one-line change would break silently, each checked against
its closed form on a few numbers (the masked reference imports some of these functions, so
it cannot catch a change in them)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from b2mapo.config import resolve
from b2mapo.engine import surrogate_objective
from b2mapo.learner import EngineSettings
from b2mapo.networks import preceding_actions


def settings_of(algo: str) -> EngineSettings:
    return EngineSettings.of(resolve({"algo": algo, "clip_eps": 0.2}))


@pytest.mark.parametrize(
    ("ratio", "preceding", "expected"),
    [
        # The earlier agents' factor clipped to 1 ± ε/2 = [0.9, 1.1], not 1 ± ε: 1 x 1.1.
        (1.0, 1.5, 1.1),
        # ... and inside the clip: (1.15 x 1.1 = 1.265) clipped to 1.2, not 1.1 x 1.15.
        (1.15, 1.1, 1.2),
        (0.7, 0.5, 0.63),  # 0.7 x 0.9 (the floor 1 - ε/2): the min keeps 0.63, not 0.8
    ],
)
def test_a2po_and_b2mapo_clip_the_earlier_factor_inside_the_clip(
    ratio: float, preceding: float, expected: float
) -> None:
    """eq. 12: ``min(r g A, clip(r g, 1 ± ε) A)`` with ``g = clip(ρ, 1 ± ε/2)``, A = 1."""
    got = surrogate_objective(
        jnp.log(jnp.float32(ratio)), jnp.float32(1.0), jnp.float32(preceding), settings_of("a2po")
    )
    assert float(got) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize(
    ("ratio", "factor", "advantage", "expected"),
    [
        (1.15, 1.5, 1.0, 1.5 * 1.15),  # M outside the clip and unclipped: not clip(1.725)
        (1.3, 1.5, 1.0, 1.5 * 1.2),
        (1.3, 0.5, -1.0, 0.5 * -1.3),
    ],
)
def test_happo_multiplies_the_clipped_objective_by_the_unclipped_factor(
    ratio: float, factor: float, advantage: float, expected: float
) -> None:
    """HAPPO: ``M · min(r A, clip(r, 1 ± ε) A)`` with the earlier agents' ratio product M."""
    got = surrogate_objective(
        jnp.log(jnp.float32(ratio)),
        jnp.float32(advantage),
        jnp.float32(factor),
        settings_of("happo"),
    )
    assert float(got) == pytest.approx(expected, abs=1e-6)


def test_mappo_ignores_the_earlier_factor() -> None:
    got = surrogate_objective(
        jnp.log(jnp.float32(1.3)), jnp.float32(1.0), jnp.float32(5.0), settings_of("mappo")
    )
    assert float(got) == pytest.approx(1.2, abs=1e-6)


def test_an_agent_sees_exactly_the_actions_of_earlier_batches() -> None:
    """Agent i sees agent j's action where j's batch is earlier than i's, ``A`` (nothing)
    elsewhere: its own, same-batch and later agents' actions stay hidden."""
    actions = jnp.array([3, 1, 4, 2])
    batch_index = jnp.array([0, 1, 1, 2])
    seen = np.asarray(preceding_actions(actions, batch_index, num_actions=5))
    expected = np.array(
        [
            [5, 5, 5, 5],  # batch 0 sees nobody
            [3, 5, 5, 5],  # batch 1 sees agent 0, not its batch mate 2
            [3, 5, 5, 5],
            [3, 1, 4, 5],  # batch 2 sees everyone earlier
        ]
    )
    np.testing.assert_array_equal(seen, expected)
