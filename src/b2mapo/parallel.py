"""Where a run's arrays live: seeds and environments spread over the devices of one process
or of several (``jax.distributed``), on a two-axis device mesh ``("seed", "env")``.

Training is one jitted program over global arrays: the runner state is placed with its seed
axis on the mesh's ``seed`` axis and, for the per-environment parts (env states,
observations, recurrent states), its environment axis on the ``env`` axis; parameters and
optimiser states are replicated over ``env``. XLA's SPMD partitioner then runs each device's
environments locally and inserts the cross-device sums the update needs (gradients, advantage
statistics, minibatch gathers), so the program computes the same algorithm with the same
total batch as on one device, up to the order of float sums.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from b2mapo.errors import ConfigError

_T = TypeVar("_T")

PER_SEED = PartitionSpec("seed")
PER_ENV = PartitionSpec("seed", "env")

# Launch variables of a multi-process run (one process per host, or per GPU).
COORDINATOR_VARIABLE = "B2MAPO_COORDINATOR"
NUM_PROCESSES_VARIABLE = "B2MAPO_NUM_PROCESSES"
PROCESS_ID_VARIABLE = "B2MAPO_PROCESS_ID"


def initialise_processes(
    coordinator: str = "", num_processes: int = 0, process_id: int = -1
) -> None:
    """Join a multi-process run through ``jax.distributed`` when one is described, by the
    arguments or else by ``B2MAPO_COORDINATOR``, ``B2MAPO_NUM_PROCESSES`` and
    ``B2MAPO_PROCESS_ID``; a single-process run (nothing given) does nothing.

    Must run before anything touches a JAX device.
    """
    coordinator = coordinator or os.environ.get(COORDINATOR_VARIABLE, "")
    num_processes = num_processes or int(os.environ.get(NUM_PROCESSES_VARIABLE, "0") or 0)
    if process_id < 0:
        process_id = int(os.environ.get(PROCESS_ID_VARIABLE, "-1") or -1)
    if not coordinator and num_processes <= 1:
        return
    if not coordinator or num_processes < 2 or not 0 <= process_id < num_processes:
        raise ConfigError(
            f"a multi-process run needs a coordinator address (HOST:PORT), a number of "
            f"processes >= 2 and a process id in [0, number of processes); got coordinator "
            f"{coordinator!r}, num_processes {num_processes}, process_id {process_id}"
        )
    jax.distributed.initialize(coordinator, num_processes=num_processes, process_id=process_id)


def is_writer() -> bool:
    """Whether this process writes the run directory (metrics, checkpoints, summary)."""
    return jax.process_index() == 0


@dataclass(frozen=True)
class Layout:
    """A device mesh of ``seed_devices × env_devices`` and how a runner state lies on it."""

    mesh: Mesh
    own_per_env: Callable[[Any, NamedSharding], Any] | None = None
    """Gives the per-environment parts of a round's own state (``RunnerState.own``, here
    a tree of per-seed shardings) the per-environment sharding (``rounds.Round.own_per_env``)."""

    @property
    def seed_devices(self) -> int:
        return self.mesh.shape["seed"]

    @property
    def env_devices(self) -> int:
        return self.mesh.shape["env"]

    @property
    def num_devices(self) -> int:
        return self.mesh.size

    @property
    def trivial(self) -> bool:
        """One device in one process: arrays stay where JAX puts them, nothing to pin."""
        return self.mesh.size == 1 and jax.process_count() == 1

    @property
    def replicated(self) -> NamedSharding:
        return NamedSharding(self.mesh, PartitionSpec())

    def state_shardings(self, state: _T) -> _T:
        """A sharding per leaf of a runner state (leading seed axis): per-environment parts
        split over both mesh axes, everything else over seeds only."""
        per_seed = NamedSharding(self.mesh, PER_SEED)
        per_env = NamedSharding(self.mesh, PER_ENV)
        shardings = jax.tree.map(lambda _: per_seed, state)
        loop = jax.tree.map(lambda _: per_env, state.loop)
        own = jax.tree.map(lambda _: per_seed, state.own)
        if self.own_per_env is not None:
            own = self.own_per_env(own, per_env)
        return shardings._replace(loop=loop, own=own)

    def place(self, state: _T) -> _T:
        """``state`` (host or device arrays, the same values in every process) as global
        arrays laid out on the mesh."""
        if self.trivial:
            return state
        host = jax.device_get(state)
        return jax.tree.map(jax.device_put, host, self.state_shardings(state))

    def pin(self, state: _T, metrics: Any = None) -> tuple[_T, Any]:
        """Inside a jitted program: keep ``state`` on its layout and make ``metrics``
        replicated, so that the chunk's outputs have the shardings its inputs had and every
        process can read the metrics."""
        if self.trivial:
            return state, metrics
        state = jax.lax.with_sharding_constraint(state, self.state_shardings(state))
        if metrics is not None:
            metrics = jax.lax.with_sharding_constraint(metrics, self.replicated)
        return state, metrics

    def to_host(self, tree: _T) -> _T:
        """Every value of ``tree`` as numpy arrays in this process; global arrays that other
        processes hold parts of are gathered (a collective: every process must call it)."""
        leaves, treedef = jax.tree.flatten(tree)
        remote = {
            i
            for i, x in enumerate(leaves)
            if isinstance(x, jax.Array) and not x.is_fully_addressable
        }
        host = [
            None if i in remote else np.asarray(jax.device_get(x)) for i, x in enumerate(leaves)
        ]
        if remote:
            order = sorted(remote)
            gathered = multihost_utils.process_allgather([leaves[i] for i in order], tiled=True)
            for i, value in zip(order, gathered, strict=True):
                host[i] = np.asarray(value)
        return jax.tree.unflatten(treedef, host)

    def local(self, tree: _T) -> _T:
        """``tree`` in a form this process can compute on alone (a full host copy when other
        processes hold parts of it): for evaluation, which every process runs by itself."""
        return tree if jax.process_count() == 1 else self.to_host(tree)

    def describe(self) -> str:
        processes = jax.process_count()
        text = (
            f"{self.num_devices} device(s): seeds over {self.seed_devices}, each seed's envs "
            f"over {self.env_devices}"
        )
        return text + (f" in {processes} processes" if processes > 1 else "")


def make_layout(
    devices: int | str,
    seeds: int,
    num_envs: int,
    own_per_env: Callable[[Any, NamedSharding], Any] | None = None,
) -> Layout:
    """The mesh for ``devices`` devices ("all": all there are, across every process): seeds
    go on as many devices as divide them (no communication between seeds), and each seed's
    environments are split over the rest. ``ConfigError`` if the numbers do not fit."""
    available = jax.devices()
    count = len(available) if devices == "all" else int(devices)
    if not 1 <= count <= len(available):
        raise ConfigError(
            f"devices={devices}: this run sees {len(available)} device(s); use all or "
            f"a number from 1 to {len(available)}"
        )
    if jax.process_count() > 1 and count != len(available):
        raise ConfigError(
            f"devices={devices}: a multi-process run uses every device of every process "
            f"({len(available)}); use all"
        )
    seed_devices = math.gcd(seeds, count)
    env_devices = count // seed_devices
    if num_envs % env_devices:
        raise ConfigError(
            f"num_envs={num_envs} cannot be split over {env_devices} device(s) per seed "
            f"({count} devices, {seeds} seed(s)): use a multiple of {env_devices} or fewer devices"
        )
    grid = np.array(available[:count]).reshape(seed_devices, env_devices)
    return Layout(Mesh(grid, ("seed", "env")), own_per_env)
