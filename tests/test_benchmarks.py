"""Every benchmark script runs: ``--help``, and its smallest real setting writing its JSON.

CI only lints ``benchmarks/``; these runs keep the scripts on the library's current API.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).parents[1] / "benchmarks"
TINY = "--num-envs 2 --rollout-len 8"
ONE = "--env probe:walk --algos mappo --seeds 1 --updates-per-chunk 1"
# Per script: its tiny arguments and a key its JSON must hold.
RUNS: dict[str, tuple[str, str]] = {
    "compile_time": (f"--env probe:walk --algos mappo {TINY} --repeats 1", "results"),
    "exec_time": (
        "--env probe:walk --hidden-size 8 --num-envs 2 --latency-rounds 2 --latency-calls 1 "
        "--throughput-rounds 1",
        "latency",
    ),
    "host_overhead": (
        f"{TINY} --workers 1 --updates-per-chunk 1 --steps 2 --rounds 1",
        "steps_per_second",
    ),
    # HAPPO's two mutants: their guarding tests run on the source, then on each mutant.
    "mutations": ("--only M", "killed"),
    # B2MAPO's generator takes minibatches of envs: 4 envs (dag_minibatches 4).
    "round_pieces": (
        "--env probe:walk --seeds 1 --num-envs 4 --rollout-len 8 --repeats 1",
        "seconds",
    ),
    "round_time": (f"{ONE} {TINY} --repeats 1", "results"),
    "scaling": (f"{ONE} {TINY} --devices 1 --repeats 1", "results"),
    "throughput": (f"--maps probe:walk {TINY} --raw-steps 2 --rounds 1 --matmul-size 8", "maps"),
    "time_to_win": (f"{ONE} {TINY} --max-steps 32 --eval-episodes 2 --full", "results"),
}


def start(script: str, *args: str, cwd: Path) -> subprocess.Popen[str]:
    """``script`` in a fresh interpreter with this checkout's ``src`` on the path."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    command = [sys.executable, str(BENCHMARKS / f"{script}.py"), *args]
    pipe = subprocess.PIPE
    return subprocess.Popen(command, cwd=cwd, env=env, stdout=pipe, stderr=pipe, text=True)


def test_every_script_is_tested() -> None:
    assert sorted(p.stem for p in BENCHMARKS.glob("*.py")) == sorted(RUNS)


def test_help(tmp_path: Path) -> None:
    """``--help`` of every script, all at once: each is mostly its imports."""
    running = {script: start(script, "--help", cwd=tmp_path) for script in RUNS}
    for script, process in running.items():
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, f"{script}: {err}"
        assert "usage:" in out


# Scripts that compile every piece of a round apart (a minute or more even tiny), and the
# mutation check (pytest three times): slow set.
SLOW = {"mutations", "round_pieces", "throughput"}


@pytest.mark.parametrize(
    "script",
    [pytest.param(s, marks=pytest.mark.slow) if s in SLOW else s for s in sorted(RUNS)],
)
def test_tiny_run(script: str, tmp_path: Path) -> None:
    args, key = RUNS[script]
    out = tmp_path / f"{script}.json"
    process = start(script, *args.split(), "--out", str(out), cwd=tmp_path)
    _, err = process.communicate(timeout=300)
    assert process.returncode == 0, err[-4000:]
    assert key in json.loads(out.read_text())
