"""The config's closed choices and field tags: one owner per fact, read where it is needed."""

from __future__ import annotations

import pytest

from b2mapo.cli import main
from b2mapo.config import PRESETS, ConfigError, field_choices, resolve, tagged_fields
from b2mapo.derived import DERIVED_POLICIES
from b2mapo.partition import PARTITIONERS


def test_field_tags_are_the_sets_they_replaced() -> None:
    """The tagged fields are exactly the three sets once spelled in checkpoint.py,
    exported.py and reproduce/report.py."""
    resumable = {
        "eval_every",
        "eval_episodes",
        "final_eval_episodes",
        "out",
        "wandb_project",
        "devices",
        "env_workers",
        "worker_timeout",
    }
    host_only = {
        "out",
        "wandb_project",
        "seed",
        "eval_every",
        "eval_episodes",
        "final_eval_episodes",
    }
    assert tagged_fields("resumable") == resumable
    assert tagged_fields("host_only") == host_only
    assert tagged_fields("mergeable") == resumable | {"seed", "seeds", "out", "time_updates"}


def test_choices_come_from_the_registries() -> None:
    """Partitions are the partitioner registry plus learned; algorithms the presets; derived
    policies their registry."""
    choices = field_choices()
    assert choices["partition"] == (*PARTITIONERS, "learned")
    assert choices["algo"] == tuple(PRESETS)
    assert set(choices["derived"]) == set(DERIVED_POLICIES)
    assert set(choices) == {
        "algo",
        "partition",
        "ratio",
        "advantage",
        "preceding_factor",
        "derived",
        "derived_ratio",
        "distill_teacher",
        "dag_credit",
    }


def test_a_bad_choice_names_the_allowed_values() -> None:
    with pytest.raises(ConfigError, match="unknown ratio 'both'; choose one of: per_agent, joint"):
        resolve({"ratio": "both"})


def test_train_help_lists_the_choices(capsys: pytest.CaptureFixture[str]) -> None:
    """tyro shows a closed choice's values and keeps the field's docstring."""
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--help"])
    assert exit_info.value.code == 0
    help_text = " ".join(capsys.readouterr().out.split())
    assert "{per_agent,joint}" in help_text
    assert "{none,happo,clipped}" in help_text
    assert "Evaluate every this many updates" in help_text  # a tagged field's docstring
