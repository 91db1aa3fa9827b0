"""The static description of an environment, free of JAX so that host workers can use it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EnvSpec:
    """Static shapes and limits of an environment, known before it runs."""

    name: str
    num_agents: int
    obs_dim: int
    state_dim: int
    num_actions: int
    episode_limit: int
