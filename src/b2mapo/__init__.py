"""b2mapo: batch-by-batch multi-agent policy optimisation and its baselines, in JAX."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["load_policy"]


def __getattr__(name: str) -> Any:
    """``b2mapo.load_policy`` without importing JAX on ``import b2mapo`` (the CLI must set
    XLA's log level before JAX loads)."""
    if name == "load_policy":
        from b2mapo.policy import load_policy

        return load_policy
    raise AttributeError(f"module 'b2mapo' has no attribute {name!r}")
