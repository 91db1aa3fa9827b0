"""``b2mapo plot`` / ``curves``: the figures are written, and the DAG they draw is the one
training acts on (edges from earlier to later batches, the layering of ``b2mapo.upper.dag``)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from b2mapo import checkpoint, dag_plots, plots, rundir
from b2mapo.cli import main
from b2mapo.config import ConfigError


def assert_png(path: Path) -> None:
    image = imread(path)
    assert image.ndim == 3 and image.shape[2] in (3, 4), image.shape
    assert image.shape[0] > 200 and image.shape[1] > 200, image.shape
    assert image.std() > 0.01, "the figure is blank"


def test_snapshot_of_sampled_dags() -> None:
    """The snapshot of sampled DAGs: the most frequent layering, its share and the keep
    rates; agents of one batch share a column, one above the other."""
    batches = np.array([[1, 0, 0, 1], [1, 0, 0, 1], [0, 0, 0, 0]])
    keep = np.zeros((3, 4, 4), bool)
    keep[:2, 0, 1] = keep[:2, 1, 0] = True
    snapshot = dag_plots.dag_snapshot(np.zeros((4, 4)), batches, keep)
    np.testing.assert_array_equal(snapshot.batch_index, [1, 0, 0, 1])
    assert snapshot.share == pytest.approx(2 / 3) and snapshot.samples == 3
    assert snapshot.keep[0, 1] == pytest.approx(2 / 3) and snapshot.keep[2, 3] == 0
    positions = dag_plots.layout(snapshot.batch_index)
    np.testing.assert_array_equal(positions[:, 0], snapshot.batch_index)
    assert positions[1, 1] != positions[2, 1]


def test_a_crowded_layering_is_drawn_without_overlaps(tmp_path: Path) -> None:
    """Twelve agents in one column and all pairs kept: the nodes shrink to fit their column
    (no two touch) and the figure is written."""
    n = 12
    keep = np.ones((1, n, n), bool) & ~np.eye(n, dtype=bool)
    snapshot = dag_plots.dag_snapshot(np.zeros((n, n)), np.zeros((1, n), int), keep)
    figure = dag_plots.draw_dag(snapshot, 0.1, "crowded")
    figure.savefig(tmp_path / "crowded.png", dpi=80)
    assert_png(tmp_path / "crowded.png")
    (graph_ax,) = [a for a in figure.axes if a.get_title().startswith("most frequent")]
    (nodes,) = [c for c in graph_ax.collections if len(c.get_offsets()) == n]
    diameter = float(np.sqrt(nodes.get_sizes()[0]))  # points
    gap = graph_ax.transData.transform((0, 1))[1] - graph_ax.transData.transform((0, 0))[1]
    assert diameter < gap * 72 / figure.dpi  # one agent's spacing in points


def test_dag_figure(b2mapo_run: Path, tmp_path: Path) -> None:
    """The default-named figure of the newest checkpoint, and one after one period of π
    (sampling) at another start state."""
    written = dag_plots.plot_dag(b2mapo_run)
    assert written == b2mapo_run / f"dag_update_{4:08d}.png"
    assert_png(written)
    out = tmp_path / "figures" / "dag.png"
    assert dag_plots.plot_dag(b2mapo_run, out, update=4, env_index=3, greedy=False, steps=4) == out
    assert_png(out)


def test_training_figure(b2mapo_run: Path) -> None:
    """``training.png`` is written from the run's metrics, and the plotted K is theirs."""
    written = plots.plot_training(b2mapo_run)
    assert written == b2mapo_run / "training.png"
    assert_png(written)
    records = [r for r in rundir.read_metrics(b2mapo_run) if r["kind"] == "train"]
    k = plots.curve(records, "dag_num_batches")
    assert k is not None
    np.testing.assert_allclose(k.mean, [r["dag_num_batches"] for r in records])
    assert plots.curve(records, "greedy_joint_win_rate") is None  # an eval key


