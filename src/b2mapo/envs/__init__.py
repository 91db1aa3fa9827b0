"""Environment boundary: the contract (``core``), its jaxmarl adapters, users' own JAX
environments (``user``) and the registry."""

from b2mapo.envs import _jaxmarl  # noqa: F401  (before the adapters import jaxmarl)
from b2mapo.envs.core import Env, EnvSpec, TimeStep
from b2mapo.envs.registry import REGISTRY, UnknownEnvError, make_env, register

__all__ = ["REGISTRY", "Env", "EnvSpec", "TimeStep", "UnknownEnvError", "make_env", "register"]
