"""The report of ``b2mapo report`` / ``reproduce`` on hand-written run directories: tables,
rliable's statistics, figures, merging and refusing runs, wall time, marl-eval's layout."""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from matplotlib.image import imread

from b2mapo import checkpoint
from b2mapo.config import resolve
from b2mapo.errors import ConfigError
from b2mapo.reproduce import report
from b2mapo.reproduce.runs import Final, eval_curve, load_runs
from b2mapo.reproduce.stats import Estimate, iqm_estimates
from b2mapo.rundir import METRICS_FILE, SUMMARY_FILE

STEPS = 4096  # env steps per update of the default config: 64 envs x 64 steps
UPDATES = 5


@pytest.fixture(autouse=True)
def fewer_bootstrap_reps(monkeypatch: pytest.MonkeyPatch) -> None:
    """Reports of these tests resample 400 times instead of 2000: the checked values are
    exact or loose bounds, and the bootstrap is most of a report's time."""
    monkeypatch.setattr(report, "BOOTSTRAP_REPS", 400)


def make_run(
    root: Path,
    name: str,
    finals: list[float],
    *,
    env: str = "smax:3m",
    algo: str = "mappo",
    seed: int = 0,
    joint_finals: list[float] | None = None,
    summary: bool = True,
    evals: bool = True,
    wall_times: list[float] | None = None,
    overrides: dict[str, Any] | None = None,
) -> Path:
    """A run directory with config.json, metrics.jsonl (UPDATES updates, an evaluation after
    each) and, if ``summary``, summary.json. Seed i's greedy win rate at update u is
    ``finals[i] * u / UPDATES``; train records at update u have wall time ``wall_times[u-1]``
    (default 10 u), the evaluation after it one second more."""
    run_dir = root / name
    seeds = len(finals)
    values = {"env": env, "algo": algo, "seeds": seeds, "seed": seed, "total_steps": 20480}
    cfg = resolve({**values, **(overrides or {}), "out": str(run_dir)})
    checkpoint.save_config(run_dir, cfg)
    wall_times = wall_times or [10.0 * u for u in range(1, UPDATES + 1)]
    learned = cfg.partition == "learned"
    lines = []
    for u in range(1, UPDATES + 1):
        base = {"update": u, "env_steps": u * STEPS}
        for s in range(seeds):
            train = {**base, "kind": "train", "wall_time": wall_times[u - 1], "seed": seed + s}
            train |= {"win_rate": 0.5, "num_batches": 2.0}
            if learned:
                train["dag_num_batches"] = 1.0 + u / UPDATES + s / 10
            lines.append(train)
        for s in range(seeds):
            if not evals:
                continue
            record = {**base, "kind": "eval", "wall_time": wall_times[u - 1] + 1.0}
            record |= {"seed": seed + s, "greedy_win_rate": finals[s] * u / UPDATES}
            record |= {"greedy_episode_return": 1.0, "sampled_win_rate": 0.1}
            if learned:
                record["greedy_joint_win_rate"] = (joint_finals or finals)[s] * u / UPDATES
            lines.append(record)
    (run_dir / METRICS_FILE).write_text("".join(json.dumps(r) + "\n" for r in lines))
    if summary:
        greedy: dict[str, list[float]] = {"win_rate": finals, "episode_return": [1.0] * seeds}
        if learned:
            greedy["joint_win_rate"] = joint_finals or finals
        result = {
            "env_steps": UPDATES * STEPS,
            "eval_greedy": greedy,
            "eval_sampled": {"win_rate": [0.1] * seeds},
            "episodes_per_seed": 400,
            "train_seconds": 60.0,
        }
        (run_dir / SUMMARY_FILE).write_text(json.dumps(result))
    return run_dir


def table_row(markdown: str, first_cell: str, after: str = "") -> list[str]:
    """The cells of the first Markdown table row (after the text ``after``) whose first cell
    is ``first_cell``."""
    for line in markdown[markdown.index(after) :].splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0] == first_cell:
            return cells
    raise AssertionError(f"no table row {first_cell!r} in:\n{markdown}")


def assert_png(path: Path) -> None:
    image = imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100, image.shape
    assert image.std() > 0.01, f"{path} is blank"