def test_curves_of_two_runs_share_one_figure(b2mapo_run: Path, tmp_path: Path) -> None:
    """Two run directories: every panel the runs logged draws both, by run name, and the
    CLI writes the figure against wall time."""
    other = tmp_path / "other"
    shutil.copytree(b2mapo_run, other)
    figure = plots.training_figure([b2mapo_run, other], x="wall_time")
    win_rate = figure.axes[0]
    labels = [line.get_label() for line in win_rate.get_lines()]
    assert f"{b2mapo_run.name}: eval π_ind, greedy" in labels
    assert "other: eval π_ind, greedy" in labels
    assert win_rate.get_xlabel() == "wall time (s)"
    colours = {line.get_color() for line in win_rate.get_lines()}
    assert len(colours) == 2  # one per run
    out = tmp_path / "c.png"
    main(["curves", str(b2mapo_run), str(other), "--x", "wall_time", "--out", str(out)])
    assert_png(out)
    with pytest.raises(ConfigError, match="unknown x axis 'time'"):
        plots.training_figure([b2mapo_run], x="time")


def test_band_only_over_several_seeds(b2mapo_run: Path, tmp_path: Path) -> None:
    """A run of one seed is drawn without a band (its title says one seed); a run of two
    seeds with the min-max band over them, and the title says so."""
    figure = plots.training_figure([b2mapo_run])
    assert not figure.axes[0].collections
    assert "1 seed" in figure.get_suptitle() and "band" not in figure.get_suptitle()
    two = tmp_path / "two"
    shutil.copytree(b2mapo_run, two)
    records = rundir.read_metrics(two)
    twin = [{**r, "seed": r["seed"] + 1} for r in records]
    (two / rundir.METRICS_FILE).write_text("".join(json.dumps(r) + "\n" for r in records + twin))
    figure = plots.training_figure([two])
    assert figure.axes[0].collections
    assert "mean over 2 seeds, band: min-max over seeds" in figure.get_suptitle()


def test_curve_is_mean_and_range_over_seeds() -> None:
    """Records of two seeds at two steps give the per-step mean, min and max, sorted by step."""
    records = [
        {"env_steps": 20, "seed": 0, "k": 3.0},
        {"env_steps": 10, "seed": 0, "k": 1.0},
        {"env_steps": 10, "seed": 1, "k": 2.0},
        {"env_steps": 20, "seed": 1, "k": 1.0},
        {"env_steps": 30, "seed": 0},
    ]
    found = plots.curve(records, "k")
    assert found is not None
    np.testing.assert_array_equal(found.steps, [10, 20])
    np.testing.assert_allclose(found.mean, [1.5, 2.0])
    np.testing.assert_allclose(found.low, [1.0, 1.0])
    np.testing.assert_allclose(found.high, [2.0, 3.0])


def test_bad_requests_are_config_errors(b2mapo_run: Path, tiny_config, tmp_path: Path) -> None:
    """A MAPPO run has no DAG; missing checkpoints, metrics and bad indices are named."""
    mappo = tiny_config(algo="mappo")
    checkpoint.save_config(Path(mappo.run_dir), mappo)
    with pytest.raises(ConfigError, match="only B2MAPO runs"):
        dag_plots.plot_dag(Path(mappo.run_dir))
    with pytest.raises(ConfigError, match="no training metrics"):
        plots.plot_training(Path(mappo.run_dir))
    empty = tiny_config(algo="b2mapo", dag_period=4, out=str(tmp_path / "empty"))
    checkpoint.save_config(Path(empty.run_dir), empty)
    with pytest.raises(ConfigError, match="no checkpoint"):
        dag_plots.plot_dag(Path(empty.run_dir))
    with pytest.raises(ConfigError, match="update 3; saved: 2, 4"):
        dag_plots.plot_dag(b2mapo_run, update=3)
    with pytest.raises(ConfigError, match="seed index 1"):
        dag_plots.plot_dag(b2mapo_run, seed_index=1)
    with pytest.raises(ConfigError, match="multiple of dag_period=4"):
        dag_plots.plot_dag(b2mapo_run, steps=6)


def test_cli_writes_both_figures(b2mapo_run: Path, tmp_path: Path) -> None:
    """``b2mapo plot`` and ``b2mapo curves`` parse their options and write where told."""
    main(["plot", str(b2mapo_run), "--out", str(tmp_path / "d.png"), "--update", "2"])
    main(["curves", str(b2mapo_run), "--out", str(tmp_path / "t.png")])
    assert_png(tmp_path / "d.png")
    assert_png(tmp_path / "t.png")


