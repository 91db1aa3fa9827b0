"""Checkpoints: a killed run resumes to the same parameters; mismatches and NaN stop clearly."""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np
import pytest
from flax import serialization
from rich.console import Console

from b2mapo import checkpoint, rundir, runner
from b2mapo.config import ConfigError, TrainConfig
from b2mapo.train import Trainer


def final_state(run_dir: Path) -> dict:
    """Everything the newest checkpoint saved (parameters, optimisers, env and DAG states)."""
    _, path = rundir.checkpoints(run_dir)[-1]
    return serialization.msgpack_restore(path.read_bytes())["state"]


class Killed(Exception):
    """Stands in for the process being killed right after a checkpoint is written."""


@pytest.mark.parametrize("algo", [pytest.param("mappo", marks=pytest.mark.slow), "b2mapo"])
def test_killed_run_resumes_to_the_same_state(tiny_config, tmp_path, monkeypatch, algo) -> None:
    """Kill after the first checkpoint, rerun the same command: same result as no kill
    (for B2MAPO including the DAG generator and π_ind). The config is the ``b2mapo_run``
    fixture's (4 updates, 2 chunks), whose compiled chunk it shares."""
    extra = {"algo": algo, "dag_period": 4}
    straight = tiny_config(out=str(tmp_path / "straight"), **extra)
    runner.train(straight)

    killed = tiny_config(out=str(tmp_path / "killed"), **extra)
    real_save = checkpoint.save

    def save_then_die(*args, **kwargs):
        path = real_save(*args, **kwargs)
        raise Killed(path)

    monkeypatch.setattr(checkpoint, "save", save_then_die)
    with pytest.raises(Killed):
        runner.train(killed)
    monkeypatch.setattr(checkpoint, "save", real_save)
    assert [u for u, _ in rundir.checkpoints(killed.run_dir)] == [2]
    runner.train(killed)

    a, b = final_state(straight.run_dir), final_state(killed.run_dir)
    assert bool((a.get("own") or {}).get("upper")) == (algo == "b2mapo")
    leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(leaves_a) == len(leaves_b) > 0
    for x, y in zip(leaves_a, leaves_b, strict=True):
        np.testing.assert_array_equal(x, y)
    updates = (Path(killed.run_dir) / rundir.METRICS_FILE).read_text().splitlines()
    assert sum('"kind": "train"' in line for line in updates) == 4  # 4 updates x 1 seed, no repeats


def kill_after_first_checkpoint(cfg: TrainConfig, monkeypatch: pytest.MonkeyPatch) -> None:
    """Train ``cfg`` until its first checkpoint is written, then stop as if killed."""
    real_save = checkpoint.save

    def save_then_die(*args: Any, **kwargs: Any) -> Path:
        raise Killed(real_save(*args, **kwargs))

    with monkeypatch.context() as patch:
        patch.setattr(checkpoint, "save", save_then_die)
        with pytest.raises(Killed):
            runner.train(cfg)


def test_wall_time_is_per_update_and_continues_over_a_resumption(tiny_config, monkeypatch) -> None:
    """Each update logs its own wall time (a chunk's updates do not share one), and a run killed
    after its first checkpoint and resumed continues its clock: strictly increasing over the
    resumption, as ``curves`` and ``report`` read it."""
    cfg = tiny_config(updates_per_chunk=2, total_steps=4 * 8 * 6)  # 3 chunks
    kill_after_first_checkpoint(cfg, monkeypatch)
    runner.train(cfg)
    train = [r for r in rundir.read_metrics(Path(cfg.run_dir)) if r["kind"] == "train"]
    assert [r["update"] for r in train] == list(range(1, 7))
    times = [r["wall_time"] for r in train]
    assert times == sorted(set(times)), times  # strictly increasing
    evals = [r["wall_time"] for r in rundir.read_metrics(Path(cfg.run_dir)) if r["kind"] == "eval"]
    assert evals == sorted(set(evals)), evals


