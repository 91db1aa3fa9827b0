"""``b2mapo.load_policy``: a trained policy used from Python, outside the training loop."""

from __future__ import annotations

import contextlib
import io
import re
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import b2mapo
from b2mapo import rundir
from b2mapo.config import ConfigError
from b2mapo.policy import load_state

DOC = Path(__file__).parent.parent / "docs" / "using_a_policy.md"


def _play_like_evaluation(policy, key: jax.Array, episodes: int):
    """The first episode of ``episodes`` envs, with the key schedule of ``Trainer._play``."""
    env = policy.env
    reset_key, key = jax.random.split(key)
    env_state, ts = jax.vmap(env.reset)(jax.random.split(reset_key, episodes))
    state = policy.initial_state(episodes)
    finished = jnp.zeros(episodes, bool)
    won = jnp.zeros(episodes, bool)
    ret = jnp.zeros(episodes)

    @jax.jit
    def step(state, env_state, ts, key):
        action_key, env_key = jax.random.split(key)
        state, action = policy.act(state, ts.obs, ts.avail, action_key, greedy=True)
        env_state, ts = jax.vmap(env.step)(jax.random.split(env_key, episodes), env_state, action)
        return policy.reset(state, ts.done), env_state, ts

    for step_key in jax.random.split(key, policy.spec.episode_limit):
        state, env_state, ts = step(state, env_state, ts, step_key)
        ends_now = ts.done & ~finished
        won = jnp.where(ends_now, ts.won, won)
        ret = jnp.where(ends_now, ts.episode_return, ret)
        finished |= ts.done
    return won.mean(), ret.mean()


def test_load_policy_reproduces_the_evaluation_of_its_checkpoint(b2mapo_run: Path) -> None:
    policy = b2mapo.load_policy(b2mapo_run)
    trainer, update, state = load_state(b2mapo_run)
    assert policy.update == update > 0
    key = jax.random.PRNGKey(11)
    expected = trainer.evaluate(trainer.policies(state), key[None], True, False)[""]
    derived_key, _ = jax.random.split(key)  # evaluation plays π_ind on the first half of its key
    episodes = trainer.cfg.eval_episodes
    win_rate, episode_return = _play_like_evaluation(policy, derived_key, episodes)
    assert float(win_rate) == pytest.approx(float(expected.won[0].mean()))
    assert float(episode_return) == pytest.approx(
        float(expected.episode_return[0].mean()), rel=1e-5
    )


def test_the_documented_example_plays_episodes(b2mapo_run: Path) -> None:
    code = re.search(r"```python\n(.*?)```", DOC.read_text(), re.S)
    assert code is not None, "docs/using_a_policy.md has no python example"
    source = code.group(1).replace('"runs/smax_3m_b2mapo"', repr(str(b2mapo_run)))
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        exec(compile(source, str(DOC), "exec"), {})
    printed = output.getvalue()
    found = re.fullmatch(r"won (\d+) of 32 episodes \(update (\d+) of b2mapo\)\n", printed)
    assert found is not None, printed
    assert 0 <= int(found.group(1)) <= 32


def test_the_policy_acts_only_on_available_actions(b2mapo_run: Path) -> None:
    policy = b2mapo.load_policy(b2mapo_run)
    _, ts = jax.vmap(policy.env.reset)(jax.random.split(jax.random.PRNGKey(0), 8))
    avail = ts.avail.at[:, :, 1:].set(False)  # only action 0 available
    _, actions = policy.act(policy.initial_state(8), ts.obs, avail, jax.random.PRNGKey(1), False)
    assert actions.shape == (8, policy.spec.num_agents)
    np.testing.assert_array_equal(actions, 0)


def test_a_checkpoint_of_another_config_is_refused(b2mapo_run: Path, tmp_path: Path) -> None:
    copy = tmp_path / "run"
    shutil.copytree(b2mapo_run, copy)
    rundir.write_config(copy, {**rundir.read_config(copy), "hidden_size": 16})
    with pytest.raises(ConfigError, match=r"does not match|other shapes"):
        b2mapo.load_policy(copy)


def test_a_missing_seed_is_refused(b2mapo_run: Path) -> None:
    with pytest.raises(ConfigError, match=re.escape("seed_index=3 must be in 0..0")):
        b2mapo.load_policy(b2mapo_run, seed_index=3)
