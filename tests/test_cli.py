"""Bad input gets a one-line error naming the value and what is allowed, exit code 2."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from b2mapo.cli import main
from b2mapo.config import ConfigError, number_fields, resolve
from b2mapo.rundir import SUMMARY_FILE

SPREAD = "pettingzoo:mpe2.simple_spread_v3"


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "b2mapo", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
    )


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["train", "--env", "smax:4m"], ["smax:4m", "smax:3m", "mpe:simple_spread"]),
        (["train", "--algo", "ppo2"], ["ppo2", "mappo"]),
        (["train", "--partition", "nope"], ["unknown partition 'nope'", "learned"]),
        (["train", "--preceding_factor=x"], ["unknown preceding_factor 'x'", "clipped"]),
        (
            ["train", "--rollout-len", "12", "--recurrent-chunk", "8"],
            ["recurrent_chunk=8", "rollout_len=12"],
        ),
        (["train", "--gamma", "1.5"], ["gamma=1.5", "[0, 1]"]),
        (["frobnicate"], ["frobnicate", "train"]),
        (["train", "--out", "/proc/forbidden/run"], ["/proc/forbidden/run"]),
        (["train", "--devices", "3"], ["devices=3", "1 device(s)"]),
        (["train", "--env", "nosuch.module:Game"], ["nosuch.module", "no module"]),
        (["curves", "/proc/no/run"], ["/proc/no/run"]),
        (["reproduce", "--suite", "nope"], ["nope", "cpu-small"]),
        (["report", "/proc/no/run"], ["/proc/no/run"]),
        (["train", "--env", f"{SPREAD}", "--seeds", "2"], ["seeds=2", "one seed per run"]),
        (["train", "--env", "pettingzoo:nosuch_pkg.game"], ["nosuch_pkg.game", "cannot import"]),
        (["train", "--env", "grf:academy_nope"], ["academy_nope", "academy_counterattack_easy"]),
        (["train", "--env-kwargs", '{"N": 4}'], ["env_kwargs", "host environments"]),
        (["train", "--env", SPREAD, "--env-kwargs", "[4]"], ["env_kwargs='[4]'", "JSON object"]),
        (["train", "--env", SPREAD, "--env-kwargs", '{"bogus": 1}'], ["bad env_kwargs", "bogus"]),
    ],
)
def test_bad_input_is_a_clear_error(
    args: list[str],
    expected: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Unknown env/algo/command and inconsistent values exit 2 with a one-line message (in
    this process, which saves a Python start per case: the tests below run the real CLI)."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    stderr = capsys.readouterr().err
    assert exit_info.value.code == 2, stderr
    error_lines = [line for line in stderr.splitlines() if "error" in line]
    assert len(error_lines) == 1, stderr
    for fragment in expected:
        assert fragment in error_lines[0]


def test_eval_of_a_directory_without_a_run(tmp_path: Path) -> None:
    """``b2mapo eval`` on a directory that holds no run says so."""
    result = run_cli("eval", str(tmp_path), cwd=tmp_path)
    assert result.returncode == 2
    assert "not a run directory" in result.stderr


def test_envs_lists_the_registry_quietly(tmp_path: Path) -> None:
    """``b2mapo envs`` lists the default map, the custom scenarios, MPE and the host
    families, and nothing else: no third-party banner or log line."""
    result = run_cli("envs", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    names = ("smax:3m", "smax:8m_vs_9m", "smax:6z_vs_24zg", "mpe:simple_spread")
    for name in (*names, "pettingzoo:MODULE", "academy_counterattack_hard"):
        assert name in result.stdout
    assert result.stderr == ""
    assert all(
        line.startswith(("smax:", "mpe:", "probe:", "pettingzoo:", "grf:"))
        for line in result.stdout.splitlines()
    )


TINY_TRAIN = [
    "train",
    "--env",
    "probe:walk",
    "--num-envs",
    "4",
    "--rollout-len",
    "8",
    "--recurrent-chunk",
    "4",
    "--hidden-size",
    "8",
    "--updates-per-chunk",
    "2",
    "--total-steps",
    "64",
    "--eval-every",
    "0",
    "--final-eval-episodes",
    "2",
]


def test_a_rerun_compiles_from_the_cache(tmp_path: Path) -> None:
    """A second run of the same config, in a fresh process, reads its compiled programs from
    the persistent cache: its compile time is far below the first run's."""
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    seconds = []
    for run in ("first", "second"):
        result = subprocess.run(
            [sys.executable, "-m", "b2mapo", *TINY_TRAIN, "--out", run],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            env=env,
            timeout=300,
        )
        assert result.returncode == 0, result.stderr
        summary = json.loads((tmp_path / run / SUMMARY_FILE).read_text())
        seconds.append(summary["compile_seconds"])
    assert seconds[1] < 0.5 * seconds[0], seconds


