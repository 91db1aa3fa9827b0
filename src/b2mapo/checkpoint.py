"""Atomic, pickle-free checkpoints of the runner state (flax msgpack) tied to their config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import serialization

from b2mapo import __version__, rundir
from b2mapo.config import ConfigError, TrainConfig, diff, from_dict, tagged_fields

KEEP_LAST = 2
# The layout of the saved runner state. Bump it whenever a change to the state (a new field,
# another optimiser chain) makes older checkpoints unreadable, so that they are refused by name.
FORMAT = 3  # 3: a round's own state (B2MAPO's generator, π_ind) under RunnerState.own


def save_config(run_dir: Path, cfg: TrainConfig) -> None:
    """Write the config a run is started with, for resuming and reading it back."""
    rundir.write_config(run_dir, cfg.to_dict())


def load_config(run_dir: Path) -> TrainConfig:
    """The config a run was started with; ``ConfigError`` if the directory holds no run."""
    return from_dict(rundir.read_config(run_dir))


def check_resumable(saved: TrainConfig, requested: TrainConfig) -> None:
    """Refuse to resume a run under a config that changes what its checkpoint means."""
    changed = {
        k: v for k, v in diff(saved, requested).items() if k not in tagged_fields("resumable")
    }
    if changed:
        details = ", ".join(f"{k}: saved {a!r}, requested {b!r}" for k, (a, b) in changed.items())
        why = ""
        if "total_steps" in changed:
            anneal = (
                "its learning rates anneal over its total_steps, so " if saved.anneal_lr else ""
            )
            why = (
                f"; a run cannot be extended: {anneal}train a new run (another --out) with "
                "the whole budget"
            )
        raise ConfigError(
            f"the run directory holds a checkpoint of another config ({details}); "
            f"use another --out or the saved values{why}"
        )


def save(run_dir: Path, update: int, state: Any, clock: dict[str, float] | None = None) -> Path:
    """Save ``state`` as the checkpoint of ``update``, with the run's ``clock`` (its times so
    far, which a resumed run continues), and drop all but the newest few."""
    host_state = jax.tree.map(np.asarray, jax.device_get(state))
    path = rundir.checkpoint_path(run_dir, update)
    stamped = {"format": FORMAT, "b2mapo": __version__, "state": host_state, "clock": clock or {}}
    data = serialization.msgpack_serialize(serialization.to_state_dict(stamped))
    rundir.atomic_write(path, data)
    for _, old in rundir.checkpoints(run_dir)[:-KEEP_LAST]:
        old.unlink(missing_ok=True)
    return path


def restore(path: Path, template: Any) -> Any:
    """The checkpoint at ``path`` restored into the structure of ``template`` (arrays or
    ``jax.ShapeDtypeStruct``s); ``ConfigError`` if another checkpoint format, structure or
    shapes."""
    try:
        saved = serialization.msgpack_restore(Path(path).read_bytes())
    except ValueError:
        raise ConfigError(f"{path} is not a b2mapo checkpoint (not msgpack)") from None
    if not isinstance(saved, dict) or saved.get("format") != FORMAT:
        written_by = saved.get("b2mapo", "an older b2mapo") if isinstance(saved, dict) else "?"
        raise ConfigError(
            f"checkpoint {path} was written by b2mapo {written_by} in another checkpoint format "
            f"than this b2mapo {__version__} reads (format {FORMAT}); retrain, or resume it "
            "with the version that wrote it"
        )
    try:
        state = serialization.from_state_dict(template, saved["state"])
    except (ValueError, KeyError) as error:
        raise ConfigError(f"checkpoint {path} does not match this config: {error}") from None
    shapes_match = jax.tree.all(
        jax.tree.map(lambda a, b: np.shape(a) == np.shape(b), state, template)
    )
    if not shapes_match:
        raise ConfigError(f"checkpoint {path} holds arrays of other shapes than this config's")
    return state


def saved_clock(path: Path) -> dict[str, float]:
    """The clock a checkpoint was saved with (none for one saved without)."""
    saved = serialization.msgpack_restore(Path(path).read_bytes())
    return {k: float(v) for k, v in saved.get("clock", {}).items()}


def restore_latest(run_dir: Path, template: Any) -> tuple[int, Any] | None:
    """The newest checkpoint restored into the structure of ``template``, or None."""
    found = rundir.checkpoints(run_dir)
    if not found:
        return None
    update, path = found[-1]
    return update, restore(path, template)
