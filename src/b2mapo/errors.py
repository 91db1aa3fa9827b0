"""The error every bad user value raises: the CLI prints it as one line and exits 2.

Its own module, free of heavy imports, so that code which must run before JAX starts (the
multi-process launch in ``b2mapo.parallel``) can raise it.
"""

from __future__ import annotations


class ConfigError(ValueError):
    """A configuration value that is unknown or inconsistent with the others."""
