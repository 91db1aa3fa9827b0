"""The comparison report of ``b2mapo report RUN_DIR...`` and ``b2mapo reproduce``.

It reads run directories (never writes them), merges the directories of one (env,
algorithm) as more seeds, and writes into one output directory: greedy evaluation curves
against env steps and cumulative wall time, B2MAPO's number of batches K, ``results.json``
(the raw data and the statistics), ``marl_eval.json`` (InstaDeep marl-eval's layout) and
``report.md``: final win rates per map, B2MAPO's π vs π_ind gap, and rliable's interquartile
mean and probability of improvement with stratified-bootstrap confidence intervals. rliable
(the ``report`` extra) is imported only when the statistics are computed.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import EngFormatter

from b2mapo import checkpoint
from b2mapo.checkpoint import atomic_write
from b2mapo.config import TrainConfig, diff, tagged_fields
from b2mapo.errors import ConfigError
from b2mapo.plots import Curve, curve
from b2mapo.runner import METRICS_FILE

SUMMARY_FILE = "summary.json"
RESULTS_FILE = "results.json"
MARL_EVAL_FILE = "marl_eval.json"
REPORT_FILE = "report.md"
CURVE_FILES = {"env_steps": "curves_env_steps.png", "wall_time": "curves_wall_time.png"}
NUM_BATCHES_FILE = "num_batches.png"
X_LABELS = {
    "env_steps": "env steps per seed",
    "wall_time": "cumulative wall time (s), mean over seeds",
}
DEFAULT_TITLE = "B2MAPO and its baselines: greedy evaluation win rates"
# rliable's stratified bootstrap: replications, interval coverage, and the seed of numpy's
# global generator, which rliable draws its resamples from (restored afterwards).
BOOTSTRAP_REPS = 2000
CONFIDENCE = 0.95
BOOTSTRAP_SEED = 0
# The algorithm whose probability of improvement over every other one the report gives.
TARGET_ALGO = "b2mapo"
# The report's order of the algorithms it knows; any others follow, sorted by name.
ALGO_ORDER = ("mappo", "happo", "a2po", "b2mapo-fixed", "b2mapo")
# Config fields in which run directories merged as seeds of one algorithm may differ.
MERGEABLE_FIELDS = tagged_fields("mergeable")
RLIABLE_MISSING = "the report's statistics need rliable: pip install -e '.[report]'"
UNFINISHED_MARK = "†"


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


class Estimate(NamedTuple):
    """A point estimate and its confidence interval."""

    point: float
    low: float
    high: float


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


# ---------------------------------------------------------------------------- loading


def cumulative_wall_times(times: Sequence[float]) -> list[float]:
    """One seed's logged wall times, in log order, made cumulative over resumptions.

    A resumed run's clock restarts from 0, so wherever a time is smaller than the one logged
    before it, that earlier time is added to it and to everything after. A resumption whose
    first record is later than the last one before it cannot be told apart and gets no offset.
    """
    offset, previous, cumulative = 0.0, -math.inf, []
    for time in times:
        if time < previous:
            offset += previous
        cumulative.append(time + offset)
        previous = time
    return cumulative


def _config(run_dir: Path) -> TrainConfig:
    """The run's config; ``ConfigError`` naming the directory if it is missing or unreadable."""
    try:
        return checkpoint.load_config(run_dir)
    except ConfigError as error:
        if str(run_dir) in str(error):
            raise
        raise ConfigError(f"{run_dir}: {checkpoint.CONFIG_FILE}: {error}") from None
    except (OSError, ValueError, TypeError) as error:
        raise ConfigError(f"{run_dir}: {checkpoint.CONFIG_FILE} is unreadable ({error})") from None


