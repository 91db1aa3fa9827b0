"""Atomic, pickle-free checkpoints of the runner state (flax msgpack) tied to their config."""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import serialization

from b2mapo import __version__
from b2mapo.config import ConfigError, TrainConfig, diff, from_dict, tagged_fields

CHECKPOINT_DIR = "checkpoints"
CONFIG_FILE = "config.json"
KEEP_LAST = 2
# The layout of the saved runner state. Bump it whenever a change to the state (a new field,
# another optimiser chain) makes older checkpoints unreadable, so that they are refused by name.
FORMAT = 2
_NAME = re.compile(r"^update_(\d{8})\.msgpack$")


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_config(run_dir: Path, cfg: TrainConfig) -> None:
    atomic_write(run_dir / CONFIG_FILE, json.dumps(cfg.to_dict(), indent=2).encode())


def load_config(run_dir: Path) -> TrainConfig:
    """The config a run was started with; ``ConfigError`` if the directory holds no run."""
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise ConfigError(f"{run_dir} is not a run directory (no {CONFIG_FILE})")
    return from_dict(json.loads(path.read_text()))


def check_resumable(saved: TrainConfig, requested: TrainConfig) -> None:
    """Refuse to resume a run under a config that changes what its checkpoint means."""
    changed = {
        k: v for k, v in diff(saved, requested).items() if k not in tagged_fields("resumable")
    }
    if changed:
        details = ", ".join(f"{k}: saved {a!r}, requested {b!r}" for k, (a, b) in changed.items())
        raise ConfigError(
            f"the run directory holds a checkpoint of another config ({details}); "
            "use another --out or the saved values"
        )


def checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """Saved checkpoints as (update, path), oldest first."""
    folder = Path(run_dir) / CHECKPOINT_DIR
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.match(p.name))]
    return sorted(found)


def save(run_dir: Path, update: int, state: Any) -> Path:
    """Save ``state`` as the checkpoint of ``update`` and drop all but the newest few."""
    host_state = jax.tree.map(np.asarray, jax.device_get(state))
    path = Path(run_dir) / CHECKPOINT_DIR / f"update_{update:08d}.msgpack"
    stamped = {"format": FORMAT, "b2mapo": __version__, "state": host_state}
    atomic_write(path, serialization.msgpack_serialize(serialization.to_state_dict(stamped)))
    for _, old in checkpoints(run_dir)[:-KEEP_LAST]:
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


def restore_latest(run_dir: Path, template: Any) -> tuple[int, Any] | None:
    """The newest checkpoint restored into the structure of ``template``, or None."""
    found = checkpoints(run_dir)
    if not found:
        return None
    update, path = found[-1]
    return update, restore(path, template)
