"""The runs a report compares: run directories read (never written), those of one (env,
algorithm) merged as more seeds, and each seed's greedy evaluations and final win rates."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from b2mapo import checkpoint, rundir
from b2mapo.config import TrainConfig, diff, tagged_fields
from b2mapo.errors import ConfigError
from b2mapo.plots import Curve, curve
from b2mapo.rundir import CONFIG_FILE, METRICS_FILE, SUMMARY_FILE

# The report's order of the algorithms it knows; any others follow, sorted by name.
ALGO_ORDER = (
    "mappo",
    "happo",
    "a2po",
    "b2mapo-fixed",
    "b2mapo-frozen",
    "b2mapo",
    "b2mapo-paired",
)
# Config fields in which run directories merged as seeds of one algorithm may differ.
MERGEABLE_FIELDS = tagged_fields("mergeable")


class EvalPoint(NamedTuple):
    """One greedy evaluation of one seed."""

    env_steps: int
    wall_time: float  # seconds since the run started, cumulative over resumptions
    win_rate: float  # the policy that executes (π_ind for B2MAPO)
    joint_win_rate: float | None  # B2MAPO's joint policy π; None for the other algorithms


class Final(NamedTuple):
    """A seed's final greedy win rates and where they come from."""

    win_rate: float
    joint_win_rate: float | None
    env_steps: int
    from_summary: bool  # False: an unfinished run's last evaluation record


@dataclass(frozen=True)
class RunResult:
    """One algorithm on one map: the evaluations of its seeds, from one or several run dirs."""

    env: str
    algo: str
    learned: bool  # B2MAPO (partition=learned): π_ind executes, π is scored too, K is learned
    sources: dict[int, Path]  # seed -> the run directory that trained it
    curves: dict[int, list[EvalPoint]]  # seed -> its evaluations, by env steps
    finals: dict[int, Final]
    num_batches: dict[int, list[tuple[int, float]]]  # seed -> (env steps, mean K of the DAGs)

    @property
    def seeds(self) -> list[int]:
        return sorted(self.sources)

    @property
    def family(self) -> str:
        """The environment family, e.g. ``smax``."""
        return self.env.partition(":")[0]

    @property
    def task(self) -> str:
        """The map or task within the family, e.g. ``3m``."""
        return self.env.partition(":")[2] or self.env

    @property
    def unfinished(self) -> bool:
        """Some seed's final value is its last evaluation record (no summary.json)."""
        return not all(final.from_summary for final in self.finals.values())

    def final_wins(self) -> np.ndarray:
        """Final greedy win rates of the executing policy, in seed order."""
        return np.array([self.finals[s].win_rate for s in self.seeds])

    def joint_gaps(self) -> np.ndarray | None:
        """π's final win rate minus π_ind's per seed; None unless every seed has both."""
        joints = [self.finals[s].joint_win_rate for s in self.seeds]
        if not self.learned or any(j is None for j in joints):
            return None
        return np.array(joints, dtype=float) - self.final_wins()


def _config(run_dir: Path) -> TrainConfig:
    """The run's config; ``ConfigError`` naming the directory if it is missing or unreadable."""
    try:
        return checkpoint.load_config(run_dir)
    except ConfigError as error:
        if str(run_dir) in str(error):
            raise
        raise ConfigError(f"{run_dir}: {CONFIG_FILE}: {error}") from None
    except (OSError, ValueError, TypeError) as error:
        raise ConfigError(f"{run_dir}: {CONFIG_FILE} is unreadable ({error})") from None


def _metrics(run_dir: Path) -> list[dict[str, Any]]:
    """The records of ``metrics.jsonl`` in log order (their wall times are cumulative over
    resumptions as written)."""
    if not (run_dir / METRICS_FILE).is_file():
        raise ConfigError(f"{run_dir} has no {METRICS_FILE}: no evaluation records to report")
    records = rundir.read_metrics(run_dir)
    for number, record in enumerate(records, start=1):
        if "seed" not in record or "wall_time" not in record:
            raise ConfigError(
                f"{run_dir}: record {number} of {METRICS_FILE} is no b2mapo record with a seed "
                "and a wall_time (written by an older b2mapo?)"
            )
    return records


