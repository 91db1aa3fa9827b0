"""Does B2MAPO's DAG generator find the dependencies that pay? Scores a run's recorded DAGs
(``dag_history.jsonl``, every evaluation and seed) against a planted graph
(``probe:coupled``'s ``true_dependencies``).

The reward identifies the layering, not the edges: a batch sees every earlier batch's
actions, so an edge between two batches costs nothing and edge precision cannot be learned
from it (it would need a cost per kept pair, which b2mapo does not have; ``batch_cost`` pays
per batch, K, and leaves edges between batches free). So a run is scored by:

- ``true_separated`` (``other_separated``): how often the greedy layering, the most frequent
  of the sampled DAGs' layerings at a state, puts a true (other) pair in different batches;
- ``true_kept`` / ``other_kept``: how often sampled DAGs keep a true / other pair;
- ``batches``: the greedy layerings' mean K.

Each is averaged over the pairs and the recorder's states (``upper.history.DagRecorder``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from b2mapo import checkpoint, rundir
from b2mapo.envs.registry import is_host, make_env
from b2mapo.errors import ConfigError

RECOVERY_FILE = "recovery.json"
RECOVERY_FIGURE = "recovery.png"
# The per-seed values of recovery.json, in the table's order.
SCORES = ("true_separated", "true_kept", "other_kept", "other_separated", "batches")


def _pairs(truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The true and the other unordered pairs ``i < j`` of a planted graph, or ConfigError."""
    truth = np.asarray(truth)
    n = truth.shape[0]
    if truth.shape != (n, n) or not np.array_equal(truth, truth.T) or truth.diagonal().any():
        raise ConfigError(
            f"truth of shape {truth.shape} must be a symmetric [n, n] graph with no self-loop"
        )
    upper = np.triu(np.ones((n, n), bool), k=1)
    return upper & truth.astype(bool), upper & ~truth.astype(bool)


def _mean_over(values: np.ndarray, pairs: np.ndarray) -> float | None:
    return float(values[pairs].mean()) if pairs.any() else None


def score(stats: dict[str, Any], truth: np.ndarray) -> dict[str, float | None]:
    """The ``SCORES`` of one seed's ``history.dependency_stats`` against ``truth [n, n]``
    (None, JSON's null, for a mean over no pair: a graph without true pairs has none)."""
    true_pairs, other_pairs = _pairs(truth)
    separated, kept = np.asarray(stats["separated"]), np.asarray(stats["kept"])
    if separated.shape != true_pairs.shape:
        raise ConfigError(f"stats of {separated.shape[0]} agents but truth of {len(truth)}")
    return {
        "true_separated": _mean_over(separated, true_pairs),
        "true_kept": _mean_over(kept, true_pairs),
        "other_kept": _mean_over(kept, other_pairs),
        "other_separated": _mean_over(separated, other_pairs),
        "batches": float(stats["batches"]),
    }


def planted_graph(run_dir: Path) -> np.ndarray:
    """The planted dependency graph of a run's environment (``true_dependencies()``), or a
    ConfigError for an environment without one."""
    cfg = checkpoint.load_config(Path(run_dir))
    planted = None if is_host(cfg.env) else getattr(make_env(cfg.env), "true_dependencies", None)
    if planted is None:
        raise ConfigError(
            f"{cfg.env} has no planted dependency graph (true_dependencies); pass truth="
        )
    return np.asarray(planted())


def recovery_over_training(run_dir: Path, truth: np.ndarray | None = None) -> list[dict[str, Any]]:
    """One row per evaluation and seed of a B2MAPO run (its ``dag_history.jsonl``): ``update``,
    ``env_steps``, ``seed`` (index) and the ``SCORES`` against ``truth`` (None: the
    environment's planted graph)."""
    run_dir = Path(run_dir)
    records = rundir.read_history(run_dir)
    if not records:
        raise ConfigError(f"{run_dir} has no DAG history (recorded by B2MAPO runs)")
    if "seeds" not in records[0]:
        raise ConfigError(f"{run_dir}'s DAG history predates the per-seed records: train again")
    truth = planted_graph(run_dir) if truth is None else np.asarray(truth)
    return [
        {"update": r["update"], "env_steps": r["env_steps"], "seed": s, **score(stats, truth)}
        for r in records
        for s, stats in enumerate(r["seeds"])
    ]


