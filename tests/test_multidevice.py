"""Seeds sharded over several devices train exactly as on one device."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPT = """
import sys
import jax, numpy as np
from b2mapo.config import resolve
from b2mapo.runner import shard_over_seeds
from b2mapo.train import Trainer

cfg = resolve(dict(env="probe:walk", num_envs=4, rollout_len=8, epochs=1, minibatches=2,
                   hidden_size=8, updates_per_chunk=2, seeds=2, algo=sys.argv[2],
                   dag_period=4, recurrent_chunk=4))
trainer = Trainer(cfg)
state = shard_over_seeds(trainer.init(), cfg.seeds)
state, _ = trainer.chunk(state)
devices = {d for leaf in jax.tree.leaves(state) for d in leaf.devices()}
trained = (state.learner.params, state.upper, state.derived)  # None unless B2MAPO
leaves = [np.asarray(x) for x in jax.tree.leaves(trained)]
np.savez(sys.argv[1], devices=len(devices), *leaves)
"""


def run(out: Path, device_count: int, algo: str) -> dict[str, np.ndarray]:
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={device_count}"
    subprocess.run([sys.executable, "-c", SCRIPT, str(out), algo], env=env, check=True, timeout=600)
    return dict(np.load(out))


@pytest.mark.parametrize("algo", ["mappo", pytest.param("b2mapo", marks=pytest.mark.slow)])
def test_two_devices_match_one(tmp_path: Path, algo: str) -> None:
    """Two seeds on two (forced CPU) devices give the parameters two seeds give on one
    (for B2MAPO also the DAG generator's and π_ind's)."""
    one = run(tmp_path / "one.npz", 1, algo)
    two = run(tmp_path / "two.npz", 2, algo)
    assert int(one.pop("devices")) == 1
    assert int(two.pop("devices")) == 2
    assert one.keys() == two.keys()
    for key in one:
        np.testing.assert_allclose(one[key], two[key], rtol=1e-5, atol=5e-5)
