"""Training curves of one run, or of several overlaid, from their ``metrics.jsonl``: win
rates, returns, the number of batches K, update time and losses, each as the mean over seeds
with the min-max band over seeds (for a run of several seeds).

A view of run directories: it imports no training code (no JAX), so ``b2mapo curves`` starts
fast; the DAG figures, which need a checkpoint, are in ``dag_plots``. Figures are written
through matplotlib's ``Figure`` (Agg canvas): no display, and pyplot's global state is left
alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import EngFormatter

from b2mapo import rundir
from b2mapo.errors import ConfigError


class Curve(NamedTuple):
    """One metric against env steps (or wall time): mean over seeds and the min-max band."""

    steps: np.ndarray  # the x values: env steps per seed, or seconds
    mean: np.ndarray
    low: np.ndarray
    high: np.ndarray


# What ``plot_training`` can put on the x axis: record key -> axis label.
X_AXES = {"env_steps": "env steps per seed", "wall_time": "wall time (s)"}


def curve(records: list[dict[str, Any]], key: str, x: str = "env_steps") -> Curve | None:
    """``key`` of ``records`` by ``x`` (``env_steps`` or ``wall_time``), over the seeds logged
    at that point (a null value, a metric over nothing, is left out); None if no record has
    it."""
    by_x: dict[float, list[float]] = {}
    for record in records:
        if record.get(key) is not None:
            by_x.setdefault(record[x], []).append(record[key])
    if not by_x:
        return None
    steps = np.array(sorted(by_x))
    values = [np.asarray(by_x[s]) for s in steps]
    return Curve(
        steps,
        np.array([v.mean() for v in values]),
        np.array([v.min() for v in values]),
        np.array([v.max() for v in values]),
    )


def _panels(learned: bool) -> list[tuple[str, list[tuple[str, str, str]]]]:
    """The training figure's panels: title and (kind, metric key, label) of each curve."""
    executing = "π_ind" if learned else "policy"
    rollouts = "train (π rollouts)" if learned else "train"
    return [
        (
            "win rate",
            [
                ("train", "win_rate", rollouts),
                ("eval", "greedy_win_rate", f"eval {executing}, greedy"),
                ("eval", "greedy_joint_win_rate", "eval π, greedy"),
            ],
        ),
        (
            "episode return",
            [
                ("train", "episode_return", rollouts),
                ("eval", "greedy_episode_return", f"eval {executing}, greedy"),
                ("eval", "greedy_joint_episode_return", "eval π, greedy"),
            ],
        ),
        (
            "number of batches K",
            [
                ("train", "num_batches", "K, max over the round"),
                ("train", "dag_num_batches", "K, mean of the sampled DAGs"),
            ],
        ),
        (
            "update time (s), logged with --time-updates",
            [
                ("train", "update_seconds", "whole update"),
                ("train", "joint_update_seconds", "π's update"),
            ],
        ),
        (
            "policy loss",
            [
                ("train", "policy_loss", "π" if learned else "policy"),
                ("train", "ind_policy_loss", "π_ind"),
                ("train", "dag_policy_loss", "DAG generator"),
            ],
        ),
        ("distillation KL(π ‖ π_ind)", [("train", "ind_distill_loss", "π_ind")]),
    ]


def _run_records(run_dir: Path, x: str) -> tuple[dict[str, Any], dict[str, list[dict]]]:
    """A run's config as saved (plain JSON: a ``TrainConfig`` would import JAX) and its train
    and eval records; ``ConfigError`` if it has no training records, or none with ``x``."""
    config = rundir.read_config(run_dir)
    records = rundir.read_metrics(run_dir)
    by_kind = {kind: [r for r in records if r["kind"] == kind] for kind in ("train", "eval")}
    if not by_kind["train"]:
        path = run_dir / rundir.METRICS_FILE
        raise ConfigError(f"{run_dir} has no training metrics to plot (no records in {path})")
    if not any(x in r for r in by_kind["train"]):
        raise ConfigError(f"{run_dir}'s metrics have no {x} (written by an older b2mapo)")
    return config, by_kind


def _seeds(by_kind: dict[str, list[dict]]) -> int:
    """How many seeds a run's training records hold."""
    return len({r["seed"] for r in by_kind["train"]})


def plot_training(
    run_dirs: Path | list[Path], out_png: Path | None = None, x: str = "env_steps"
) -> Path:
    """Write ``training_figure`` as a PNG and return its path: by default
    ``RUN_DIR/training.png`` for one run, ``curves.png`` for several."""
    runs = [Path(r) for r in ([run_dirs] if isinstance(run_dirs, str | Path) else run_dirs)]
    figure = training_figure(runs, x)
    default = Path("curves.png") if len(runs) > 1 else runs[0] / "training.png"
    out_png = Path(out_png) if out_png else default
    out_png.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out_png, dpi=110)
    return out_png


def training_figure(runs: list[Path], x: str = "env_steps") -> Figure:
    """The training curves of one run, or of several overlaid, from their ``metrics.jsonl``.

    Each curve is the mean over a run's seeds, with the min-max band over them for a run of
    several seeds, against env steps per seed or wall time since the run started, over its
    resumptions (``x``). One run: one colour per curve. Several: one colour per run and one
    line style per curve. ``ConfigError`` if a directory holds no run or no training records.
    """
    if x not in X_AXES:
        raise ConfigError(f"unknown x axis {x!r}; choose one of: {', '.join(X_AXES)}")
    if not runs:
        raise ConfigError("no run directory to plot")
    loaded = [_run_records(run, x) for run in runs]
    several = len(runs) > 1
    panels = _panels(any(config["partition"] == "learned" for config, _ in loaded))
    figure = Figure(figsize=(15, 8), layout="constrained")
    axes = figure.subplots(2, 3).ravel()
    for ax, (title, curves) in zip(axes, panels, strict=True):
        drawn = False
        for run_index, (run, (_, by_kind)) in enumerate(zip(runs, loaded, strict=True)):
            banded = _seeds(by_kind) > 1
            for curve_index, (kind, key, label) in enumerate(curves):
                found = curve(by_kind[kind], key, x)
                if found is None:
                    continue
                colour = f"C{run_index if several else curve_index}"
                line = ("-", "--", ":")[curve_index] if several else "-"
                ax.plot(
                    found.steps,
                    found.mean,
                    line,
                    marker="o" if kind == "eval" else None,
                    color=colour,
                    label=f"{run.name}: {label}" if several else label,
                    ms=3,
                )
                if banded:
                    ax.fill_between(found.steps, found.low, found.high, color=colour, alpha=0.2)
                drawn = True
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(X_AXES[x])
        ax.xaxis.set_major_formatter(EngFormatter())
        if drawn:
            ax.legend(fontsize=7 if several else 8)
        else:
            ax.text(0.5, 0.5, "not logged by this run", ha="center", transform=ax.transAxes)
            ax.set_xticks([])
            ax.set_yticks([])
    if several:
        title = (
            f"{len(runs)} runs, mean over each run's seeds; "
            "band (runs of several seeds): min-max over seeds"
        )
    else:
        config, by_kind = loaded[0]
        seeds = _seeds(by_kind)
        algo, env = config["algo"], config["env"]
        what = f"mean over {seeds} seeds, band: min-max over seeds" if seeds > 1 else "1 seed"
        title = f"{algo} on {env}: {runs[0].name}, {what}"
    figure.suptitle(title, fontsize=11)
    return figure
