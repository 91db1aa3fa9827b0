"""Every preset trains a tiny round, and ends where it ended before a refactoring.

``tests/data/preset_params.json`` holds a fingerprint of the parameters each preset reaches
after one chunk (two rounds) of a tiny fixed-seed run. Code moves that change no result
keep it; a change that is meant to change results rewrites it with
``PYTHONPATH=. python tests/test_presets.py --write`` (and says so in its commit).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from b2mapo.config import PRESETS, TrainConfig, resolve
from b2mapo.train import Trainer
from tests.conftest import TINY

FINGERPRINTS = Path(__file__).parent / "data" / "preset_params.json"
# probe:walk at the tests' tiny sizes, one chunk of two rounds.
SIZES = {**TINY, "seed": 3}
# Indices of the raveled parameters kept beside the sums (spread over the vector).
PROBES = 8


def _config(algo: str) -> TrainConfig:
    return resolve({**SIZES, "algo": algo})


def fingerprint(algo: str) -> dict[str, dict[str, object]]:
    """Sums and a few values of each acting parameter set after one chunk of ``algo``."""
    trainer = Trainer(_config(algo))
    try:
        state, _ = trainer.chunk(trainer.init())
        policies = trainer.policies(jax.device_get(state))
    finally:
        trainer.close()
    prints = {}
    for name, params in policies._asdict().items():
        if params is None:
            continue
        flat = np.asarray(ravel_pytree(params)[0], np.float64)
        picks = np.linspace(0, flat.size - 1, PROBES).astype(int)
        prints[name] = {
            "size": int(flat.size),
            "sum": float(flat.sum()),
            "abs_sum": float(np.abs(flat).sum()),
            "values": [float(v) for v in flat[picks]],
        }
    return prints


@pytest.mark.parametrize("algo", list(PRESETS))
def test_each_preset_ends_with_the_recorded_parameters(algo: str) -> None:
    recorded = json.loads(FINGERPRINTS.read_text())[algo]
    now = fingerprint(algo)
    assert set(now) == set(recorded)
    for name, expected in recorded.items():
        got = now[name]
        assert got["size"] == expected["size"], name
        # Not bitwise: XLA may fuse the same program differently on another machine.
        for key in ("sum", "abs_sum", "values"):
            np.testing.assert_allclose(got[key], expected[key], rtol=1e-5, atol=1e-6, err_msg=name)


def main() -> None:
    """``--write``: record every preset's fingerprint with the quick tests' compile settings."""
    if "--write" not in sys.argv:
        raise SystemExit("usage: python tests/test_presets.py --write")
    os.environ["JAX_DISABLE_MOST_OPTIMIZATIONS"] = "1"
    jax.config.update("jax_disable_most_optimizations", True)
    prints = {algo: fingerprint(algo) for algo in PRESETS}
    FINGERPRINTS.write_text(json.dumps(prints, indent=2) + "\n")
    print(f"wrote {FINGERPRINTS}")


if __name__ == "__main__":
    main()