def test_final_table_is_mean_and_std_over_seeds(tmp_path: Path) -> None:
    runs = [
        make_run(tmp_path, "mappo", [0.5, 0.7]),
        make_run(tmp_path, "b2mapo", [0.2, 0.4, 0.9], algo="b2mapo"),
        make_run(tmp_path, "mappo8", [0.25, 0.25], env="smax:8m"),
    ]
    text = report.build_report(runs, tmp_path / "out").read_text()
    header = table_row(text, "map", "## Final greedy win rate")
    assert header == ["map", "mappo", "b2mapo"]
    # b2mapo: mean 0.5, std sqrt((0.09 + 0.01 + 0.16) / 3) = 0.2944
    row = table_row(text, "smax:3m", "## Final greedy win rate")
    assert row == ["smax:3m", "0.600 ± 0.100 (n=2)", "0.500 ± 0.294 (n=3)"]
    assert table_row(text, "smax:8m", "## Final greedy win rate") == [
        "smax:8m",
        "0.250 ± 0.000 (n=2)",
        "–",
    ]
    data = json.loads((tmp_path / "out" / "results.json").read_text())
    final = data["envs"]["smax:3m"]["b2mapo"]["final_win_rate"]
    assert final == pytest.approx({"mean": 0.5, "std": 0.2943920, "n": 3})
    assert data["envs"]["smax:3m"]["mappo"]["seeds"] == [0, 1]


def test_iqm_of_a_hand_computed_case(tmp_path: Path) -> None:
    """IQM of 0.1, 0.2, 0.3, 0.9 drops one score at each end: 0.25 (the mean is 0.375)."""
    run = make_run(tmp_path, "mappo", [0.1, 0.2, 0.3, 0.9])
    text = report.build_report([run], tmp_path / "out").read_text()
    stats = json.loads((tmp_path / "out" / "results.json").read_text())["aggregate"]
    assert stats["iqm"]["mappo"]["point"] == pytest.approx(0.25)
    assert stats["runs"] == {"mappo": 4}
    low, high = stats["iqm"]["mappo"]["low"], stats["iqm"]["mappo"]["high"]
    assert 0.1 <= low < 0.25 < high <= 0.9
    assert table_row(text, "mappo", "## Aggregate")[2] == "0.250"


def test_iqm_estimates_directly() -> None:
    """Four equal scores: IQM and both interval ends are that score. Two tasks pooled: eight
    scores, the middle four averaged."""
    equal = iqm_estimates({"a": np.full((4, 1), 0.5)})["a"]
    assert equal == pytest.approx(Estimate(0.5, 0.5, 0.5))
    two_tasks = np.array([[0.0, 0.4], [0.1, 0.5], [0.2, 0.6], [0.3, 1.0]])
    assert iqm_estimates({"a": two_tasks})["a"].point == pytest.approx(0.35)


def test_probability_of_improvement(tmp_path: Path) -> None:
    """For every pair, in the report's order (mappo, happo, b2mapo): 1 when every score of
    the later beats every score of the earlier, 0 when none does."""
    runs = [
        make_run(tmp_path, "b2mapo", [0.8, 0.9], algo="b2mapo"),
        make_run(tmp_path, "mappo", [0.1, 0.2]),
        make_run(tmp_path, "happo", [0.95, 0.99], algo="happo"),
    ]
    text = report.build_report(runs, tmp_path / "out").read_text()
    poi = json.loads((tmp_path / "out" / "results.json").read_text())["aggregate"]
    poi = poi["probability_of_improvement"]
    assert list(poi) == ["happo > mappo", "b2mapo > mappo", "b2mapo > happo"]
    assert poi["happo > mappo"] == pytest.approx({"point": 1.0, "low": 1.0, "high": 1.0})
    assert poi["b2mapo > mappo"] == pytest.approx({"point": 1.0, "low": 1.0, "high": 1.0})
    assert poi["b2mapo > happo"] == pytest.approx({"point": 0.0, "low": 0.0, "high": 0.0})
    assert table_row(text, "P(b2mapo > mappo)") == ["P(b2mapo > mappo)", "1.000", "[1.000, 1.000]"]