def _metrics(run_dir: Path) -> list[dict[str, Any]]:
    """The records of ``metrics.jsonl`` in log order, their wall times made cumulative."""
    path = run_dir / METRICS_FILE
    if not path.is_file():
        raise ConfigError(f"{run_dir} has no {METRICS_FILE}: no evaluation records to report")
    records = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            raise ConfigError(f"{run_dir}: line {number} of {METRICS_FILE} is not JSON") from None
        if not isinstance(record, dict) or "seed" not in record or "wall_time" not in record:
            raise ConfigError(
                f"{run_dir}: line {number} of {METRICS_FILE} is no b2mapo record with a seed "
                "and a wall_time (written by an older b2mapo?)"
            )
        records.append(record)
    return _with_cumulative_wall_time(records)


def _with_cumulative_wall_time(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Copies of ``records`` whose ``wall_time`` is cumulative per seed (see
    ``cumulative_wall_times``); train and eval records share a seed's clock."""
    by_seed: dict[int, list[int]] = {}
    for index, record in enumerate(records):
        by_seed.setdefault(record["seed"], []).append(index)
    out = [dict(record) for record in records]
    for indices in by_seed.values():
        times = cumulative_wall_times([records[i]["wall_time"] for i in indices])
        for index, time in zip(indices, times, strict=True):
            out[index]["wall_time"] = time
    return out


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
        if record.get("kind") == "train" and "dag_num_batches" in record:
            point = (int(record["env_steps"]), float(record["dag_num_batches"]))
            by_seed.setdefault(record["seed"], []).append(point)
    return by_seed


def _summary(run_dir: Path, cfg: TrainConfig) -> dict[str, Any] | None:
    """The final evaluation of ``summary.json``; None for an unfinished run."""
    path = run_dir / SUMMARY_FILE
    if not path.is_file():
        return None
    try:
        summary = json.loads(path.read_text())
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


def _maps(results: Sequence[RunResult]) -> list[str]:
    """The maps of ``results`` in the order they come first."""
    return list(dict.fromkeys(result.env for result in results))


def _algos(results: Sequence[RunResult]) -> list[str]:
    """The algorithms of ``results`` in the report's order (one colour and column each)."""
    return sorted({result.algo for result in results}, key=_algo_rank)


# ---------------------------------------------------------------------------- figures


def eval_curve(result: RunResult, x: str = "env_steps") -> Curve:
    """The greedy win rate of the executing policy: mean and min-max over seeds at each
    evaluation, against env steps or the seeds' mean cumulative wall time there (``x``)."""
    records = [point._asdict() for points in result.curves.values() for point in points]
    win = curve(records, "win_rate")
    wall = curve(records, "wall_time")
    assert win is not None and wall is not None  # every seed has evaluations
    steps = wall.mean if x == "wall_time" else win.steps
    return Curve(steps, win.mean, win.low, win.high)


def _num_batches_curve(result: RunResult) -> Curve | None:
    """Mean K of the sampled DAGs over env steps, over seeds; None if never logged."""
    records = [
        {"env_steps": steps, "k": k}
        for points in result.num_batches.values()
        for steps, k in points
    ]
    return curve(records, "k")


def _panel_grid(count: int) -> tuple[Figure, list[Axes]]:
    """A figure with ``count`` panels, at most three per row."""
    cols = min(3, count)
    rows = math.ceil(count / cols)
    figure = Figure(figsize=(5.2 * cols, 4.0 * rows), layout="constrained")
    axes = list(figure.subplots(rows, cols, squeeze=False).ravel())
    for ax in axes[count:]:
        ax.set_visible(False)
    return figure, axes[:count]


def _draw(ax: Axes, found: Curve, colour: str, label: str, marker: str | None) -> None:
    """A curve's mean as a line and its min-max band, in one colour."""
    ax.plot(found.steps, found.mean, "-", marker=marker, ms=3, color=colour, label=label)
    ax.fill_between(found.steps, found.low, found.high, color=colour, alpha=0.2)


def _style(ax: Axes, title: str, xlabel: str, ylabel: str) -> None:
    """Titles, engineering-notation x ticks, a light grid and the legend of one panel."""
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.xaxis.set_major_formatter(EngFormatter())
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def curves_figure(results: Sequence[RunResult], x: str = "env_steps") -> Figure:
    """One panel per map, one line per algorithm: the mean greedy win rate of the executing
    policy over seeds with a min-max band, against env steps or cumulative wall time."""
    algos = _algos(results)
    maps = _maps(results)
    figure, axes = _panel_grid(len(maps))
    for ax, env in zip(axes, maps, strict=True):
        for result in (r for r in results if r.env == env):
            name = f"{result.algo} (π_ind)" if result.learned else result.algo
            label = f"{name}, {len(result.seeds)} seed(s)"
            colour = f"C{algos.index(result.algo) % 10}"
            _draw(ax, eval_curve(result, x), colour, label, "o")
        ax.set_ylim(-0.02, 1.02)
        _style(ax, env, X_LABELS[x], "greedy win rate")
    figure.suptitle("Greedy evaluation win rate: mean over seeds and min-max band", fontsize=11)
    return figure


def num_batches_figure(results: Sequence[RunResult]) -> Figure:
    """One panel per map of the B2MAPO runs: the mean number of batches K of the DAGs the
    generator sampled, over env steps (mean over seeds, min-max band)."""
    learned = [r for r in results if r.learned]
    algos = _algos(results)
    maps = _maps(learned)
    figure, axes = _panel_grid(len(maps))
    for ax, env in zip(axes, maps, strict=True):
        for result in (r for r in learned if r.env == env):
            found = _num_batches_curve(result)
            if found is not None:
                colour = f"C{algos.index(result.algo) % 10}"
                _draw(ax, found, colour, f"{result.algo}, {len(result.seeds)} seed(s)", None)
            else:
                ax.text(0.5, 0.5, "dag_num_batches not logged", ha="center", transform=ax.transAxes)
        _style(ax, env, X_LABELS["env_steps"], "K, mean of the sampled DAGs")
    figure.suptitle("B2MAPO: number of batches K of the sampled DAGs", fontsize=11)
    return figure


def _save(figure: Figure, path: Path) -> None:
    """Write ``figure`` as a PNG (Agg canvas: no display, no pyplot state)."""
    figure.savefig(path, dpi=110)


# ---------------------------------------------------------------------------- statistics


def _rliable() -> tuple[Any, Any]:
    """rliable's ``library`` and ``metrics`` modules; ``ConfigError`` if it is not installed."""
    try:
        from rliable import library, metrics
    except ImportError:
        raise ConfigError(RLIABLE_MISSING) from None
    except Exception as error:  # e.g. arch < 8 (which rliable 1.2.0 needs) under pandas 3
        raise ConfigError(
            f"rliable is installed but fails to import ({type(error).__name__}: {error}); "
            "rliable 1.2.0 needs arch<8, which needs pandas<3"
        ) from None
    return library, metrics


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """numpy's global generator seeded for rliable's resamples, and restored after."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def _interval_estimates(
    scores: dict[str, Any], func: Any, reps: int, seed: int
) -> dict[str, Estimate]:
    """rliable's stratified-bootstrap interval estimates of ``func`` for each key."""
    library, _ = _rliable()
    with _seeded(seed):
        points, intervals = library.get_interval_estimates(
            scores, func, reps=reps, confidence_interval_size=CONFIDENCE
        )
    return {
        key: Estimate(
            float(np.ravel(points[key])[0]),
            float(np.ravel(intervals[key])[0]),
            float(np.ravel(intervals[key])[1]),
        )
        for key in scores
    }


def iqm_estimates(
    scores: dict[str, np.ndarray], reps: int = BOOTSTRAP_REPS, seed: int = BOOTSTRAP_SEED
) -> dict[str, Estimate]:
    """The interquartile mean of each algorithm's scores ``[runs, tasks]`` (all runs and tasks
    pooled) with its stratified-bootstrap confidence interval."""
    _, metrics = _rliable()
    return _interval_estimates(
        scores, lambda x: np.array([metrics.aggregate_iqm(x)]), reps=reps, seed=seed
    )


def improvement_estimates(
    target: np.ndarray,
    baselines: dict[str, np.ndarray],
    reps: int = BOOTSTRAP_REPS,
    seed: int = BOOTSTRAP_SEED,
) -> dict[str, Estimate]:
    """The probability that a run of ``target`` beats one of each baseline on a task,
    averaged over tasks (scores ``[runs, tasks]``, same tasks), with its confidence interval."""
    _, metrics = _rliable()
    pairs = {name: [target, scores] for name, scores in baselines.items()}
    return _interval_estimates(
        pairs,
        lambda x, y: np.array([metrics.probability_of_improvement(x, y)]),
        reps=reps,
        seed=seed,
    )


@dataclass(frozen=True)
class ScoreMatrices:
    """rliable's inputs: per algorithm, final win rates ``[runs, maps]`` on shared maps."""

    maps: list[str]  # the maps every algorithm has: the aggregates' tasks
    left_out: dict[str, list[str]]  # maps some algorithm lacks -> the algorithms they lack
    scores: dict[str, np.ndarray]
    seed_counts: dict[str, list[int]]  # algorithms whose seed counts differ across the maps


def score_matrices(results: Sequence[RunResult]) -> ScoreMatrices:
    """Each algorithm's final win rates on the maps every algorithm has, cut to its smallest
    seed count over those maps (its lowest-numbered seeds) so that they form a matrix."""
    by_key = {(r.env, r.algo): r for r in results}
    algos = _algos(results)
    maps = [env for env in _maps(results) if all((env, a) in by_key for a in algos)]
    left_out = {
        env: [a for a in algos if (env, a) not in by_key]
        for env in _maps(results)
        if env not in maps
    }
    scores, seed_counts = {}, {}
    for algo in algos if maps else []:
        wins = [by_key[(env, algo)].final_wins() for env in maps]
        runs = min(len(w) for w in wins)
        if any(len(w) != runs for w in wins):
            seed_counts[algo] = [len(w) for w in wins]
        scores[algo] = np.stack([w[:runs] for w in wins], axis=1)
    return ScoreMatrices(maps, left_out, scores, seed_counts)


def aggregate_statistics(
    results: Sequence[RunResult], reps: int = BOOTSTRAP_REPS, seed: int = BOOTSTRAP_SEED
) -> dict[str, Any]:
    """IQM per algorithm and the probability of improvement of ``TARGET_ALGO`` over each
    other algorithm, over all shared maps and seeds, as JSON-ready data."""
    matrices = score_matrices(results)
    stats: dict[str, Any] = {
        "maps": matrices.maps,
        "left_out_maps": list(matrices.left_out),
        "missing_algos": matrices.left_out,
        "runs": {algo: int(s.shape[0]) for algo, s in matrices.scores.items()},
        "seed_counts_per_map": matrices.seed_counts,
        "reps": reps,
        "confidence": CONFIDENCE,
        "bootstrap_seed": seed,
        "iqm": {},
        "target": TARGET_ALGO,
        "probability_of_improvement": {},
    }
    if not matrices.scores:
        return stats
    iqm = iqm_estimates(matrices.scores, reps, seed)
    stats["iqm"] = {algo: estimate._asdict() for algo, estimate in iqm.items()}
    baselines = {a: s for a, s in matrices.scores.items() if a != TARGET_ALGO}
    if TARGET_ALGO in matrices.scores and baselines:
        poi = improvement_estimates(matrices.scores[TARGET_ALGO], baselines, reps, seed)
        stats["probability_of_improvement"] = {a: e._asdict() for a, e in poi.items()}
    return stats


# ---------------------------------------------------------------------------- data files


def _mean_std(values: np.ndarray) -> dict[str, float | int]:
    """Mean, standard deviation (ddof=0) and count of per-seed values, for JSON."""
    return {"mean": float(values.mean()), "std": float(values.std()), "n": int(values.size)}


def _result_data(result: RunResult) -> dict[str, Any]:
    """One (env, algorithm)'s raw data: seeds, per-seed curves and finals, and their spread."""
    gaps = result.joint_gaps()
    joints = None if gaps is None else gaps + result.final_wins()
    return {
        "family": result.family,
        "task": result.task,
        "learned": result.learned,
        "seeds": result.seeds,
        "run_dirs": {str(s): str(result.sources[s]) for s in result.seeds},
        "curves": {str(s): [p._asdict() for p in result.curves[s]] for s in result.seeds},
        "final": {str(s): result.finals[s]._asdict() for s in result.seeds},
        "final_win_rate": _mean_std(result.final_wins()),
        "final_joint_win_rate": None if joints is None else _mean_std(joints),
        "final_joint_gap": None if gaps is None else _mean_std(gaps),
        "num_batches": {str(s): points for s, points in sorted(result.num_batches.items())},
    }


def results_data(results: Sequence[RunResult], stats: dict[str, Any]) -> dict[str, Any]:
    """``results.json``: per env and algorithm the raw data, and the aggregate statistics."""
    envs: dict[str, dict[str, Any]] = {}
    for result in results:
        envs.setdefault(result.env, {})[result.algo] = _result_data(result)
    return {"envs": envs, "aggregate": stats}


def marl_eval_data(results: Sequence[RunResult]) -> dict[str, Any]:
    """The evaluations in InstaDeep marl-eval's raw layout: env family, task, algorithm, run
    ``seed_<n>``, then ``step_<i>`` (``step_count``: env steps per seed; ``win_rate``: a
    one-element list) and ``absolute_metrics`` with the final win rate."""
    data: dict[str, Any] = {}
    for result in results:
        runs = data.setdefault(result.family, {}).setdefault(result.task, {})
        runs = runs.setdefault(result.algo, {})
        for seed in result.seeds:
            steps = {
                f"step_{i}": {"step_count": point.env_steps, "win_rate": [point.win_rate]}
                for i, point in enumerate(result.curves[seed])
            }
            absolute = {"win_rate": [result.finals[seed].win_rate]}
            runs[f"seed_{seed}"] = {**steps, "absolute_metrics": absolute}
    return data


def _write_json(path: Path, data: Any) -> None:
    """Write strict JSON (no NaN) atomically: readers never see half a file."""
    atomic_write(path, json.dumps(data, indent=2, allow_nan=False).encode())


# ---------------------------------------------------------------------------- markdown


def _cell(value: object) -> str:
    """A table cell: the value as one line of text, its pipes escaped."""
    return str(value).replace("|", "\\|").replace("\n", " ")


def format_table(headers: Sequence[object], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown (pipe) table of ``rows`` under ``headers``; cells are ``str``-ed with their
    pipes escaped, and columns padded so that the source reads as a table too."""
    cells = [[_cell(c) for c in headers], *([_cell(c) for c in row] for row in rows)]
    for row in cells[1:]:
        if len(row) != len(headers):
            raise ValueError(f"a row has {len(row)} cells for {len(headers)} columns: {row}")
    widths = [max(3, *(len(row[i]) for row in cells)) for i in range(len(headers))]

    def line(row: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"

    rule = "| " + " | ".join("-" * w for w in widths) + " |"
    return "\n".join([line(cells[0]), rule, *(line(row) for row in cells[1:])])


def _mean_pm_std(values: np.ndarray) -> str:
    """``mean ± std`` over seeds (ddof=0, as ``b2mapo train`` prints it), 3 decimals."""
    return f"{values.mean():.3f} ± {values.std():.3f}"


def _final_section(results: Sequence[RunResult]) -> str:
    """The table of final greedy win rates, map × algorithm."""
    algos = _algos(results)
    by_key = {(r.env, r.algo): r for r in results}
    rows = []
    for env in _maps(results):
        row: list[str] = [env]
        for algo in algos:
            result = by_key.get((env, algo))
            if result is None:
                row.append("–")
                continue
            mark = UNFINISHED_MARK if result.unfinished else ""
            row.append(f"{_mean_pm_std(result.final_wins())} (n={len(result.seeds)}){mark}")
        rows.append(row)
    notes = [
        "Greedy win rate of the policy that executes (π_ind for B2MAPO) in each run's final "
        "evaluation (summary.json): mean ± standard deviation over seeds (ddof=0, as "
        "`b2mapo train` prints it), n seeds."
    ]
    if any(r.unfinished for r in results):
        notes.append(
            f"{UNFINISHED_MARK} some seeds' runs are unfinished (no summary.json): their value "
            "is the last evaluation record, with fewer episodes and maybe fewer env steps."
        )
    return (
        "## Final greedy win rate\n\n"
        + format_table(["map", *algos], rows)
        + "\n\n"
        + ("\n\n".join(notes) + "\n")
    )


def _gap_section(results: Sequence[RunResult]) -> str:
    """B2MAPO's joint policy π against the policy that executes, π_ind, per map."""
    learned = [r for r in results if r.learned]
    title = "## B2MAPO: joint policy π vs executing policy π_ind\n\n"
    if not learned:
        return title + "No B2MAPO run (partition=learned) among the runs.\n"
    rows = []
    for result in learned:
        gaps = result.joint_gaps()
        wins = result.final_wins()
        if gaps is None:
            rows.append([result.env, result.algo, "n/a", _mean_pm_std(wins), "n/a", len(wins)])
            continue
        joints = gaps + wins
        rows.append(
            [
                result.env,
                result.algo,
                _mean_pm_std(joints),
                _mean_pm_std(wins),
                _mean_pm_std(gaps),
                len(wins),
            ]
        )
    headers = ["map", "algorithm", "π (joint)", "π_ind (executes)", "gap π − π_ind", "n"]
    note = (
        "Final greedy win rates, mean ± std over seeds; the gap is taken per seed. "
        "π acts batch by batch on the generator's DAGs (centralised); π_ind is distilled "
        "from it and executes decentralised."
    )
    return title + format_table(headers, rows) + "\n\n" + note + "\n"


def _estimate_cells(estimate: dict[str, float]) -> list[str]:
    """A point estimate and its interval as two table cells."""
    return [f"{estimate['point']:.3f}", f"[{estimate['low']:.3f}, {estimate['high']:.3f}]"]


def _aggregate_notes(stats: dict[str, Any]) -> list[str]:
    """What the aggregates left out or cut, and when their intervals mean little."""
    notes = []
    if stats["left_out_maps"]:
        missing = stats["missing_algos"]
        left_out = [f"{env} (no {', '.join(missing[env])})" for env in stats["left_out_maps"]]
        notes.append(
            f"Left out of the aggregates (not every algorithm has them): {', '.join(left_out)}."
        )
    for algo, counts in stats["seed_counts_per_map"].items():
        per_map = ", ".join(f"{n} on {env}" for n, env in zip(counts, stats["maps"], strict=True))
        notes.append(
            f"{algo} has different seed counts per map ({per_map}): the aggregates use its "
            f"smallest count, {stats['runs'][algo]}, on every map (its lowest-numbered seeds)."
        )
    if any(runs == 1 for runs in stats["runs"].values()):
        notes.append(
            "With one run per map the bootstrap has nothing to resample: that algorithm's "
            "intervals have zero width and say nothing about seed-to-seed variation."
        )
    return notes


def _aggregate_section(stats: dict[str, Any]) -> str:
    """rliable's IQM and probability of improvement, with what was left out and why."""
    title = "## Aggregate over maps and seeds (rliable)\n\n"
    if not stats["maps"]:
        return title + "No map has a run of every algorithm: no aggregate statistics.\n"
    percent = round(stats["confidence"] * 100)
    parts = [
        f"Final greedy win rates pooled over {len(stats['maps'])} map(s) "
        f"({', '.join(stats['maps'])}) and the seeds: interquartile mean (IQM) and "
        f"probability of improvement with {percent}% stratified-bootstrap confidence "
        f"intervals ({stats['reps']} replications, numpy seed {stats['bootstrap_seed']}).",
        format_table(
            ["algorithm", "runs per map", "IQM", f"{percent}% CI"],
            [[a, stats["runs"][a], *_estimate_cells(e)] for a, e in stats["iqm"].items()],
        ),
    ]
    target, poi = stats["target"], stats["probability_of_improvement"]
    if poi:
        rows = [[f"P({target} > {a})", *_estimate_cells(e)] for a, e in poi.items()]
        parts.append(format_table(["comparison", "probability", f"{percent}% CI"], rows))
        parts.append(
            f"P({target} > X): the probability that a run of {target} has a higher final win "
            "rate than a run of X on a map, averaged over the maps (0.5: no difference)."
        )
    else:
        parts.append(f"No probability of improvement: no {target} run or no other algorithm.")
    return title + "\n\n".join(parts + _aggregate_notes(stats)) + "\n"


def _figures_section(has_learned: bool) -> str:
    """Links to the figures, with what their axes mean."""
    lines = [
        "## Training curves",
        "",
        "Greedy evaluation win rate of the executing policy, mean over seeds and min-max band.",
        "",
        f"![win rate against env steps]({CURVE_FILES['env_steps']})",
        "",
        "Against wall time: seconds since each run started (compilation, training and "
        "evaluations), cumulative over resumptions, mean over the seeds at each evaluation.",
        "",
        f"![win rate against wall time]({CURVE_FILES['wall_time']})",
        "",
    ]
    if has_learned:
        lines += [
            "B2MAPO: mean number of batches K of the DAGs its generator sampled.",
            "",
            f"![number of batches K]({NUM_BATCHES_FILE})",
        ]
    else:
        lines.append("No B2MAPO run: no figure of the number of batches K.")
    return "\n".join(lines) + "\n"


def _runs_section(results: Sequence[RunResult]) -> str:
    """Which run directories and seeds each (map, algorithm) row comes from."""
    rows = []
    for result in results:
        dirs = dict.fromkeys(str(result.sources[s]) for s in result.seeds)
        rows.append([result.env, result.algo, ", ".join(map(str, result.seeds)), ", ".join(dirs)])
    return (
        "## Runs\n\n" + format_table(["map", "algorithm", "seeds", "run directories"], rows) + "\n"
    )


def report_markdown(
    results: Sequence[RunResult], stats: dict[str, Any], title: str, extra_markdown: str = ""
) -> str:
    """``report.md``: the tables, statistics, figure links, then ``extra_markdown``."""
    sections = [
        f"# {title}\n",
        _final_section(results),
        _gap_section(results),
        _aggregate_section(stats),
        _figures_section(any(r.learned for r in results)),
        _runs_section(results),
    ]
    if extra_markdown:
        sections.append(extra_markdown.rstrip("\n") + "\n")
    return "\n".join(sections)


def build_report(
    run_dirs: Sequence[Path],
    out_dir: Path,
    title: str = DEFAULT_TITLE,
    extra_markdown: str = "",
) -> Path:
    """Write the report of ``run_dirs`` into ``out_dir`` and return ``report.md``'s path.

    Files: ``curves_env_steps.png``, ``curves_wall_time.png``, ``num_batches.png`` (only
    with a B2MAPO run), ``results.json``, ``marl_eval.json`` and ``report.md``.
    ``ConfigError`` if rliable is missing or a run directory cannot be reported on.
    """
    _rliable()
    results = load_runs(run_dirs)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for x, name in CURVE_FILES.items():
        _save(curves_figure(results, x), out_dir / name)
    has_learned = any(r.learned for r in results)
    if has_learned:
        _save(num_batches_figure(results), out_dir / NUM_BATCHES_FILE)
    else:  # a figure left by an earlier report would contradict this one
        (out_dir / NUM_BATCHES_FILE).unlink(missing_ok=True)
    stats = aggregate_statistics(results, BOOTSTRAP_REPS, BOOTSTRAP_SEED)
    _write_json(out_dir / RESULTS_FILE, results_data(results, stats))
    _write_json(out_dir / MARL_EVAL_FILE, marl_eval_data(results))
    path = out_dir / REPORT_FILE
    atomic_write(path, report_markdown(results, stats, title, extra_markdown).encode())
    return path
