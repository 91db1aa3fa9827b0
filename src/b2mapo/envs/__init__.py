"""Environment boundary: the contract (``core``), its jaxmarl adapters, users' own JAX
environments (``user``), environments stepped on the host (``host``) and the registry.

Names are imported on first use, so that a host environment's worker process, which
imports ``b2mapo.envs.host``, loads neither JAX nor jaxmarl.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Env": "core",
    "EnvSpec": "core",
    "TimeStep": "core",
    "REGISTRY": "registry",
    "UnknownEnvError": "registry",
    "make_env": "registry",
    "register": "registry",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'b2mapo.envs' has no attribute {name!r}")
    return getattr(importlib.import_module(f"b2mapo.envs.{_EXPORTS[name]}"), name)