def test_files_and_figures(tmp_path: Path) -> None:
    runs = [
        make_run(tmp_path, "m3", [0.5, 0.7]),
        make_run(tmp_path, "b3", [0.6, 0.8], algo="b2mapo"),
        make_run(tmp_path, "m8", [0.2, 0.3], env="smax:8m"),
        make_run(tmp_path, "b8", [0.4, 0.1], env="smax:8m", algo="b2mapo"),
    ]
    out = tmp_path / "out"
    path = report.build_report(runs, out, title="My title", extra_markdown="## Times\n\nx\n")
    assert path == out / "report.md"
    for name in ("curves_env_steps.png", "curves_wall_time.png", "num_batches.png"):
        assert_png(out / name)
    text = path.read_text()
    assert text.startswith("# My title\n")
    assert text.rstrip().endswith("## Times\n\nx")
    for name in ("curves_env_steps.png", "curves_wall_time.png", "num_batches.png"):
        assert f"]({name})" in text
    data = json.loads((out / "results.json").read_text())
    assert set(data["envs"]) == {"smax:3m", "smax:8m"}
    k = data["envs"]["smax:3m"]["b2mapo"]["num_batches"]["1"]
    assert k[0] == [STEPS, pytest.approx(1.3)]
    assert json.loads((out / "marl_eval.json").read_text())["smax"]["8m"]["b2mapo"]


def test_no_b2mapo_run_no_k_figure(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "num_batches.png").write_bytes(b"stale")
    text = report.build_report([make_run(tmp_path, "m", [0.5])], out).read_text()
    assert not (out / "num_batches.png").exists()
    assert "No B2MAPO run: no figure of the number of batches K." in text
    assert "No B2MAPO run (partition=learned)" in text
    assert "No probability of improvement" in text


def test_joint_and_executing_policy_gap(tmp_path: Path) -> None:
    run = make_run(tmp_path, "b", [0.6, 0.8], algo="b2mapo", joint_finals=[0.9, 0.9])
    text = report.build_report([run], tmp_path / "out").read_text()
    row = table_row(text, "smax:3m", "## B2MAPO: joint policy")
    assert row == ["smax:3m", "b2mapo", "0.900 ± 0.000", "0.700 ± 0.100", "0.200 ± 0.100", "2"]
    (result,) = load_runs([run])
    assert result.joint_gaps() == pytest.approx([0.3, 0.1])


def test_merging_two_run_dirs_adds_seeds(tmp_path: Path) -> None:
    first = make_run(tmp_path, "a", [0.1, 0.2], seed=0)
    second = make_run(tmp_path, "b", [0.3, 0.4], seed=2)
    (merged,) = load_runs([first, second])
    assert merged.seeds == [0, 1, 2, 3]
    assert merged.sources == {0: first, 1: first, 2: second, 3: second}
    np.testing.assert_allclose(merged.final_wins(), [0.1, 0.2, 0.3, 0.4])
    text = report.build_report([first, second], tmp_path / "out").read_text()
    assert table_row(text, "smax:3m")[1] == "0.250 ± 0.112 (n=4)"


def test_duplicate_seeds_are_refused(tmp_path: Path) -> None:
    first = make_run(tmp_path, "first", [0.1, 0.2])
    second = make_run(tmp_path, "second", [0.3], seed=1)
    with pytest.raises(ConfigError, match="seed 1 of mappo") as error:
        load_runs([first, second])
    assert str(first) in str(error.value) and str(second) in str(error.value)


def test_merging_different_configs_is_refused(tmp_path: Path) -> None:
    first = make_run(tmp_path, "first", [0.1])
    second = make_run(tmp_path, "second", [0.3], seed=1, overrides={"lr": 5e-4})
    with pytest.raises(ConfigError, match=r"lr 0\.002 vs 0\.0005") as error:
        load_runs([first, second])
    assert str(first) in str(error.value) and str(second) in str(error.value)


