"""Environment boundary: the contract (``core``), its jaxmarl adapters and the registry."""

from b2mapo.envs import _jaxmarl  # noqa: F401  (before the adapters import jaxmarl)
from b2mapo.envs.core import Env, EnvSpec, TimeStep
from b2mapo.envs.registry import REGISTRY, UnknownEnvError, make_env

__all__ = ["REGISTRY", "Env", "EnvSpec", "TimeStep", "UnknownEnvError", "make_env"]