def file_hashes(run_dir: Path) -> dict[str, str]:
    """Every file under ``run_dir`` by relative path, with the SHA-256 of its bytes."""
    return {
        str(path.relative_to(run_dir)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(Path(run_dir).rglob("*"))
        if path.is_file()
    }


def strict_json(path: Path) -> dict[str, Any]:
    """``path`` parsed as strict JSON: NaN or Infinity is an error."""

    def refuse(constant: str) -> None:
        raise ValueError(f"{path} holds {constant}")

    return json.loads(path.read_text(), parse_constant=refuse)


def test_a_finished_run_rerun_says_so_and_changes_nothing(tiny_config) -> None:
    """The same command on a finished run prints that it is finished and leaves every file
    byte-identical: no new evaluation, summary or TensorBoard file. Its summary, of one chunk
    (no steady speed), is strict JSON, as is its config."""
    cfg = tiny_config(total_steps=4 * 8 * 2)  # one chunk
    runner.train(cfg)
    before = file_hashes(Path(cfg.run_dir))
    output = io.StringIO()
    summary = runner.train(cfg, Console(file=output, width=200))
    assert file_hashes(Path(cfg.run_dir)) == before
    assert f"{cfg.run_dir} is finished (update 2)" in output.getvalue()
    assert summary.updates == 2 and summary.train_seconds > 0
    saved = strict_json(Path(cfg.run_dir) / rundir.SUMMARY_FILE)
    assert saved["steady_steps_per_second"] is None
    strict_json(Path(cfg.run_dir) / rundir.CONFIG_FILE)


def test_summary_times_add_up_over_resumptions(tiny_config, monkeypatch) -> None:
    """A run killed after its first checkpoint and resumed reports the training time of both
    parts: the first part's chunks are slowed by 0.5 s, the resumed part's are not."""
    real_compile = runner.compile_chunk

    def slow_compile(trainer: Trainer, state: Any) -> Callable:
        chunk = real_compile(trainer, state)

        def slow(state: Any) -> tuple[Any, dict]:
            time.sleep(0.5)
            return chunk(state)

        return slow

    cfg = tiny_config()  # 2 chunks
    with monkeypatch.context() as patch:
        patch.setattr(runner, "compile_chunk", slow_compile)
        kill_after_first_checkpoint(cfg, monkeypatch)
    runner.train(cfg)
    saved = strict_json(Path(cfg.run_dir) / rundir.SUMMARY_FILE)
    assert saved["train_seconds"] >= 0.5
    assert saved["steady_steps_per_second"] is None  # each part ran one chunk: no steady one


def test_checkpoint_of_another_config_is_refused(tiny_config, tmp_path) -> None:
    """Resuming into a directory trained with another network size names the field, and
    leaves every file of the directory as it was (no TensorBoard file, no config); the
    run's first line, printed once a run is accepted, is not printed."""
    output = io.StringIO()
    runner.train(tiny_config(out=str(tmp_path / "run")), Console(file=output, width=300))
    assert output.getvalue().startswith("training mappo on probe:walk: 1 seed(s) x 128 env")
    before = file_hashes(tmp_path / "run")
    refused = io.StringIO()
    with pytest.raises(ConfigError, match="hidden_size"):
        runner.train(tiny_config(out=str(tmp_path / "run"), hidden_size=16), Console(file=refused))
    assert file_hashes(tmp_path / "run") == before
    assert refused.getvalue() == ""


def test_extending_a_run_is_refused_with_the_reason(tiny_config) -> None:
    """A longer budget on a saved run is refused, saying that the learning rates anneal over
    the run's total_steps and what to do instead."""
    saved, longer = tiny_config(), tiny_config(total_steps=4 * 8 * 8)
    with pytest.raises(ConfigError, match="a run cannot be extended: its learning rates anneal"):
        checkpoint.check_resumable(saved, longer)
    constant = tiny_config(anneal_lr=False)
    with pytest.raises(ConfigError, match="cannot be extended: train a new run") as refused:
        checkpoint.check_resumable(constant, tiny_config(total_steps=4 * 8 * 8, anneal_lr=False))
    assert "anneal" not in str(refused.value)


@pytest.mark.parametrize(("total_steps", "rounded"), [(256, False), (260, True), (2000, True)])
def test_the_first_line_says_when_chunks_round_the_budget_up(
    tiny_config, total_steps: int, rounded: bool
) -> None:
    """Whole chunks of 64 steps (2 updates x 4 envs x 8 steps) round 260 up to 320 (23%) and
    2000 to 2048 (2.4%): the line says so; 256 is whole."""
    line = runner.header(tiny_config(total_steps=total_steps))
    assert ("rounded up to whole chunks of 64 env steps" in line) == rounded, line


def test_a_config_without_a_checkpoint_can_be_restarted(tiny_config, tmp_path) -> None:
    """A run that stopped before its first checkpoint lost nothing: the directory starts again
    under another config, and says so."""
    run_dir = tmp_path / "run"
    checkpoint.save_config(run_dir, tiny_config(out=str(run_dir), hidden_size=16))
    output = io.StringIO()
    runner.train(tiny_config(out=str(run_dir)), Console(file=output, width=200))
    assert "holds no checkpoint: starting it again with this config" in output.getvalue()
    assert checkpoint.load_config(run_dir).hidden_size == 8
    assert rundir.finished(run_dir)


def test_checkpoint_of_another_format_is_refused(tiny_config, tmp_path) -> None:
    """A checkpoint in the unstamped layout of earlier versions is refused by its format, not
    half-read; so is a file that is not msgpack at all (in a run to resume: a finished one
    reads no checkpoint)."""
    cfg = tiny_config(out=str(tmp_path / "run"))
    runner.train(cfg)
    (Path(cfg.run_dir) / rundir.SUMMARY_FILE).unlink()
    _, path = rundir.checkpoints(cfg.run_dir)[-1]
    unstamped = serialization.msgpack_restore(path.read_bytes())["state"]
    path.write_bytes(serialization.msgpack_serialize(unstamped))
    with pytest.raises(ConfigError, match="another checkpoint format"):
        runner.train(cfg)
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="not a b2mapo checkpoint"):
        runner.train(cfg)


