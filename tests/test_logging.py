"""Metrics mirrored to the logs people already read: TensorBoard and Weights & Biases."""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from tensorboardX.proto.event_pb2 import Event

from b2mapo import rundir
from b2mapo.cli import main
from b2mapo.config import resolve
from b2mapo.plots import curve
from b2mapo.rundir import METRICS_FILE, TENSORBOARD_DIR
from b2mapo.runner import MetricsLog

RECORDS = [
    {"kind": "train", "update": 1, "env_steps": 256, "seed": 0, "win_rate": 0.25},
    {"kind": "eval", "update": 1, "env_steps": 256, "seed": 0, "greedy_win_rate": 0.5},
]


def read_events(path: Path) -> list[Event]:
    """The events of a TensorBoard file: TFRecords of length (8 bytes), its CRC (4), the
    serialized event, its CRC (4)."""
    data, events, offset = path.read_bytes(), [], 0
    while offset < len(data):
        (length,) = struct.unpack("<Q", data[offset : offset + 8])
        events.append(Event.FromString(data[offset + 12 : offset + 12 + length]))
        offset += 12 + length + 4
    return events


def test_tensorboard_gets_every_scalar(tmp_path: Path) -> None:
    log = MetricsLog(tmp_path / METRICS_FILE, resolve({}))
    log.write(RECORDS)
    log.close()
    (events,) = (tmp_path / TENSORBOARD_DIR).glob("events.out.tfevents.*")
    scalars = {
        value.tag: (event.step, value.simple_value)
        for event in read_events(events)
        for value in event.summary.value
    }
    assert scalars == {
        "train/seed0/win_rate": (256, 0.25),
        "eval/seed0/greedy_win_rate": (256, 0.5),
    }


class FakeWandb:
    """Records what b2mapo asks of the ``wandb`` module."""

    def __init__(self) -> None:
        self.init_kwargs: dict[str, Any] = {}
        self.logged: list[tuple[dict, int]] = []
        self.finished = False

    def init(self, **kwargs: Any) -> SimpleNamespace:
        self.init_kwargs = kwargs
        return SimpleNamespace(log=self._log, finish=self._finish)

    def _log(self, data: dict, step: int) -> None:
        self.logged.append((data, step))

    def _finish(self) -> None:
        self.finished = True


def test_wandb_mirrors_the_records_of_a_run_it_can_resume(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeWandb()
    monkeypatch.setitem(sys.modules, "wandb", fake)
    cfg = resolve({"wandb_project": "b2mapo-tests", "out": str(tmp_path / "run")})
    log = MetricsLog(tmp_path / "run" / METRICS_FILE, cfg)
    log.write(RECORDS)
    log.close()
    assert fake.init_kwargs["project"] == "b2mapo-tests"
    assert fake.init_kwargs["resume"] == "allow"
    assert fake.init_kwargs["config"]["wandb_project"] == "b2mapo-tests"
    assert fake.logged == [
        ({"train/seed0/win_rate": 0.25}, 256),
        ({"eval/seed0/greedy_win_rate": 0.5}, 256),
    ]
    assert fake.finished
    first_id = fake.init_kwargs["id"]
    MetricsLog(tmp_path / "run" / METRICS_FILE, cfg)  # the same directory again
    assert fake.init_kwargs["id"] == first_id


def test_no_wandb_means_no_wandb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeWandb()
    monkeypatch.setitem(sys.modules, "wandb", fake)
    MetricsLog(tmp_path / METRICS_FILE, resolve({})).write(RECORDS)
    assert fake.init_kwargs == {} and fake.logged == []


def test_a_missing_wandb_extra_is_one_line_before_compiling(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb raises ImportError
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--wandb-project", "p", "--out", str(tmp_path / "run")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "wandb_project='p' needs Weights & Biases: pip install -e '.[wandb]'" in err
    assert not (tmp_path / "run").exists()  # nothing written


def test_metrics_files_are_strict_json_and_curves_skip_a_metric_over_nothing(
    tmp_path: Path,
) -> None:
    """A NaN or infinite value (a metric over nothing) is written as null, so every line
    parses with a strict JSON parser; curves leave it out instead of failing or drawing NaN."""
    path = tmp_path / rundir.METRICS_FILE
    records = [
        {"kind": "train", "env_steps": 8, "seed": 0, "approx_kl": float("nan"), "x": 1.0},
        {"kind": "train", "env_steps": 8, "seed": 1, "approx_kl": 0.5, "x": float("inf")},
        {"kind": "train", "env_steps": 16, "seed": 0, "approx_kl": 0.25, "x": 2.0},
    ]
    rundir.append_records(path, records)

    def refuse(constant: str) -> None:
        raise ValueError(constant)

    lines = [json.loads(line, parse_constant=refuse) for line in path.read_text().splitlines()]
    assert lines[0]["approx_kl"] is None and lines[1]["x"] is None
    kl = curve(lines, "approx_kl")
    assert kl is not None
    np.testing.assert_allclose(kl.mean, [0.5, 0.25])