def _eval_curves(
    run_dir: Path, cfg: TrainConfig, records: list[dict[str, Any]]
) -> dict[int, list[EvalPoint]]:
    """Every seed's greedy evaluations; ``ConfigError`` if the run has none (for some seed)."""
    seeds = range(cfg.seed, cfg.seed + cfg.seeds)
    evals = [r for r in records if r.get("kind") == "eval" and r["seed"] in seeds]
    if not evals:
        raise ConfigError(
            f"{run_dir} has no evaluation records in {METRICS_FILE} (eval_every=0, or stopped "
            "before its first evaluation): the report compares greedy evaluations"
        )
    try:
        curves = {
            seed: sorted(
                (
                    EvalPoint(
                        int(r["env_steps"]),
                        float(r["wall_time"]),
                        float(r["greedy_win_rate"]),
                        float(r["greedy_joint_win_rate"]) if "greedy_joint_win_rate" in r else None,
                    )
                    for r in evals
                    if r["seed"] == seed
                ),
                key=lambda point: point.env_steps,
            )
            for seed in seeds
        }
    except KeyError as error:
        raise ConfigError(f"{run_dir}: an eval record of {METRICS_FILE} has no {error}") from None
    missing = [seed for seed, points in curves.items() if not points]
    if missing:
        raise ConfigError(f"{run_dir} has no evaluation records of seed(s) {missing}")
    return curves


def _num_batches(
    cfg: TrainConfig, records: list[dict[str, Any]]
) -> dict[int, list[tuple[int, float]]]:
    """B2MAPO's mean K of the sampled DAGs per seed over training (empty for the others)."""
    if cfg.partition != "learned":
        return {}
    by_seed: dict[int, list[tuple[int, float]]] = {}
    for record in records:
        if record.get("kind") == "train" and record.get("dag_num_batches") is not None:
            point = (int(record["env_steps"]), float(record["dag_num_batches"]))
            by_seed.setdefault(record["seed"], []).append(point)
    return by_seed


def _summary(run_dir: Path, cfg: TrainConfig) -> dict[str, Any] | None:
    """The final evaluation of ``summary.json``; None for an unfinished run."""
    try:
        summary = rundir.read_summary(run_dir)
        if summary is None:
            return None
        greedy, env_steps = summary["eval_greedy"], int(summary["env_steps"])
        wins = [float(v) for v in greedy["win_rate"]]
        joint = greedy.get("joint_win_rate")
        joint = None if joint is None else [float(v) for v in joint]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ConfigError(f"{run_dir}: {SUMMARY_FILE} is unreadable ({error!r})") from None
    if len(wins) != cfg.seeds or (joint is not None and len(joint) != cfg.seeds):
        raise ConfigError(
            f"{run_dir}: {SUMMARY_FILE} has {len(wins)} final win rate(s) for {cfg.seeds} seeds"
        )
    return {"win_rate": wins, "joint_win_rate": joint, "env_steps": env_steps}


def _finals(
    cfg: TrainConfig, curves: dict[int, list[EvalPoint]], summary: dict[str, Any] | None
) -> dict[int, Final]:
    """Each seed's final greedy win rates: the summary's, else the last evaluation's."""
    finals = {}
    for index, seed in enumerate(range(cfg.seed, cfg.seed + cfg.seeds)):
        last = curves[seed][-1]
        if summary is None:
            finals[seed] = Final(last.win_rate, last.joint_win_rate, last.env_steps, False)
            continue
        joint = summary["joint_win_rate"]
        joint_win = joint[index] if joint is not None else last.joint_win_rate
        finals[seed] = Final(summary["win_rate"][index], joint_win, summary["env_steps"], True)
    return finals


def _load_run(run_dir: Path) -> tuple[TrainConfig, RunResult]:
    """One run directory's config and results."""
    cfg = _config(run_dir)
    records = _metrics(run_dir)
    curves = _eval_curves(run_dir, cfg, records)
    result = RunResult(
        env=cfg.env,
        algo=cfg.algo,
        learned=cfg.partition == "learned",
        sources={seed: run_dir for seed in curves},
        curves=curves,
        finals=_finals(cfg, curves, _summary(run_dir, cfg)),
        num_batches=_num_batches(cfg, records),
    )
    return cfg, result


