"""``b2mapo reproduce``: suites are validated before anything runs, finished runs are skipped,
interrupted ones resume, and a whole suite ends in a report with its time tables."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from b2mapo import rundir, runner
from b2mapo.cli import main
from b2mapo.config import ConfigError
from b2mapo.reproduce import report, schedule
from b2mapo.reproduce.suites import SUITES, MapSetting, Suite, get_suite
from tests.conftest import TINY

real_build_report = report.build_report

# A suite of two algorithms on probe:walk at the tests' tiny sizes (the session's trained
# B2MAPO run's config): seconds per run.
TINY_SUITE = Suite(
    name="tiny",
    description="tests",
    maps=(MapSetting("probe:walk", TINY["total_steps"]),),
    algos=("mappo", "b2mapo"),
    seeds=1,  # the other tests' tiny programs: compiled once per session (shared cache)
    settings={k: v for k, v in TINY.items() if k not in ("env", "total_steps")} | {"dag_period": 4},
)


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"algos": ("mappo", "ppo2")}, "ppo2"),
        ({"maps": (MapSetting("smax:4m", 1000),)}, "smax:4m"),
        ({"settings": {"learning_rate": 1e-3}}, "learning_rate"),
        ({"maps": (MapSetting("smax:3m", 1000, {"gamma": 2.0}),)}, "gamma=2.0"),
        ({"maps": (MapSetting("smax:3m", 1000, algo_settings={"happo": {"epochs": 5}}),)}, "happo"),
        ({"algos": ("mappo",), "recovery": True}, "recovery scores one B2MAPO run"),
    ],
)
def test_a_bad_suite_is_refused_before_anything_runs(
    change: dict, named: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unknown algorithm, map or field, a bad value, or settings for an algorithm the
    suite does not run: a one-line error naming it, and no run is started."""
    monkeypatch.setattr(runner, "train", lambda *a, **k: pytest.fail("a run started"))
    with pytest.raises(ConfigError, match=named) as error:
        schedule.run_suite(dataclasses.replace(TINY_SUITE, **change), tmp_path / "out")
    assert "\n" not in str(error.value) and "tiny" in str(error.value)
    assert not (tmp_path / "out").exists()


def test_the_shipped_suites_are_valid() -> None:
    """Every shipped suite builds all its runs' configs; cpu-small has 8m_vs_9m and the four
    algorithms with 3 seeds or more; unknown suite names are refused by name."""
    for suite in SUITES.values():
        suite.validate()
    cpu_small = get_suite("cpu-small")
    assert "smax:8m_vs_9m" in [m.env for m in cpu_small.maps]
    assert set(cpu_small.algos) == {"mappo", "happo", "a2po", "b2mapo"}
    assert cpu_small.seeds >= 3
    with pytest.raises(ConfigError, match=r"nope.*cpu-small"):
        get_suite("nope")