@pytest.mark.parametrize("command", ["plot", "curves"])
def test_cli_missing_run_dir(command: str, tmp_path: Path) -> None:
    """A directory without a run: exit 2 and one error line naming it, no traceback."""
    missing = tmp_path / "nowhere"
    result = subprocess.run(
        [sys.executable, "-m", "b2mapo", command, str(missing)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if "error" in line]
    assert errors == [f"b2mapo {command}: error: {missing} is not a run directory (no config.json)"]


def test_curves_import_no_training_code(tiny_config, tmp_path: Path) -> None:
    """``b2mapo curves`` is a view of run directories: it draws a run's metrics without
    importing JAX, jaxmarl, flax or optax (``-X importtime`` lists every module imported)."""
    cfg = tiny_config()
    run = Path(cfg.run_dir)
    checkpoint.save_config(run, cfg)
    records = [
        {"kind": "train", "update": u, "env_steps": 256 * u, "wall_time": u, "seed": 0}
        for u in (1, 2)
    ]
    rundir.append_records(run / rundir.METRICS_FILE, records)
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "b2mapo", "curves", str(run)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("import time:")]
    modules = [line.rpartition("|")[2].strip() for line in lines]
    training = {"jax", "jaxlib", "jaxmarl", "flax", "optax"}
    assert "b2mapo.plots" in modules
    assert [m for m in modules if m.partition(".")[0] in training] == []


def test_dag_history_is_drawn_as_a_strip_and_a_gif(b2mapo_run: Path, tmp_path: Path) -> None:
    """A B2MAPO run records its DAG at every evaluation; the strip shows at most six of them
    and the GIF has one frame per record."""
    from PIL import Image

    records = rundir.read_history(b2mapo_run)
    evaluations = {r["update"] for r in rundir.read_metrics(b2mapo_run) if r["kind"] == "eval"}
    assert [r["update"] for r in records] == sorted(evaluations)
    n = len(records[0]["batch_index"])
    for record in records:
        assert np.asarray(record["g"]).shape == np.asarray(record["keep"]).shape == (n, n)
        assert 0 < record["layering_share"] <= 1
    png, gif = dag_plots.plot_dag_history(b2mapo_run, tmp_path / "strip.png", tmp_path / "dags.gif")
    assert_png(png)
    with Image.open(gif) as image:
        assert image.n_frames == len(records)
        assert image.size[0] > 200 and image.size[1] > 200


def test_a_run_without_dag_history_is_refused(b2mapo_run: Path, tmp_path: Path) -> None:
    """``plot --history`` on a run that recorded no DAGs says so, naming the directory."""
    run = tmp_path / "copy"
    shutil.copytree(b2mapo_run, run)
    (run / rundir.HISTORY_FILE).unlink()
    with pytest.raises(ConfigError, match="no DAG history"):
        dag_plots.plot_dag_history(run)


def test_resumed_dag_history_drops_records_past_the_checkpoint(tmp_path: Path) -> None:
    """Records written after the checkpoint a run resumes from are dropped, as metrics are."""
    path = tmp_path / rundir.HISTORY_FILE
    path.write_text("".join(json.dumps({"update": u}) + "\n" for u in (2, 4, 6)))
    rundir.keep_until(path, 4)
    assert [r["update"] for r in rundir.read_history(tmp_path)] == [2, 4]


def test_replay_draws_smax_episodes_only(b2mapo_run: Path) -> None:
    """``b2mapo replay`` on a run of another environment is refused by name (SMAX replays run
    in CI's smoke suite); a frame is an RGB image of the drawn size."""
    from b2mapo.replay import Frames, draw_frame, replay

    with pytest.raises(ConfigError, match="SMAX"):
        replay(b2mapo_run)
    frames = Frames(
        positions=np.array([[[10.0, 10.0], [12.0, 11.0], [20.0, 20.0]]]),
        health=np.array([[45.0, 20.0, 45.0]]),
        alive=np.array([[True, True, False]]),
        batch_index=np.array([[0, 1]]),
        ended=np.array([False]),
        won=False,
    )
    image = draw_frame(frames, 0, 2, (8.0, 8.0, 16.0), "test")
    assert image.shape == (500, 480, 3) and image.std() > 1.0