def _merge(group: list[tuple[TrainConfig, RunResult]]) -> RunResult:
    """The run directories of one (env, algorithm) as one result with all their seeds;
    ``ConfigError`` for a seed in two directories or directories that train differently."""
    first_cfg, merged = group[0]
    first_dir = next(iter(merged.sources.values()))
    for cfg, result in group[1:]:
        for seed, run_dir in result.sources.items():
            if seed in merged.sources:
                raise ConfigError(
                    f"seed {seed} of {result.algo} on {result.env} is in both "
                    f"{merged.sources[seed]} and {run_dir}: merged runs need other seeds (--seed)"
                )
        changed = {k: v for k, v in diff(first_cfg, cfg).items() if k not in MERGEABLE_FIELDS}
        if changed:
            details = ", ".join(f"{k} {a!r} vs {b!r}" for k, (a, b) in changed.items())
            raise ConfigError(
                f"{first_dir} and {next(iter(result.sources.values()))} are both {result.algo} "
                f"on {result.env} "
                f"but train differently ({details}): they cannot be merged as seeds"
            )
        merged = RunResult(
            merged.env,
            merged.algo,
            merged.learned,
            {**merged.sources, **result.sources},
            {**merged.curves, **result.curves},
            {**merged.finals, **result.finals},
            {**merged.num_batches, **result.num_batches},
        )
    return merged


def _algo_rank(algo: str) -> tuple[int, str]:
    """Sort key of an algorithm: its place in ``ALGO_ORDER``, unknown ones after, by name."""
    return (ALGO_ORDER.index(algo) if algo in ALGO_ORDER else len(ALGO_ORDER), algo)


def load_runs(run_dirs: Sequence[Path]) -> list[RunResult]:
    """One ``RunResult`` per (env, algorithm) of ``run_dirs``, maps in the order given and
    algorithms in ``ALGO_ORDER``; directories of one (env, algorithm) are merged as more seeds.

    ``ConfigError`` (one line, naming the directory) for a directory without a config, without
    evaluation records or unreadable, for one seed in two directories, and for directories of
    one (env, algorithm) whose configs train differently.
    """
    unique = list(dict.fromkeys(Path(run_dir) for run_dir in run_dirs))
    if not unique:
        raise ConfigError("no run directory to report on")
    groups: dict[tuple[str, str], list[tuple[TrainConfig, RunResult]]] = {}
    for run_dir in unique:
        cfg, result = _load_run(run_dir)
        groups.setdefault((result.env, result.algo), []).append((cfg, result))
    merged = [_merge(group) for group in groups.values()]
    maps = list(dict.fromkeys(result.env for result in merged))
    return sorted(merged, key=lambda r: (maps.index(r.env), _algo_rank(r.algo)))


def maps_of(results: Sequence[RunResult]) -> list[str]:
    """The maps of ``results`` in the order they come first."""
    return list(dict.fromkeys(result.env for result in results))


def algos_of(results: Sequence[RunResult]) -> list[str]:
    """The algorithms of ``results`` in the report's order (one colour and column each)."""
    return sorted({result.algo for result in results}, key=_algo_rank)


def eval_curve(result: RunResult, x: str = "env_steps") -> Curve:
    """The greedy win rate of the executing policy: mean and min-max over seeds at each
    evaluation, against env steps or the seeds' mean cumulative wall time there (``x``)."""
    records = [point._asdict() for points in result.curves.values() for point in points]
    win = curve(records, "win_rate")
    wall = curve(records, "wall_time")
    assert win is not None and wall is not None  # every seed has evaluations
    steps = wall.mean if x == "wall_time" else win.steps
    return Curve(steps, win.mean, win.low, win.high)


def num_batches_curve(result: RunResult) -> Curve | None:
    """Mean K of the sampled DAGs over env steps, over seeds; None if never logged."""
    records = [
        {"env_steps": steps, "k": k}
        for points in result.num_batches.values()
        for steps, k in points
    ]
    return curve(records, "k")
