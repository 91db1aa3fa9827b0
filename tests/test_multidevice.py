"""Several devices and several processes train the same model as one device does.

Each check runs fresh Python processes: the number of (forced CPU) devices and a
``jax.distributed`` launch are fixed when JAX starts.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import serialization

from b2mapo import rundir
from b2mapo.config import resolve
from b2mapo.errors import ConfigError
from b2mapo.parallel import initialise_processes
from b2mapo.train import Trainer
from tests.conftest import TINY

# The tests' tiny config (4 updates in 2 chunks) with DAG periods that fit its rollout.
CONFIG = {**TINY, "dag_period": 4}

# Trains each (algo, seeds) case for two chunks and saves every trained leaf (π, and for
# B2MAPO the DAG generator and π_ind) with the layout it ran on.
DEVICES_SCRIPT = """
import json, sys
import jax, numpy as np
from b2mapo.config import resolve
from b2mapo.train import Trainer

out, cases = sys.argv[1], json.loads(sys.argv[2])
saved = {}
for algo, seeds in cases:
    trainer = Trainer(resolve({**json.loads(sys.argv[3]), "algo": algo, "seeds": seeds}))
    state = trainer.init()
    for _ in range(2):
        state, _ = trainer.chunk(state)
    name = f"{algo}-{seeds}"
    saved[f"{name}/layout"] = np.array(
        [trainer.layout.seed_devices, trainer.layout.env_devices, len(state.loop.first.devices())]
    )
    own = () if state.own is None else (state.own.upper, state.own.derived)  # B2MAPO's
    trained = (state.learner.params, *own)
    for i, leaf in enumerate(jax.tree.leaves(trained)):
        saved[f"{name}/{i}"] = np.asarray(leaf)
