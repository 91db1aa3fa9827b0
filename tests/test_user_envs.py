"""A user's own JAX environment (jaxmarl's MultiAgentEnv API), by import path or registered,
trains inside the compiled loop; one that breaks the contract is refused by name."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp
import pytest

from b2mapo import envs
from b2mapo.config import ConfigError, resolve
from b2mapo.runner import evaluate, train
from b2mapo.train import Trainer
from tests.user_envs import CallTheTarget

GAME = "tests.user_envs:CallTheTarget"


def test_an_imported_env_follows_the_contract() -> None:
    """Shapes from reset, masks from get_avail_actions, the concatenated observations as the
    state, the mean reward, the win flag from infos and jaxmarl's time limit as a truncation."""
    env = envs.make_env(GAME)
    assert (env.spec.num_agents, env.spec.obs_dim, env.spec.num_actions) == (2, 5, 4)
    assert (env.spec.state_dim, env.spec.episode_limit) == (10, 5)
    state, ts = jax.jit(env.reset)(jax.random.PRNGKey(0))
    assert ts.avail.tolist() == [[True, True, True, False]] * 2
    assert jnp.array_equal(ts.state, ts.obs.reshape(-1))
    step = jax.jit(env.step)
    rewards = []
    for i in range(4):
        target = jnp.argmax(ts.obs[0, :4])
        state, ts = step(jax.random.PRNGKey(i), state, jnp.array([target, (target + 1) % 3]))
        rewards.append(float(ts.reward))
    assert rewards == [0.5] * 4
    assert bool(ts.done) and bool(ts.truncated) and not bool(ts.terminated)
    assert not bool(ts.won)  # one agent missed
    assert int(ts.episode_length) == 4
    assert envs.make_env("tests.user_envs:three_agents").spec.num_agents == 3  # a factory


def test_an_episode_limit_is_enforced_by_b2mapo() -> None:
    """``--episode-limit`` shorter than the env's own ends episodes as truncations."""
    env = envs.make_env(GAME, episode_limit=2)
    state, ts = env.reset(jax.random.PRNGKey(0))
    for i in range(2):
        state, ts = env.step(jax.random.PRNGKey(i), state, jnp.array([0, 0]))
    assert bool(ts.truncated) and int(ts.episode_length) == 2 and env.spec.episode_limit == 2


@pytest.mark.parametrize(
    ("name", "named"),
    [
        ("tests.user_envs:RaggedObservations", "one size for all agents"),
        ("tests.user_envs:ContinuousActions", "discrete"),
        ("tests.user_envs:Missing", "has no 'Missing'"),
        ("tests.user_envs:NOT_AN_ENV", "class or a zero-argument factory"),
        ("nosuch.module:Game", "no module 'nosuch.module'"),
    ],
)
def test_a_broken_env_is_refused_by_name(name: str, named: str) -> None:
    with pytest.raises(ConfigError, match=named) as error:
        Trainer(resolve({"env": name}))
    assert name in str(error.value) and "\n" not in str(error.value)


def test_a_registered_env_cannot_shadow_a_built_in_one() -> None:
    with pytest.raises(ConfigError, match="built in"):
        envs.register("smax:3m", CallTheTarget)


@pytest.fixture
def registered() -> Iterator[str]:
    """``CallTheTarget`` registered under a name for the test's length."""
    envs.register("call-the-target:v0", CallTheTarget)
    yield "call-the-target:v0"
    del envs.REGISTRY["call-the-target:v0"]


def test_mappo_learns_a_registered_env(tiny_config: Any, registered: str) -> None:
    """Registered from Python, the user's env trains like a built-in one: MAPPO's greedy win
    rate (both agents hit the last target) goes from at most 0.5 to at least 0.9."""
    sizes = {"num_envs": 16, "rollout_len": 16, "recurrent_chunk": 8, "hidden_size": 32}
    cfg = tiny_config(
        env=registered,
        **sizes,
        updates_per_chunk=5,
        total_steps=8_000,
        lr=5e-3,
        final_eval_episodes=128,
    )
    trainer = Trainer(cfg)
    untrained, _ = evaluate(trainer, trainer.init(), episodes=128)
    summary = train(cfg)
    before, after = untrained["win_rate"].mean(), summary.eval_greedy["win_rate"].mean()
    assert before <= 0.5 and after >= 0.9, (before, after)
