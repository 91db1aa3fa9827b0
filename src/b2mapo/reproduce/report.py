"""The comparison report of ``b2mapo report RUN_DIR...`` and ``b2mapo reproduce``.

From the runs (``runs``: run directories, those of one (env, algorithm) merged as more seeds)
and their statistics (``stats``), it writes into one output directory: greedy evaluation
curves against env steps and cumulative wall time, B2MAPO's number of batches K,
``results.json`` (the raw data and the statistics), ``marl_eval.json`` (InstaDeep
marl-eval's layout) and ``report.md``: final win rates per map, B2MAPO's π vs π_ind gap, and
rliable's interquartile mean and probability of improvement with stratified-bootstrap
confidence intervals.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import EngFormatter

from b2mapo.plots import Curve
from b2mapo.reproduce.runs import (
    RunResult,
    algos_of,
    eval_curve,
    load_runs,
    maps_of,
    num_batches_curve,
)
from b2mapo.reproduce.stats import (
    BOOTSTRAP_REPS,
    BOOTSTRAP_SEED,
    aggregate_statistics,
    rliable_modules,
)
from b2mapo.rundir import atomic_write, write_json

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
UNFINISHED_MARK = "†"


# ---------------------------------------------------------------------------- figures


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
    algos = algos_of(results)
    maps = maps_of(results)
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
    algos = algos_of(results)
    maps = maps_of(learned)
    figure, axes = _panel_grid(len(maps))
    for ax, env in zip(axes, maps, strict=True):
        for result in (r for r in learned if r.env == env):
            found = num_batches_curve(result)
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
    algos = algos_of(results)
    by_key = {(r.env, r.algo): r for r in results}
    rows = []
    for env in maps_of(results):
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
    poi = stats["probability_of_improvement"]
    if poi:
        rows = [[f"P({pair})", *_estimate_cells(e)] for pair, e in poi.items()]
        parts.append(format_table(["comparison", "probability", f"{percent}% CI"], rows))
        parts.append(
            "P(A > B): the probability that a run of A has a higher final win rate than a run "
            "of B on a map, averaged over the maps (0.5: no difference)."
        )
    else:
        parts.append("No probability of improvement: only one algorithm.")
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
    rliable_modules()  # missing: fail before any work
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
    write_json(out_dir / RESULTS_FILE, results_data(results, stats))
    write_json(out_dir / MARL_EVAL_FILE, marl_eval_data(results))
    path = out_dir / REPORT_FILE
    atomic_write(path, report_markdown(results, stats, title, extra_markdown).encode())
    return path