np.savez(out, **saved)
"""


def run_devices(out: Path, device_counts: list[int], cases: list[tuple[str, int]]) -> list[dict]:
    """What ``DEVICES_SCRIPT`` saved, for each device count, its processes run side by side."""
    processes = []
    for count in device_counts:
        env = dict(os.environ)
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={count}"
        command = [sys.executable, "-c", DEVICES_SCRIPT, f"{out}{count}.npz", json.dumps(cases)]
        processes.append(subprocess.Popen([*command, json.dumps(CONFIG)], env=env))
    for process in processes:
        assert process.wait(timeout=900) == 0
    return [dict(np.load(f"{out}{count}.npz")) for count in device_counts]


def assert_same_training(one: dict, two: dict) -> None:
    assert one.keys() == two.keys()
    for key in one:
        if not key.endswith("/layout"):
            np.testing.assert_allclose(one[key], two[key], rtol=1e-5, atol=1e-5, err_msg=key)


@pytest.mark.parametrize(
    ("algo", "seeds", "devices", "layout"),
    [
        ("mappo", 2, 4, [2, 2, 4]),  # seeds over one mesh axis, each seed's envs over the other
        pytest.param("a2po", 1, 2, [1, 2, 2], marks=pytest.mark.slow),  # one seed's envs split
        pytest.param("b2mapo", 1, 2, [1, 2, 2], marks=pytest.mark.slow),
    ],
)
def test_devices_match_one(
    tmp_path: Path, algo: str, seeds: int, devices: int, layout: list[int]
) -> None:
    """Seeds and environments spread over several (forced CPU) devices give the parameters
    one device gives (for B2MAPO also the DAG generator's and π_ind's)."""
    one, many = run_devices(tmp_path / "devices", [1, devices], [(algo, seeds)])
    np.testing.assert_array_equal(one.pop(f"{algo}-{seeds}/layout"), [1, 1, 1])
    np.testing.assert_array_equal(many.pop(f"{algo}-{seeds}/layout"), layout)
    assert_same_training(one, many)


@pytest.mark.parametrize(
    ("coordinator", "processes", "process_id", "named"),
    [
        ("", 2, 0, "coordinator ''"),
        ("localhost:1234", 1, 0, "num_processes 1"),
        ("localhost:1234", 2, 2, "process_id 2"),
    ],
)
def test_incomplete_launch_is_a_clear_error(
    coordinator: str, processes: int, process_id: int, named: str
) -> None:
    """A multi-process launch missing a coordinator, with one process, or with an id out of
    range is refused by name before anything starts."""
    with pytest.raises(ConfigError, match=named):
        initialise_processes(coordinator, processes, process_id)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def launch(run_dir: Path, port: int, extra: list[str]) -> list[subprocess.Popen]:
    """Both processes of a 2-process ``b2mapo train`` on localhost (one CPU device each)."""
    args = [f"--{k.replace('_', '-')}={v}" for k, v in CONFIG.items()]
    processes = []
    for process_id in range(2):
        env = dict(os.environ)
        env.pop("XLA_FLAGS", None)
        env |= {
            "B2MAPO_COORDINATOR": f"localhost:{port}",
            "B2MAPO_NUM_PROCESSES": "2",
            "B2MAPO_PROCESS_ID": str(process_id),
        }
        command = [sys.executable, "-m", "b2mapo", "train", *args, *extra]
        out = run_dir.parent / f"{run_dir.name}.process{process_id}.log"
        with out.open("w") as log:
            processes.append(
                subprocess.Popen(
                    [*command, f"--out={run_dir}"], env=env, stdout=log, stderr=subprocess.STDOUT
                )
            )
    return processes


def wait(processes: list[subprocess.Popen], run_dir: Path) -> None:
    for process_id, process in enumerate(processes):
        code = process.wait(timeout=900)
        log = run_dir.parent / f"{run_dir.name}.process{process_id}.log"
        assert code == 0, log.read_text()


def saved_state(run_dir: Path) -> dict:
    _, path = rundir.checkpoints(run_dir)[-1]
    return serialization.msgpack_restore(path.read_bytes())["state"]


def test_two_processes_train_one_model(tmp_path: Path) -> None:
    """A 2-process ``jax.distributed`` run on localhost (one device each) trains the model
    one device trains; only process 0 writes (its log has the progress, process 1's is
    silent), and the summary names both processes."""
    run_dir = tmp_path / "run"
    processes = launch(run_dir, free_port(), ["--eval-every=0", "--final-eval-episodes=2"])
    trainer = Trainer(resolve({**CONFIG, "algo": "mappo"}))  # meanwhile, on one device
    reference = trainer.init()
    for _ in range(2):
        reference, _ = trainer.chunk(reference)
    wait(processes, run_dir)
    summary = json.loads((run_dir / rundir.SUMMARY_FILE).read_text())
    assert (summary["devices"], summary["processes"], summary["updates"]) == (2, 2, 4)
    quiet = (tmp_path / "run.process1.log").read_text()
    assert "training mappo" in (tmp_path / "run.process0.log").read_text()
    assert "training mappo" not in quiet and "Traceback" not in quiet

    trained = jax.tree.leaves(saved_state(run_dir)["learner"]["params"])
    expected = jax.tree.leaves(reference.learner.params)
    assert len(trained) == len(expected) > 0
    for leaf, want in zip(trained, expected, strict=True):
        np.testing.assert_allclose(leaf, want, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_killed_two_process_run_resumes_exactly(tmp_path: Path) -> None:
    """Kill both processes of a 2-process run after a checkpoint, relaunch: the final state
    equals that of a run never killed."""
    extra = ["--total-steps=384", "--eval-every=0", "--algo=b2mapo"]
    straight = tmp_path / "straight"
    wait(launch(straight, free_port(), extra), straight)

    killed = tmp_path / "killed"
    processes = launch(killed, free_port(), extra)
    deadline = time.monotonic() + 600
    while not rundir.checkpoints(killed) and time.monotonic() < deadline:
        time.sleep(0.2)
    for process in processes:
        process.send_signal(signal.SIGKILL)
        process.wait()
    saved = [u for u, _ in rundir.checkpoints(killed)]
    assert saved and saved[-1] < 12 and not (killed / rundir.SUMMARY_FILE).exists()
    wait(launch(killed, free_port(), extra), killed)

    a, b = jax.tree.leaves(saved_state(straight)), jax.tree.leaves(saved_state(killed))
    assert len(a) == len(b) > 0
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
