"""Run a suite: every (map, algorithm) run one after another with its seeds vmapped in one
program, finished runs skipped and interrupted ones resumed from their checkpoints, each
map's time tables measured in one process, then the report."""

from __future__ import annotations

import json
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console

from b2mapo.config import TrainConfig
from b2mapo.envs.registry import is_host, make_env
from b2mapo.errors import ConfigError
from b2mapo.reproduce.suites import MapSetting, Suite, get_suite
from b2mapo.reproduce.timing import decision_times, machine_info, round_times
from b2mapo.rundir import CONFIG_FILE, finished, write_json

SUITE_FILE = "suite.json"
TIMING_FILE = "timing.json"
# Relative cost of an env step per algorithm, for the ETA before this session has timed one
# (round time over MAPPO's on smax:3m, docs/algorithms.md).
STEP_COST = {
    "mappo": 1.0,
    "happo": 1.25,
    "a2po": 1.25,
    "b2mapo-fixed": 1.15,
    "b2mapo-frozen": 1.6,
    "b2mapo": 1.8,
    "b2mapo-paired": 2.1,
}


def _claim(out: Path, suite: Suite) -> None:
    """Record which suite ``out`` holds; refuse a directory that holds another one."""
    path = out / SUITE_FILE
    if path.is_file():
        held = json.loads(path.read_text()).get("suite")
        if held != suite.name:
            raise ConfigError(f"{out} holds the suite {held!r}, not {suite.name!r}")
        return
    out.mkdir(parents=True, exist_ok=True)
    record = {
        "suite": suite.name,
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": _commit(),
        "machine": machine_info(),
    }
    write_json(path, record)


def _commit() -> str:
    """The b2mapo source's git commit, or "unknown" outside a checkout."""
    try:
        result = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except OSError:
        return "unknown"
    return result.stdout.strip() or "unknown"


class Pace:
    """ETA of the runs left: seconds per unit of work of the runs trained so far, a run's
    work being its env steps x seeds x agents x its algorithm's relative step cost (the
    networks and most of an env step grow with the agents: 8m_vs_9m's step costs about
    three of 3m's)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.work = 0.0
        self._agents: dict[str, int] = {}

    def work_of(self, cfg: TrainConfig) -> float:
        if cfg.env not in self._agents:  # host envs (none in the shipped suites): 1
            self._agents[cfg.env] = 1 if is_host(cfg.env) else make_env(cfg.env).spec.num_agents
        agents = self._agents[cfg.env]
        return cfg.total_steps * cfg.seeds * agents * STEP_COST.get(cfg.algo, 1.5)

    def add(self, cfg: TrainConfig, seconds: float) -> None:
        self.seconds += seconds
        self.work += self.work_of(cfg)

    def eta(self, left: list[TrainConfig]) -> str:
        if not self.work:
            return "ETA after the first run"
        remaining = self.seconds / self.work * sum(self.work_of(c) for c in left)
        return f"ETA {remaining / 60:.0f} min"


def _time_tables(
    out: Path, setting: MapSetting, runs: dict[str, TrainConfig], console: Console
) -> dict[str, Any]:
    """The map's round and decision times, measured once (``timing.json``) in this process."""
    path = out / setting.slug / TIMING_FILE
    if path.is_file():
        return json.loads(path.read_text())
    console.print(f"[bold]timing[/] {setting.env}: rounds and decisions of {', '.join(runs)}")
    rounds = round_times(runs)
    decisions = decision_times({algo: Path(cfg.run_dir) for algo, cfg in runs.items()})
    table = {
        "env": setting.env,
        "algos": {algo: rounds[algo] | decisions[algo] for algo in runs},
        "machine": machine_info(),
    }
    write_json(path, table, allow_nan=True)
    return table


