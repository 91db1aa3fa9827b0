"""Shared fixtures: a tiny, fast training config for tests that exercise the machinery."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from b2mapo.config import TrainConfig, resolve

# Sizes small enough to compile and run a whole training run in seconds.
TINY: dict[str, Any] = {
    "env": "smax:3m",
    "num_envs": 4,
    "rollout_len": 8,
    "recurrent_chunk": 4,
    "epochs": 1,
    "minibatches": 2,
    "hidden_size": 8,
    "updates_per_chunk": 2,
    "total_steps": 4 * 8 * 4,
    "eval_every": 2,
    "eval_episodes": 2,
    "episode_limit": 20,
}


@pytest.fixture
def tiny_config(tmp_path: Path):
    """Build a validated config small enough to compile and run in seconds."""

    def make(**overrides: Any) -> TrainConfig:
        values = {**TINY, "out": str(tmp_path / "run"), **overrides}
        return resolve(values)

    return make