def final_scores(rows: list[dict[str, Any]]) -> list[dict[str, float | None]]:
    """Each seed's ``SCORES`` at its last evaluation, by seed index."""
    last = max(row["update"] for row in rows)
    ends = sorted((r for r in rows if r["update"] == last), key=lambda r: r["seed"])
    return [{key: row[key] for key in SCORES} for row in ends]


def recovery_table(seeds: list[dict[str, float | None]]) -> str:
    """A Markdown table of the seeds' final scores and their median ("-": no pair to score)."""
    from b2mapo.reproduce.report import format_table

    def cell(values: list[float | None]) -> str:
        scored = [v for v in values if v is not None]
        return f"{np.median(scored):.2f}" if scored else "-"

    rows = [[str(s), *(cell([v[k]]) for k in SCORES)] for s, v in enumerate(seeds)]
    rows.append(["median", *(cell([v[k] for v in seeds]) for k in SCORES)])
    return format_table(["seed", *SCORES], rows)


def draw_recovery(rows: list[dict[str, Any]], title: str) -> Figure:
    """Over training, per seed: true pairs' separation and keep rate, other pairs' keep rate."""
    figure = Figure(figsize=(8, 4.2), layout="constrained")
    ax = figure.subplots()
    styles = {
        "true_separated": ("tab:green", "-"),
        "true_kept": ("tab:blue", "--"),
        "other_kept": ("tab:red", ":"),
    }
    for seed in sorted({row["seed"] for row in rows}):
        mine = [row for row in rows if row["seed"] == seed]
        steps = [row["env_steps"] for row in mine]
        for key, (colour, line) in styles.items():
            label = f"{key.replace('_', ' ')}" if seed == 0 else None
            marker = "osd"[seed % 3]
            values = [math.nan if row[key] is None else row[key] for row in mine]
            ax.plot(steps, values, line, color=colour, marker=marker, ms=3, label=label)
    ax.set_ylim(-0.03, 1.03)
    ax.set_xlabel("env steps per seed")
    ax.set_ylabel("fraction")
    ax.set_title(f"{title} (markers: o, s, d = seeds 0, 1, 2)", fontsize=9)
    ax.legend(loc="center right", fontsize=8)
    ax.grid(alpha=0.3)
    return figure


def write_recovery(run_dir: Path, out: Path) -> str:
    """Score a B2MAPO run on a planted graph: ``recovery.json`` (``{"seeds": [...]}``, each
    seed's final ``SCORES``) and ``recovery.png`` (over training) under ``out``; returns the
    Markdown section of the report (the table and the figure)."""
    run_dir, out = Path(run_dir), Path(out)
    rows = recovery_over_training(run_dir)
    seeds = final_scores(rows)
    out.mkdir(parents=True, exist_ok=True)
    rundir.write_json(out / RECOVERY_FILE, {"seeds": seeds})
    cfg = checkpoint.load_config(run_dir)
    figure = draw_recovery(rows, f"{cfg.env}, {run_dir.name}: dependency recovery")
    figure.savefig(out / RECOVERY_FIGURE, dpi=110)
    return (
        f"## Dependency recovery: {cfg.env}\n\n"
        f"At the last evaluation ({rows[-1]['env_steps']:,} env steps per seed), per seed: how "
        "often the greedy layering (the most frequent sampled one) splits the true pairs and "
        "the other pairs, how often sampled DAGs keep them, and the greedy layerings' mean K "
        f"(`{RECOVERY_FILE}`).\n\n{recovery_table(seeds)}\n\n![recovery]({RECOVERY_FIGURE})\n\n"
    )
