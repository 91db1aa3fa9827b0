"""Training chunks kept as exported programs beside JAX's compilation cache.

JAX's persistent cache skips XLA's compilation of a rerun, but not the tracing and lowering
of the chunk that come before it (4 s for MAPPO on 3m, more for B2MAPO). An exported chunk
(``jax.export``, StableHLO in a flatbuffer, no pickle) skips those too: a rerun of the same
config loads it and only looks the compiled program up. The key covers everything the
program depends on: the config's traced fields, the state's shapes, dtypes and shardings,
b2mapo's own source, and the versions of the libraries traced into it.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import hashlib
import importlib.metadata
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

from b2mapo.config import tagged_fields
from b2mapo.envs.registry import BUILT_IN
from b2mapo.rundir import atomic_write
from b2mapo.state import RunnerState
from b2mapo.train import Trainer, compiler_options

EXPORT_DIR = "b2mapo-exported"
"""Subdirectory of ``jax_compilation_cache_dir`` that holds the exported chunks."""

TRACED_LIBRARIES = ("jax", "jaxlib", "jaxmarl", "flax", "optax")

Chunk = Callable[[RunnerState], tuple[RunnerState, dict[str, jax.Array]]]


@functools.cache
def _source_digest() -> str:
    """Digest of b2mapo's Python source: an edited checkout never reuses a stale program."""
    digest = hashlib.sha256()
    for path in sorted(Path(__file__).parent.rglob("*.py")):
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()


def program_key(trainer: Trainer, leaves: list[jax.Array], treedef: Any) -> str:
    """Name of the exported chunk of ``trainer`` for a state with these leaves."""
    config = {k: v for k, v in trainer.cfg.to_dict().items() if k not in tagged_fields("host_only")}
    parts = {
        "config": config,
        "source": _source_digest(),
        "libraries": {name: importlib.metadata.version(name) for name in TRACED_LIBRARIES},
        "backend": jax.default_backend(),
        "devices": jax.device_count(),
        "treedef": str(treedef),
        "leaves": [f"{x.shape}{x.dtype}{getattr(x, 'sharding', None)}" for x in leaves],
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]


def _export(trainer: Trainer, leaves: list[jax.Array], treedef: Any) -> jax.export.Exported:
    """Trace and export the chunk as a function of the state's leaves; it returns the new
    state's leaves (same structure) and the metrics dict, which export can serialise."""

    def flat_chunk(*state_leaves: jax.Array) -> tuple[list[jax.Array], dict[str, jax.Array]]:
        state, metrics = trainer.unjitted_chunk(jax.tree.unflatten(treedef, state_leaves))
        return jax.tree.leaves(state), metrics

    avals = [jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding) for x in leaves]
    return jax.export.export(jax.jit(flat_chunk))(*avals)


def _load(path: Path) -> jax.export.Exported | None:
    """The exported chunk at ``path``, or None if there is none or it does not load."""
    try:
        return jax.export.deserialize(bytearray(path.read_bytes()))
    except Exception:  # missing, truncated or foreign: a cache miss, rewritten by the caller
        return None


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off for the block: tracing a chunk creates hundreds of
    thousands of objects and spent a fifth of its time in full collections that free
    nothing (B2MAPO on 3m: 0.8 of 3.9 s)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def compile_chunk(trainer: Trainer, state: RunnerState) -> Chunk:
    """``trainer.chunk`` compiled for states like ``state`` (see ``_compile_chunk``), with the
    garbage collector paused while it is traced and compiled."""
    with gc_paused():
        return _compile_chunk(trainer, state)


def _compile_chunk(trainer: Trainer, state: RunnerState) -> Chunk:
    """``trainer.chunk`` compiled for states like ``state``.

    With a compilation cache directory set (the CLI sets one), the chunk is exported there
    on its first compilation and loaded on later ones. It is traced instead without a cache
    directory, for a chunk that reads the host clock (``time_updates``: callbacks cannot be
    exported), for a subclass of ``Trainer`` or a user's environment, whose program the key
    cannot describe, and in a multi-process run, whose processes would race for one file.
    """
    cache_dir = jax.config.jax_compilation_cache_dir
    # A user's environment is code outside b2mapo's source digest: its edits must not reuse
    # a stale program (JAX's own cache, keyed on the compiled program, still applies).
    traced_only = (
        trainer.cfg.time_updates or type(trainer) is not Trainer or trainer.cfg.env not in BUILT_IN
    )
    if not cache_dir or traced_only or jax.process_count() > 1:
        return trainer.chunk.lower(state).compile()
    leaves, treedef = jax.tree.flatten(jax.tree.map(jnp.asarray, state))  # restored: numpy
    path = Path(cache_dir) / EXPORT_DIR / f"{program_key(trainer, leaves, treedef)}.jaxexport"
    exported = _load(path)
    if exported is None:
        exported = _export(trainer, leaves, treedef)
        atomic_write(path, bytes(exported.serialize()))
    compiled = jax.jit(exported.call).lower(*leaves).compile(compiler_options())

    def chunk(state: RunnerState) -> tuple[RunnerState, dict[str, jax.Array]]:
        state_leaves, metrics = compiled(*jax.tree.leaves(state))
        return jax.tree.unflatten(treedef, state_leaves), metrics

    return chunk