def test_resolve_rejects_unknown_fields() -> None:
    """A config dict with a field that does not exist is refused, naming it."""
    with pytest.raises(ConfigError, match="learning_rate"):
        resolve({"learning_rate": 1e-3})


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
@pytest.mark.parametrize("name", number_fields(float))
def test_non_finite_float_options_are_refused(
    name: str, value: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every float option refuses nan, inf and -inf (given as ``--name VALUE``): exit 2, one
    line naming the option, nothing written."""
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_info:
        main(["train", f"--{name.replace('_', '-')}", value, "--out", str(out)])
    captured = capsys.readouterr()
    assert exit_info.value.code == 2, captured.err
    assert captured.err.count("\n") == 1 and f"{name}=" in captured.err, captured.err
    assert "Traceback" not in captured.err + captured.out
    assert not out.exists()


class Accepted(Exception):
    """Stands in for training: carries the config the command line resolved."""


@pytest.mark.parametrize(("value", "steps"), [("1e6", 1_000_000), ("2.5e4", 25_000)])
def test_whole_float_total_steps_is_an_integer(
    value: str, steps: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--total-steps 1e6`` (a whole number written as a float) resolves to 1000000."""

    def accept(cfg: object, console: object) -> None:
        raise Accepted(cfg)

    monkeypatch.setattr("b2mapo.runner.train", accept)
    with pytest.raises(Accepted) as accepted:
        main(["train", "--total-steps", value, "--out", str(tmp_path / "run")])
    assert accepted.value.args[0].total_steps == steps


def test_fractional_total_steps_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    """A fractional integer option is one line naming it, not tyro's box."""
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--total-steps", "1.5"])
    assert exit_info.value.code == 2
    assert (
        capsys.readouterr().err == "b2mapo train: error: total_steps=1.5 must be a whole number\n"
    )


def test_sigint_stops_training_in_one_line_and_the_run_resumes(tmp_path: Path) -> None:
    """SIGINT once the first checkpoint exists: the run stops at its next safe point with one
    line, exit 130, no traceback; the same command then resumes and finishes the run."""
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    command = [sys.executable, "-m", "b2mapo", *TINY_TRAIN, "--total-steps", "64000"]
    command += ["--out", "run"]  # 2,000 updates in chunks of 2
    process = subprocess.Popen(
        command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    checkpoints = tmp_path / "run" / "checkpoints"
    deadline = time.monotonic() + 240
    while not (checkpoints.is_dir() and any(checkpoints.iterdir())):
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    lines = stderr.splitlines()
    assert len(lines) == 1 and re.fullmatch(
        r"b2mapo train: interrupted after update \d+; the same command resumes", lines[0]
    ), stderr
    assert "Traceback" not in stdout + stderr
    assert not (tmp_path / "run" / SUMMARY_FILE).exists()
    resumed = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stdout
    assert json.loads((tmp_path / "run" / SUMMARY_FILE).read_text())["updates"] == 2000