def test_runs_that_cannot_be_reported_are_refused(tmp_path: Path) -> None:
    no_evals = make_run(tmp_path, "no-evals", [0.5], evals=False, summary=False)
    with pytest.raises(ConfigError, match="no evaluation records") as error:
        load_runs([no_evals])
    assert str(no_evals) in str(error.value)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError, match=r"no config\.json") as error:
        load_runs([make_run(tmp_path, "good", [0.5]), empty])
    assert str(empty) in str(error.value)
    broken = make_run(tmp_path, "broken", [0.5])
    with (broken / METRICS_FILE).open("a") as f:
        f.write("{not json\n")
    with pytest.raises(ConfigError, match="is not JSON") as error:
        load_runs([broken])
    assert str(broken) in str(error.value)


def test_unfinished_run_uses_its_last_evaluation(tmp_path: Path) -> None:
    run = make_run(tmp_path, "unfinished", [0.4, 0.6], summary=False)
    (result,) = load_runs([run])
    assert result.unfinished
    assert result.finals[1] == Final(0.6, None, UPDATES * STEPS, False)
    text = report.build_report([run], tmp_path / "out").read_text()
    assert table_row(text, "smax:3m")[1] == f"0.500 ± 0.100 (n=2){report.UNFINISHED_MARK}"
    assert "unfinished (no summary.json)" in text
    finished = make_run(tmp_path, "finished", [0.4, 0.6])
    assert not load_runs([finished])[0].unfinished


def test_different_seed_counts_and_missing_maps(tmp_path: Path) -> None:
    """b2mapo has 3 seeds on 3m and 2 on 8m: the aggregates use its first 2 seeds everywhere
    (IQM of 0.8, 0.9 on 3m and 0.6, 0.7 on 8m: 0.75); happo lacks 8m: left out, with happo."""
    runs = [
        make_run(tmp_path, "b3", [0.8, 0.9, 0.0], algo="b2mapo"),
        make_run(tmp_path, "b8", [0.6, 0.7], env="smax:8m", algo="b2mapo"),
        make_run(tmp_path, "m3", [0.1, 0.2]),
        make_run(tmp_path, "m8", [0.1, 0.2], env="smax:8m"),
    ]
    text = report.build_report(runs, tmp_path / "out").read_text()
    stats = json.loads((tmp_path / "out" / "results.json").read_text())["aggregate"]
    assert stats["maps"] == ["smax:3m", "smax:8m"] and stats["left_out_maps"] == []
    assert stats["runs"] == {"mappo": 2, "b2mapo": 2}
    assert stats["seed_counts_per_map"] == {"b2mapo": [3, 2]}
    assert stats["iqm"]["b2mapo"]["point"] == pytest.approx(0.75)
    assert "b2mapo has different seed counts per map (3 on smax:3m, 2 on smax:8m)" in text
    assert "smallest count, 2" in text

    runs.append(make_run(tmp_path, "h3", [0.5], algo="happo"))
    text = report.build_report(runs, tmp_path / "out2").read_text()
    stats = json.loads((tmp_path / "out2" / "results.json").read_text())["aggregate"]
    assert stats["maps"] == ["smax:3m"] and stats["left_out_maps"] == ["smax:8m"]
    assert stats["seed_counts_per_map"] == {}
    assert "Left out of the aggregates (not every algorithm has them): smax:8m (no happo)." in text


def test_one_seed_per_run(tmp_path: Path) -> None:
    runs = [
        make_run(tmp_path, "b", [0.9], algo="b2mapo"),
        make_run(tmp_path, "m", [0.5]),
    ]
    text = report.build_report(runs, tmp_path / "out").read_text()
    stats = json.loads((tmp_path / "out" / "results.json").read_text())["aggregate"]
    assert stats["iqm"]["b2mapo"] == pytest.approx({"point": 0.9, "low": 0.9, "high": 0.9})
    assert stats["probability_of_improvement"]["b2mapo > mappo"]["point"] == pytest.approx(1.0)
    assert table_row(text, "smax:3m")[1:] == ["0.500 ± 0.000 (n=1)", "0.900 ± 0.000 (n=1)"]
    assert "nothing to resample" in text