def _without_time_tables_and_report(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Stand-ins for the map's time tables, the DAG pictures and the report (the slow
    end-to-end test below and CI's smoke suite make the real ones); the list records the
    runs whose time tables were measured."""
    measured: list[str] = []

    def round_times(runs: dict) -> dict:
        measured.extend(runs)
        return {algo: {"round_s": 1.0, "update_s": 1.0} for algo in runs}

    monkeypatch.setattr(schedule, "round_times", round_times)
    monkeypatch.setattr(
        schedule,
        "decision_times",
        lambda dirs: {algo: {"decision_s_1_envs": 1e-3} for algo in dirs},
    )
    monkeypatch.setattr(schedule, "pictures_markdown", lambda out, runs: "")
    monkeypatch.setattr(report, "build_report", lambda runs, out, **_: out / "report.md")
    return measured


def test_an_interrupted_suite_resumes_without_redoing_finished_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed between runs: the rerun trains only the runs left. Killed inside a run, after
    its last checkpoint but before its summary: the rerun resumes that run from the
    checkpoint and leaves the finished one alone. The map's time tables are measured once,
    after its last run."""
    out = tmp_path / "out"
    measured = _without_time_tables_and_report(monkeypatch)
    trained: list[str] = []
    real_train = runner.train

    def train_then_stop(cfg, console=None):
        if trained:  # the second run: killed before it starts
            raise KeyboardInterrupt
        trained.append(cfg.algo)
        return real_train(cfg, console)

    monkeypatch.setattr(runner, "train", train_then_stop)
    with pytest.raises(KeyboardInterrupt):
        schedule.run_suite(TINY_SUITE, out)
    first = out / "probe_walk" / "mappo" / rundir.SUMMARY_FILE
    assert trained == ["mappo"] and first.is_file() and measured == []
    finished_at = first.stat().st_mtime_ns

    resumed: list[str] = []

    def train_recorded(cfg, console=None):
        resumed.append(cfg.algo)
        return real_train(cfg, console)

    monkeypatch.setattr(runner, "train", train_recorded)
    schedule.run_suite(TINY_SUITE, out)
    assert resumed == ["b2mapo"] and measured == list(TINY_SUITE.algos)
    assert first.stat().st_mtime_ns == finished_at

    # Inside a run: its checkpoints stay, its summary is gone.
    (out / "probe_walk" / "b2mapo" / rundir.SUMMARY_FILE).unlink()
    resumed.clear()
    schedule.run_suite(TINY_SUITE, out)
    assert resumed == ["b2mapo"] and measured == list(TINY_SUITE.algos)  # timing.json kept
    lines = (out / "probe_walk" / "b2mapo" / rundir.METRICS_FILE).read_text().splitlines()
    records = [json.loads(line) for line in lines]
    trained_points = [(r["update"], r["seed"]) for r in records if r["kind"] == "train"]
    updates = TINY["total_steps"] // (TINY["num_envs"] * TINY["rollout_len"])
    assert len(trained_points) == len(set(trained_points)) == updates * TINY_SUITE.seeds


def test_report_of_a_suite_directory_rebuilds_the_suites_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``b2mapo report OUT`` on what ``reproduce`` wrote builds the same report (the same runs
    and sections) without training or timing anything; a run not there is named."""
    out = tmp_path / "out"
    measured = _without_time_tables_and_report(monkeypatch)
    built: list[tuple[list[Path], dict]] = []

    def record(runs: list[Path], out: Path, **kwargs: object) -> Path:
        built.append((runs, kwargs))
        return out / "report.md"

    monkeypatch.setattr(report, "build_report", record)
    monkeypatch.setitem(SUITES, TINY_SUITE.name, TINY_SUITE)
    schedule.run_suite(TINY_SUITE, out)
    main(["report", str(out)])
    assert len(built) == 2 and built[1] == built[0]
    assert "Training time per round" in built[0][1]["extra_markdown"]
    assert measured == list(TINY_SUITE.algos)  # timed once, by reproduce
    trained = {p.name: p.stat().st_mtime_ns for p in (out / "probe_walk").rglob("*")}
    main(["report", str(out)])
    assert {p.name: p.stat().st_mtime_ns for p in (out / "probe_walk").rglob("*")} == trained

    for path in sorted((out / "probe_walk" / "b2mapo").rglob("*"), reverse=True):
        path.rmdir() if path.is_dir() else path.unlink()
    main(["report", str(out)])
    assert built[-1][0] == [out / "probe_walk" / "mappo"]
    assert "Not run (yet): b2mapo on probe:walk." in built[-1][1]["extra_markdown"]


def test_report_finds_the_run_directories_below_a_directory(tmp_path: Path) -> None:
    (tmp_path / "a" / "run1").mkdir(parents=True)
    (tmp_path / "a" / "run1" / rundir.CONFIG_FILE).write_text("{}")
    (tmp_path / "a" / "b" / "run2").mkdir(parents=True)
    (tmp_path / "a" / "b" / "run2" / rundir.CONFIG_FILE).write_text("{}")
    found = rundir.find_run_dirs([tmp_path / "a", tmp_path / "a" / "run1", tmp_path / "none"])
    assert found == [
        tmp_path / "a" / "b" / "run2",
        tmp_path / "a" / "run1",
        tmp_path / "a" / "run1",
        tmp_path / "none",
    ]


def test_reproduce_without_a_suite_lists_them_and_exits_2(capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["reproduce"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("b2mapo reproduce: error: choose a suite with --suite NAME, one of: ")
    assert "cpu-small" in err and "dag-ablation" in err and err.count("\n") == 1


@pytest.mark.slow
def test_a_suite_ends_in_a_report_with_its_time_tables(tmp_path: Path) -> None:
    """A whole suite: its runs, the map's measured time tables, the report with the DAG's
    pictures; ``b2mapo report`` on the suite's runs finds the time tables beside them."""
    out = tmp_path / "out"
    report_path = schedule.run_suite(TINY_SUITE, out)
    timing = json.loads((out / "probe_walk" / schedule.TIMING_FILE).read_text())
    for algo in TINY_SUITE.algos:
        assert timing["algos"][algo]["round_s"] > 0
        assert timing["algos"][algo]["decision_s_1_envs"] > 0
    text = report_path.read_text()
    assert "Training time per round" in text and "Execution time per decision" in text
    assert "b2mapo reproduce --suite tiny" in text
    assert "learned DAG over training" in text and (out / "dag_probe_walk_b2mapo.gif").is_file()
    runs = [str(out / "probe_walk" / algo) for algo in TINY_SUITE.algos]
    main(["report", *runs, "--out", str(tmp_path / "rebuilt")])
    rebuilt = (tmp_path / "rebuilt" / "report.md").read_text()
    assert "Training time per round" in rebuilt and "mappo" in rebuilt


def test_the_recovery_suite_writes_its_scores_table_and_figure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The recovery suite's machinery on probe:coupled at the tiny sizes, 2 seeds: one
    ``recovery.json`` entry per seed with the final scores, the figure, and the table in the
    report. The shipped suite is the same on 400k env steps and 3 seeds."""
    shipped = get_suite("recovery")
    assert shipped.recovery and shipped.seeds == 3 and shipped.maps[0].env == "probe:coupled"
    assert shipped.maps[0].total_steps == 400_000
    _without_time_tables_and_report(monkeypatch)
    monkeypatch.setattr(report, "build_report", real_build_report)
    suite = dataclasses.replace(
        TINY_SUITE,
        name="recovery-tiny",
        maps=(MapSetting("probe:coupled", TINY["total_steps"]),),
        algos=("b2mapo",),
        seeds=2,
        recovery=True,
    )
    out = tmp_path / "out"
    text = schedule.run_suite(suite, out).read_text()
    scores = json.loads((out / "recovery.json").read_text())
    assert list(scores) == ["seeds"] and len(scores["seeds"]) == 2
    for seed in scores["seeds"]:
        assert {"true_separated", "true_kept", "other_kept"} <= set(seed)
        assert all(0.0 <= seed[k] <= 1.0 for k in ("true_separated", "true_kept", "other_kept"))
    assert (out / "recovery.png").stat().st_size > 0
    assert "Dependency recovery: probe:coupled" in text and "| median" in text


def test_the_eta_weighs_runs_by_their_env_steps_seeds_and_agents() -> None:
    """After a 3-agent run, a run of the same algorithm with 8 agents and 2.5 x the env steps
    is expected to take 8 / 3 x 2.5 as long."""
    pace = schedule.Pace()
    assert pace.eta([]) == "ETA after the first run"
    runs = get_suite("cpu-small").runs(Path("unused"))
    three, eight = (
        next(cfg for _, algo, cfg in runs if cfg.env == env and algo == "mappo")
        for env in ("smax:3m", "smax:8m_vs_9m")
    )
    pace.add(three, 60.0 * three.total_steps / 600_000)
    expected = 8 / 3 * eight.total_steps / 600_000
    assert pace.eta([eight]) == f"ETA {expected:.0f} min"


def test_an_output_directory_of_another_suite_is_refused(tmp_path: Path) -> None:
    """Resuming into a directory that holds another suite's runs is refused by name."""
    out = tmp_path / "out"
    out.mkdir()
    (out / schedule.SUITE_FILE).write_text(json.dumps({"suite": "cpu-small"}))
    with pytest.raises(ConfigError, match="cpu-small"):
        schedule.run_suite(TINY_SUITE, out)