def run_suite(suite: Suite, out: Path, console: Console | None = None) -> Path:
    """Train every run of ``suite`` under ``out`` that is not finished, measure each map's
    time tables, and write the report; returns the report's path."""
    from b2mapo.runner import train

    console = console or Console()
    suite.validate()
    _claim(out, suite)
    runs = suite.runs(out)
    pace = Pace()
    started = time.perf_counter()
    tables = []
    for index, (setting, algo, cfg) in enumerate(runs, start=1):
        head = f"[{index}/{len(runs)}] {setting.env} {algo}"
        if finished(Path(cfg.run_dir)):
            console.print(f"{head}: finished, skipped")
        else:
            left = [c for _, _, c in runs[index - 1 :] if not finished(Path(c.run_dir))]
            elapsed = (time.perf_counter() - started) / 60
            console.print(
                f"[bold]{head}[/]: {cfg.seeds} seeds x {cfg.total_steps:,} env steps "
                f"({elapsed:.0f} min elapsed, {pace.eta(left)})"
            )
            run_started = time.perf_counter()
            train(cfg, console)
            pace.add(cfg, time.perf_counter() - run_started)
        last_of_map = index == len(runs) or runs[index][0] != setting
        if last_of_map:
            of_map = {a: c for m, a, c in runs if m == setting}
            tables.append(_time_tables(out, setting, of_map, console))
    return suite_report(suite, out, runs, tables)


def suite_report(
    suite: Suite,
    out: Path,
    runs: list[tuple[MapSetting, str, TrainConfig]],
    tables: list[dict[str, Any]],
) -> Path:
    """The report of ``suite``'s ``runs`` under ``out`` with its maps' time ``tables``: what
    ``reproduce`` writes, and ``report`` rebuilds from a suite directory."""
    from b2mapo.reproduce.report import build_report

    extra = time_tables_markdown(tables) if tables else ""
    extra += pictures_markdown(out, runs)
    if suite.recovery:
        from b2mapo.reproduce.recovery import write_recovery

        learned = next(cfg for _, _, cfg in runs if cfg.partition == "learned")
        extra += write_recovery(Path(learned.run_dir), out)
    extra += suite_markdown(suite, out)
    present = {(setting.env, algo) for setting, algo, _ in runs}
    missing = [f"{a} on {m.env}" for m, a, _ in suite.runs(out) if (m.env, a) not in present]
    if missing:
        extra += f"Not run (yet): {', '.join(missing)}.\n\n"
    run_dirs = [Path(cfg.run_dir) for _, _, cfg in runs]
    return build_report(
        run_dirs, out, title=f"b2mapo reproduce: suite {suite.name}", extra_markdown=extra
    )


def report_suite_dir(out: Path) -> Path:
    """Rebuild the report of the suite directory ``out`` (its ``suite.json`` names the suite)
    from the runs it holds and the time tables already measured; nothing is trained or
    timed. ``ConfigError`` if ``out`` holds no suite or no run of it."""
    path = out / SUITE_FILE
    if not path.is_file():
        raise ConfigError(f"{out} holds no suite ({SUITE_FILE}): not a reproduce directory")
    suite = get_suite(json.loads(path.read_text()).get("suite", ""))
    runs = [r for r in suite.runs(out) if (Path(r[2].run_dir) / CONFIG_FILE).is_file()]
    if not runs:
        raise ConfigError(f"{out} holds no run of the suite {suite.name!r}")
    timings = [out / m.slug / TIMING_FILE for m in suite.maps]
    tables = [json.loads(t.read_text()) for t in timings if t.is_file()]
    return suite_report(suite, out, runs, tables)


def _ratio(value: float, reference: float | None) -> str:
    return "-" if not reference else f"{value / reference:.2f}"


