"""What a finished (or evaluated) run reports, as ``summary.json`` holds it and as the CLI
prints it: the final evaluation with its intervals and the run's times."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.stats
from rich.table import Table

from b2mapo.evaluation import wilson_interval


@dataclass
class Summary:
    """What a finished (or evaluated) run reports."""

    run_dir: Path
    updates: int
    env_steps: int
    eval_greedy: dict[str, np.ndarray]
    eval_sampled: dict[str, np.ndarray]
    episodes_per_seed: int
    compile_seconds: float = 0.0  # over all resumptions, as train_seconds
    train_seconds: float = 0.0
    steady_steps_per_second: float | None = None  # None: no chunk after a start's first
    devices: int = 1
    processes: int = 1

    @classmethod
    def from_dict(cls, run_dir: Path, values: dict[str, Any]) -> Summary:
        """The summary of ``run_dir`` as ``as_dict`` wrote it."""
        steady = values["steady_steps_per_second"]
        return cls(
            run_dir=run_dir,
            updates=values["updates"],
            env_steps=values["env_steps"],
            eval_greedy={k: np.asarray(v) for k, v in values["eval_greedy"].items()},
            eval_sampled={k: np.asarray(v) for k, v in values["eval_sampled"].items()},
            episodes_per_seed=values["episodes_per_seed"],
            compile_seconds=values["compile_seconds"],
            train_seconds=values["train_seconds"],
            steady_steps_per_second=None if steady is None or math.isnan(steady) else steady,
            devices=values["devices"],
            processes=values["processes"],
        )

    def as_dict(self) -> dict[str, Any]:
        steady = self.steady_steps_per_second
        return {
            "run_dir": str(self.run_dir),
            "updates": self.updates,
            "env_steps": self.env_steps,
            "eval_greedy": {k: v.tolist() for k, v in self.eval_greedy.items()},
            "eval_sampled": {k: v.tolist() for k, v in self.eval_sampled.items()},
            "episodes_per_seed": self.episodes_per_seed,
            "compile_seconds": self.compile_seconds,
            "train_seconds": self.train_seconds,
            "steady_steps_per_second": self.steady_steps_per_second,
            "devices": self.devices,
            "processes": self.processes,
            "steady_steps_per_second_per_device": None if steady is None else steady / self.devices,
        }


def format_result(key: str, values: np.ndarray, episodes_per_seed: int) -> str:
    """A final evaluation value, ``values`` one per seed. Several seeds: their mean ± standard
    deviation (ddof=0, as the report) and the 95% t-interval of the mean over the seeds (the
    seeds are the independent draws; their episodes are not). One seed: a win rate's 95%
    Wilson interval over its episodes."""
    text = f"{values.mean():.3f}"
    if values.size > 1:
        sd = values.std(ddof=1)
        half = float(scipy.stats.t.ppf(0.975, values.size - 1)) * sd / np.sqrt(values.size)
        low, high = values.mean() - half, values.mean() + half
        if key.endswith("win_rate"):
            low, high = max(low, 0.0), min(high, 1.0)
        text += (
            f" ± {values.std():.3f} sd over {values.size} seeds "
            f"(95% CI over the seeds {low:.3f}-{high:.3f})"
        )
    elif key.endswith("win_rate"):
        low, high = wilson_interval(float(values[0]) * episodes_per_seed, episodes_per_seed)
        text += f" (95% Wilson CI {low:.3f}-{high:.3f} over {episodes_per_seed} episodes)"
    return text


def summary_table(summary: Summary, title: str) -> Table:
    """A small table of the final evaluation and run facts."""
    table = Table(title=title, show_header=False)
    for name, result in (("greedy", summary.eval_greedy), ("sampled", summary.eval_sampled)):
        for key in ("win_rate", "episode_return", "joint_win_rate", "joint_episode_return"):
            if key in result:
                text = format_result(key, result[key], summary.episodes_per_seed)
                table.add_row(f"eval {name} {key}", text)
    table.add_row("updates / env steps per seed", f"{summary.updates:,} / {summary.env_steps:,}")
    if summary.train_seconds:
        table.add_row("compile time", f"{summary.compile_seconds:.1f} s")
        table.add_row("training time", f"{summary.train_seconds:.1f} s")
    steady = summary.steady_steps_per_second
    if steady is not None:
        table.add_row("env steps/s (steady, all seeds)", f"{steady:,.0f}")
        if summary.devices > 1:
            where = f"{summary.devices}" + (
                f" in {summary.processes} processes" if summary.processes > 1 else ""
            )
            per_device = steady / summary.devices
            table.add_row("devices / env steps/s per device", f"{where} / {per_device:,.0f}")
    table.add_row("run directory", str(summary.run_dir))
    return table
