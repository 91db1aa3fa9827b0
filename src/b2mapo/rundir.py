"""The run directory: the name of every file ``b2mapo train`` writes there, and their readers
and writers.

It imports the standard library and ``b2mapo.errors`` only, so that views of a run
(``b2mapo curves``, ``report``) read it without importing JAX. A run directory holds:

- ``config.json``: the resolved config (``checkpoint.save_config`` / ``load_config`` turn it
  into a ``TrainConfig``);
- ``metrics.jsonl``: one JSON record per update and seed (``kind`` "train") and per
  evaluation and seed (``kind`` "eval");
- ``dag_history.jsonl``: B2MAPO's DAG at a fixed start state, one record per evaluation;
- ``checkpoints/update_XXXXXXXX.msgpack``: the newest runner states (``checkpoint``);
- ``tensorboard/``: TensorBoard's copy of the metrics, when ``tensorboardX`` is installed;
- ``summary.json``: the final evaluation, written last: a run is finished once it exists.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from b2mapo.errors import ConfigError

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
HISTORY_FILE = "dag_history.jsonl"
SUMMARY_FILE = "summary.json"
CHECKPOINT_DIR = "checkpoints"
TENSORBOARD_DIR = "tensorboard"
_CHECKPOINT_NAME = re.compile(r"^update_(\d{8})\.msgpack$")


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.fchmod(fd, 0o666 & ~umask)  # as open() would create it: mkstemp's is 0600
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, data: Any, allow_nan: bool = False) -> None:
    """Write ``data`` as indented JSON atomically; strict (no NaN, which most JSON readers
    refuse) unless ``allow_nan``."""
    atomic_write(path, json.dumps(data, indent=2, allow_nan=allow_nan).encode())


def write_config(run_dir: Path, values: dict[str, Any]) -> None:
    """Write a run's resolved config (``TrainConfig.to_dict()``)."""
    write_json(Path(run_dir) / CONFIG_FILE, values)


def find_run_dirs(paths: Iterable[Path]) -> list[Path]:
    """``paths`` with each directory that is not a run directory replaced by the run
    directories below it (sorted); one with none below stays, for its reader to refuse."""
    found: list[Path] = []
    for path in map(Path, paths):
        below = [] if (path / CONFIG_FILE).is_file() else sorted(path.rglob(CONFIG_FILE))
        found += [config.parent for config in below] or [path]
    return found


def read_config(run_dir: Path) -> dict[str, Any]:
    """A run's config as saved, unvalidated; ``ConfigError`` if the directory holds no run."""
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise ConfigError(f"{run_dir} is not a run directory (no {CONFIG_FILE})")
    return json.loads(path.read_text())


def append_records(path: Path, records: Iterable[dict[str, Any]]) -> None:
    """Append ``records`` to a JSON-lines file, one line each, as strict JSON: a float that is
    NaN or infinite (a metric over nothing) is written as null."""
    with Path(path).open("a") as f:
        for record in records:
            finite = {
                k: None if isinstance(v, float) and not math.isfinite(v) else v
                for k, v in record.items()
            }
            f.write(json.dumps(finite, allow_nan=False) + "\n")


def read_records(path: Path) -> list[dict[str, Any]]:
    """The records of a JSON-lines file in file order (none if there is no file);
    ``ConfigError`` naming the file and line of one that is not a JSON object."""
    path = Path(path)
    if not path.is_file():
        return []
    records = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            raise ConfigError(f"{path}: line {number} is not JSON") from None
        if not isinstance(record, dict):
            raise ConfigError(f"{path}: line {number} is not a JSON object")
        records.append(record)
    return records


def keep_until(path: Path, update: int) -> None:
    """Drop the records of a JSON-lines file past ``update``: those written after the
    checkpoint a run resumes from, which the resumed run writes again."""
    path = Path(path)
    if not path.exists():
        return
    kept = [
        line
        for line in path.read_text().splitlines()
        if line.strip() and json.loads(line)["update"] <= update
    ]
    atomic_write(path, "".join(line + "\n" for line in kept).encode())


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """A run's metrics records in log order (none if it has no ``metrics.jsonl``)."""
    return read_records(Path(run_dir) / METRICS_FILE)


def read_history(run_dir: Path) -> list[dict[str, Any]]:
    """A run's DAG records in update order (none if it has none)."""
    return sorted(read_records(Path(run_dir) / HISTORY_FILE), key=lambda r: r["update"])


def checkpoint_path(run_dir: Path, update: int) -> Path:
    """Where the checkpoint of ``update`` is saved."""
    return Path(run_dir) / CHECKPOINT_DIR / f"update_{update:08d}.msgpack"


def checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """Saved checkpoints as (update, path), oldest first."""
    folder = Path(run_dir) / CHECKPOINT_DIR
    if not folder.is_dir():
        return []
    found = [
        (int(m.group(1)), p) for p in folder.iterdir() if (m := _CHECKPOINT_NAME.match(p.name))
    ]
    return sorted(found)


def write_summary(run_dir: Path, summary: dict[str, Any]) -> None:
    """Write a run's final evaluation, last: it marks the run finished (strict JSON)."""
    write_json(Path(run_dir) / SUMMARY_FILE, summary)


def read_summary(run_dir: Path) -> dict[str, Any] | None:
    """A run's final evaluation as written; None for an unfinished run."""
    path = Path(run_dir) / SUMMARY_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def finished(run_dir: Path) -> bool:
    """Whether the run has finished: its summary is written last, atomically."""
    return (Path(run_dir) / SUMMARY_FILE).is_file()