def time_tables_markdown(tables: list[dict[str, Any]]) -> str:
    """The paper's Table 1 and Table 2 layout: seconds and ratios to A2PO and MAPPO per map."""
    from b2mapo.reproduce.report import format_table

    sections = []
    for title, key, unit in (
        ("Training time per round (update phase; the paper's Table 1)", "update_s", 1.0),
        ("Execution time per decision, one env (the paper's Table 2)", "decision_s_1_envs", 1e3),
    ):
        rows = []
        for table in tables:
            algos = table["algos"]
            a2po = algos.get("a2po", {}).get(key)
            mappo = algos.get("mappo", {}).get(key)
            for algo, values in algos.items():
                value = values[key]
                rows.append(
                    [
                        table["env"],
                        algo,
                        f"{value * unit:.3f}",
                        _ratio(value, a2po),
                        _ratio(value, mappo),
                    ]
                )
        unit_name = "s" if unit == 1.0 else "ms"
        headers = ["map", "algorithm", unit_name, "x A2PO", "x MAPPO"]
        sections.append(f"## {title}\n\n{format_table(headers, rows)}\n")
    note = (
        "Measured after training, in one process per map, every algorithm's real training "
        "chunk (all seeds) and trained executing policy (π_ind for B2MAPO) timed round-robin; "
        "round seconds and per-env decision seconds at 64 envs are in each map's "
        f"`{TIMING_FILE}`.\n"
    )
    return "\n".join(sections) + "\n" + note + "\n"


def suite_time_tables(run_dirs: list[Path]) -> str:
    """The time tables of the suite maps the run directories belong to (a suite keeps a
    map's ``timing.json`` beside its runs), or nothing for runs trained outside a suite."""
    paths = dict.fromkeys(Path(d).resolve().parent / TIMING_FILE for d in run_dirs)
    tables = [json.loads(p.read_text()) for p in paths if p.is_file()]
    return time_tables_markdown(tables) if tables else ""


def pictures_markdown(out: Path, runs: list[tuple[MapSetting, str, TrainConfig]]) -> str:
    """Pictures of each map's B2MAPO run: its DAG over training (strip and GIF) and, on SMAX,
    one greedy episode of π acting batch by batch, allies coloured by batch."""
    from b2mapo.dag_plots import plot_dag_history
    from b2mapo.replay import replay

    lines = []
    for setting, algo, cfg in runs:
        if cfg.partition != "learned":
            continue
        run_dir = Path(cfg.run_dir)
        name = f"{setting.slug}_{algo}"
        strip, gif = plot_dag_history(run_dir, out / f"dag_{name}.png", out / f"dag_{name}.gif")
        lines += [
            f"### {setting.env}: {algo}'s learned DAG over training",
            "",
            f"![DAG over training]({strip.name}) (every evaluation: [{gif.name}]({gif.name}))",
            "",
        ]
        if setting.env.startswith("smax:"):
            episode = replay(run_dir, out / f"episode_{name}.gif", joint=True)
            lines += [f"One greedy episode of π, allies coloured by batch: ![]({episode.name})", ""]
    if not lines:
        return ""
    return "## The learned DAG\n\n" + "\n".join(lines) + "\n"


def suite_markdown(suite: Suite, out: Path) -> str:
    """What was run: the suite's maps, budgets, settings and where SMAX departs from SC2."""
    record = json.loads((out / SUITE_FILE).read_text())
    machine = record["machine"]
    lines = [
        "## The suite",
        "",
        f"`b2mapo reproduce --suite {suite.name} --out {out}` (commit {record['commit']}, "
        f"started {record['started']}; {machine['cpu_count']} CPUs, {machine['backend']}, "
        f"jax {machine['jax']}).",
        "",
        f"{suite.description}: {', '.join(suite.algos)}, {suite.seeds} seeds.",
        "",
    ]
    for setting in suite.maps:
        settings = {**suite.settings, **setting.settings}
        text = ", ".join(f"{k}={v}" for k, v in settings.items())
        lines.append(f"- {setting.env}: {setting.total_steps:,} env steps per seed; {text}")
        for algo, values in setting.algo_settings.items():
            lines.append(f"  - {algo}: " + ", ".join(f"{k}={v}" for k, v in values.items()))
        if setting.note:
            lines.append(f"  - {setting.note}")
    return "\n".join(lines) + "\n"