def test_nan_stops_training_and_keeps_the_last_good_checkpoint(tiny_config, monkeypatch) -> None:
    """A NaN loss at update 3 stops the run, names the update, and saves nothing past update 2.
    The NaN is put into the compiled chunk's metrics: the run shares the plain config's program."""
    real_compile = runner.compile_chunk

    def poisoned_compile(trainer: Trainer, state: Any) -> Callable:
        chunk = real_compile(trainer, state)

        def poisoned(state: Any) -> tuple[Any, dict]:
            state, metrics = chunk(state)
            # The updates this chunk ran, per seed: [seeds, updates_per_chunk].
            ran = np.asarray(state.update)[:, None] - np.arange(trainer.cfg.updates_per_chunk)[::-1]
            loss = np.where(ran >= 3, np.nan, np.asarray(metrics["value_loss"]))
            return state, metrics | {"value_loss": loss}

        return poisoned

    monkeypatch.setattr(runner, "compile_chunk", poisoned_compile)
    cfg = tiny_config()  # 4 updates in chunks of 2
    with pytest.raises(runner.TrainingDiverged, match="at update 3") as error:
        runner.train(cfg)
    assert "update_00000002" in str(error.value)
    assert [u for u, _ in rundir.checkpoints(cfg.run_dir)] == [2]


def test_atomic_write_makes_files_readable_like_the_rest(tmp_path) -> None:
    """Files written atomically (config.json, summary.json, checkpoints) get the mode open()
    gives under the umask (0644 under 022), not mkstemp's 0600."""
    previous = os.umask(0o022)
    try:
        rundir.write_json(tmp_path / rundir.SUMMARY_FILE, {"updates": 1})
    finally:
        os.umask(previous)
    assert (tmp_path / rundir.SUMMARY_FILE).stat().st_mode & 0o777 == 0o644


def test_atomic_write_leaves_no_partial_file(tmp_path, monkeypatch) -> None:
    """A failed write keeps the old file intact and leaves no temporary behind."""
    target = tmp_path / "file.bin"
    rundir.atomic_write(target, b"old")

    def fail(_: int) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(rundir.os, "fsync", fail)
    with pytest.raises(OSError, match="disk full"):
        rundir.atomic_write(target, b"new")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.bin"]
