"""The errors the CLI prints as one line: a bad user value (exit 2), a failed host
environment (exit 1) and an interrupted run (exit 130).

Their own module, free of heavy imports, so that code which must run before JAX starts (the
multi-process launch in ``b2mapo.parallel``) or without JAX (host workers) can raise them.
"""

from __future__ import annotations


class ConfigError(ValueError):
    """A configuration value that is unknown or inconsistent with the others."""


class HostEnvError(RuntimeError):
    """A worker process of a host environment crashed, hung or raised."""


class Interrupted(Exception):
    """Training stopped on SIGINT or SIGTERM, its last checkpoint intact."""

    def __init__(self, update: int) -> None:
        where = f"after update {update}" if update else "before its first checkpoint"
        super().__init__(f"interrupted {where}; the same command resumes")
        self.update = update
