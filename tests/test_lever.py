"""The DAG's lever (``b2mapo.upper.lever``): a π that ignores the earlier batches' actions
gives the layering no say over the period's return; one that leans on them gives it one."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from b2mapo import checkpoint
from b2mapo.cli import main
from b2mapo.config import resolve
from b2mapo.train import Trainer
from b2mapo.upper import lever
from tests.conftest import TINY, leaning_on_partners


@pytest.fixture(scope="module")
def untrained(tmp_path_factory):
    """An untrained B2MAPO on probe:coupled (whose reward pays pairs for matching actions)
    and one seed's policies."""
    out = str(tmp_path_factory.mktemp("lever") / "run")
    cfg = resolve({**TINY, "env": "probe:coupled", "algo": "b2mapo", "dag_period": 4, "out": out})
    trainer = Trainer(cfg)
    policies = jax.tree.map(lambda x: x[0], trainer.policies(trainer.init()))
    return trainer.round, policies


def with_preceding_weight(policies, weight: float, head_scale: float):
    """``policies`` with π's earlier-batch action input scaled by ``weight`` (0: π ignores
    its partners) and its policy head by ``head_scale`` (a decisive π)."""
    actor = leaning_on_partners(policies.joint["actor"], weight, head_scale)
    return policies._replace(joint={**policies.joint, "actor": actor})


def test_a_pi_that_ignores_its_partners_gives_the_layering_no_lever(untrained) -> None:
    learned, policies = untrained
    deaf = with_preceding_weight(policies, 0.0, 100.0)
    result = lever.measure(learned, deaf, jax.random.key(0), resets=2, periods=2)
    assert result.returns.shape == (4, 4, 16)
    assert result.returns.std() > 0.0  # the returns vary, over states and keys
    assert result.layering_share == 0.0
    assert result.preceding_kl == 0.0


def test_a_pi_that_follows_its_partners_gives_the_layering_a_lever(untrained) -> None:
    learned, policies = untrained
    follower = with_preceding_weight(policies, 30.0, 100.0)
    result = lever.measure(learned, follower, jax.random.key(0), resets=2, periods=2)
    assert result.layering_share > 0.1, result.to_dict()
    assert result.preceding_kl > 0.1, result.to_dict()
    np.testing.assert_array_equal(result.layerings[:, 0], 0)  # one batch: nobody sees anyone


def test_lever_command_writes_every_seeds_figures(b2mapo_run, tmp_path) -> None:
    out = tmp_path / "lever.json"
    args = ["lever", str(b2mapo_run), "--resets", "1", "--periods", "2", "--keys", "2"]
    main([*args, "--out", str(out)])
    written = json.loads(out.read_text())
    seeds = checkpoint.load_config(b2mapo_run).seeds
    assert [row["seed"] for row in written["seeds"]] == list(range(seeds))
    for row in written["seeds"]:
        assert 0.0 <= row["layering_share"] <= 1.0
        assert row["preceding_kl"] >= 0.0


def test_lever_command_refuses_a_bad_count_in_one_line(b2mapo_run, capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["lever", str(b2mapo_run), "--keys", "0"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.strip() == (
        "b2mapo lever: error: --keys 0 must be a positive integer"
    )