def test_wall_time_of_a_resumed_run(tmp_path: Path) -> None:
    """Resumed after update 3: the run writes wall times cumulative over resumptions, and the
    report reads them as written (as ``b2mapo curves`` does): evaluations at 11 ... 47 s."""
    run = make_run(tmp_path, "resumed", [0.5, 1.0], wall_times=[10, 20, 30, 36, 46])
    (result,) = load_runs([run])
    for seed in (0, 1):
        assert [p.wall_time for p in result.curves[seed]] == [11, 21, 31, 37, 47]
    wall = eval_curve(result, "wall_time")
    np.testing.assert_allclose(wall.steps, [11, 21, 31, 37, 47])
    np.testing.assert_allclose(wall.mean, np.arange(1, 6) / 5 * 0.75)
    np.testing.assert_allclose(wall.high, np.arange(1, 6) / 5)
    np.testing.assert_allclose(eval_curve(result).steps, np.arange(1, 6) * STEPS)


def test_marl_eval_layout(tmp_path: Path) -> None:
    runs = [
        make_run(tmp_path, "m", [0.5, 1.0], seed=5),
        make_run(tmp_path, "b", [0.25], env="smax:8m", algo="b2mapo", joint_finals=[0.75]),
    ]
    report.build_report(runs, tmp_path / "out")
    data = json.loads((tmp_path / "out" / "marl_eval.json").read_text())
    assert set(data) == {"smax"}
    assert set(data["smax"]) == {"3m", "8m"}
    assert set(data["smax"]["3m"]) == {"mappo"}
    assert set(data["smax"]["3m"]["mappo"]) == {"seed_5", "seed_6"}
    expected = {
        f"step_{i}": {"step_count": (i + 1) * STEPS, "win_rate": [pytest.approx((i + 1) / 5)]}
        for i in range(UPDATES)
    }
    expected["absolute_metrics"] = {"win_rate": [1.0]}
    assert data["smax"]["3m"]["mappo"]["seed_6"] == expected
    b2mapo = data["smax"]["8m"]["b2mapo"]["seed_0"]
    assert b2mapo["absolute_metrics"] == {"win_rate": [0.25]}  # π_ind, the executing policy
    assert b2mapo["step_4"] == {"step_count": 5 * STEPS, "win_rate": [0.25]}


def test_statistics_are_reproducible_and_leave_numpy_alone(tmp_path: Path) -> None:
    runs = [
        make_run(tmp_path, "b", [0.3, 0.9, 0.5, 0.7], algo="b2mapo"),
        make_run(tmp_path, "m", [0.2, 0.6, 0.4, 0.8]),
    ]
    np.random.seed(123)
    expected = np.random.rand()
    np.random.seed(123)
    report.build_report(runs, tmp_path / "one")
    assert np.random.rand() == expected
    report.build_report(runs, tmp_path / "two")
    one, two = (json.loads((tmp_path / d / "results.json").read_text()) for d in ("one", "two"))
    assert one["aggregate"] == two["aggregate"]
    assert one["aggregate"]["iqm"]["b2mapo"]["low"] < one["aggregate"]["iqm"]["b2mapo"]["high"]


def test_missing_rliable_is_a_config_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = make_run(tmp_path, "m", [0.5])
    for name in ("rliable", "rliable.library", "rliable.metrics"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(ConfigError, match=r"need rliable: pip install -e '\.\[report\]'"):
        report.build_report([run], tmp_path / "out")
    assert not (tmp_path / "out").exists()
    # The modules themselves import rliable only inside functions.
    for module in ("report.py", "stats.py"):
        tree = ast.parse((Path(report.__file__).parent / module).read_text())
        top_level = [
            alias.name if isinstance(node, ast.Import) else node.module
            for node in tree.body
            if isinstance(node, ast.Import | ast.ImportFrom)
            for alias in node.names
        ]
        assert top_level and not any("rliable" in (name or "") for name in top_level)


def test_format_table() -> None:
    table = report.format_table(["a", "long header"], [["x|y", 1.5], ["z", None]])
    assert table.splitlines() == [
        "| a    | long header |",
        "| ---- | ----------- |",
        "| x\\|y | 1.5         |",
        "| z    | None        |",
    ]
    with pytest.raises(ValueError, match="2 cells for 3 columns"):
        report.format_table(["a", "b", "c"], [["x", "y"]])
