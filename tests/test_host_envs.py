"""Host environments (``b2mapo.envs.host``): the PettingZoo and football adapters, the
worker pool inside the compiled loop, learning through it, and its faults."""

from __future__ import annotations

import importlib.util
import json
import multiprocessing
from functools import partial
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from b2mapo.envs.host.pettingzoo import PettingZooEnv
from b2mapo.envs.host.pool import HostEnv
from b2mapo.errors import HostEnvError
from b2mapo.rundir import METRICS_FILE, checkpoints
from b2mapo.runner import evaluate, train
from b2mapo.train import Trainer

HOST_GAME = "pettingzoo:tests.host_envs"
SIZES = {"num_envs": 16, "rollout_len": 16, "recurrent_chunk": 8, "hidden_size": 32}


def pettingzoo(module: str, episode_limit: int | None = None, **kwargs: Any) -> PettingZooEnv:
    return PettingZooEnv(f"pettingzoo:{module}", module, kwargs, episode_limit)


def test_pettingzoo_agents_are_padded_masked_and_absent_agents_stand_still() -> None:
    """Relay: ragged observations and actions are padded; masks come from the dict
    observations; with no ``state()`` the state is the observations concatenated; an agent
    that has left sees zeros, may only take action 0 and is not sent an action."""
    env = pettingzoo("tests.host_envs", episode_limit=10, game="relay")
    assert (env.spec.num_agents, env.spec.obs_dim, env.spec.num_actions) == (3, 3, 3)
    assert env.spec.state_dim == 9
    first = env.reset(seed=0)
    np.testing.assert_allclose(first["obs"][1], [0.2, 0.2, 0.0])  # padded
    np.testing.assert_array_equal(first["avail"], [[0, 1, 1], [0, 1, 0], [0, 1, 1]])
    np.testing.assert_allclose(first["state"], first["obs"].reshape(-1))

    one = env.step(np.array([1, 1, 2]))
    np.testing.assert_array_equal(one["obs"][2], 0.0)  # the leaver has left
    np.testing.assert_array_equal(one["avail"][2], [1, 0, 0])
    assert (one["reward"], one["terminated"], one["truncated"], one["won"]) == (1.0, 0, 0, 0)

    two = env.step(np.array([1, 1, 0]))
    assert "leaver" not in env._env.last_actions
    assert (two["terminated"], two["truncated"], two["won"]) == (1, 0, 1)
    assert (two["episode_return"], two["episode_length"]) == (3.0, 2)  # mean rewards 1 + 2
    np.testing.assert_allclose(two["obs"], first["obs"])  # the next episode's start


def test_pettingzoo_state_and_time_limit() -> None:
    """simple_spread: the state is ``state()``, the limit ``max_cycles``, and its end is a
    truncation, after which the next episode starts."""
    env = pettingzoo("mpe2.simple_spread_v3")
    spec = env.spec
    assert (spec.num_agents, spec.obs_dim, spec.state_dim, spec.num_actions) == (3, 18, 54, 5)
    assert spec.episode_limit == 25
    env.reset(seed=1)
    for step in range(1, 26):
        out = env.step(np.zeros(3, int))
        assert out["truncated"] == (step == 25) and not out["terminated"]
    assert out["episode_length"] == 25
    assert env.step(np.zeros(3, int))["episode_length"] == 1


def test_pool_sends_each_env_its_own_actions() -> None:
    """A pool of 6 envs over 2 workers inside ``jit``: every env sees its own random target
    and agents that play it are paid 1, so no env got another's actions; shapes and dtypes
    are those of the JAX path; the actions reach the workers as numpy arrays (JAX's arrays
    would import JAX there and make every step several times slower)."""
    factory = partial(PettingZooEnv, "t", "tests.host_envs", {"jax_free": True}, None)
    pool = HostEnv("t", factory, timeout=60.0).pool(6, 2)
    try:

        @jax.jit
        def play(key: jax.Array) -> tuple:
            states, first = pool.reset_batch(jax.random.split(key, 6))
            targets = jnp.argmax(first.obs[..., :4], axis=-1)  # [6, 2]
            _, stepped = pool.step_batch(jax.random.split(key, 6), states, targets)
            return first, stepped

        first, stepped = play(jax.random.PRNGKey(0))
        assert first.obs.shape == (6, 2, 5) and first.avail.dtype == jnp.bool_
        assert stepped.episode_length.dtype == jnp.int32
        assert len({tuple(t) for t in np.argmax(first.obs[..., :4], -1).tolist()}) > 1
        np.testing.assert_array_equal(stepped.reward, 1.0)
    finally:
        pool.close()
    assert pool.workers == 2


def test_host_and_jax_paths_train_the_same(tiny_config: Any, tmp_path: Path) -> None:
    """The same deterministic game as a JAX environment (inside the compiled loop) and as a
    PettingZoo one (in worker processes) trains to the same parameters: one rollout layout
    and one engine for both paths."""
    finals = []
    for name, extra in (
        ("tests.user_envs:CycleTheTarget", {}),
        (HOST_GAME, {"env_kwargs": json.dumps({"cycle": True})}),
    ):
        cfg = tiny_config(env=name, out=str(tmp_path / name.replace(":", "_")), **extra)
        trainer = Trainer(cfg)
        try:
            state, _ = trainer.chunk(trainer.init())
            finals.append(jax.tree.leaves(state.learner.params))
        finally:
            trainer.close()
    for jax_leaf, host_leaf in zip(*finals, strict=True):
        np.testing.assert_allclose(jax_leaf, host_leaf, rtol=1e-5, atol=1e-6)


def _untrained_then_trained(cfg: Any, metric: str) -> tuple[float, float]:
    """The greedy ``metric`` of ``cfg``'s untrained policy and after training, each over
    ``final_eval_episodes`` episodes."""
    trainer = Trainer(cfg)
    try:
        untrained, _ = evaluate(trainer, trainer.init(), episodes=cfg.final_eval_episodes)
    finally:
        trainer.close()
    summary = train(cfg)
    return float(untrained[metric].mean()), float(summary.eval_greedy[metric].mean())


def test_mappo_learns_through_the_host_runner(tiny_config: Any) -> None:
    """MAPPO on the PettingZoo CallTheTarget: greedy win from at most 0.5 to at least 0.9."""
    cfg = tiny_config(
        env=HOST_GAME,
        **SIZES,
        updates_per_chunk=5,
        total_steps=8_000,
        lr=5e-3,
        eval_episodes=32,
        final_eval_episodes=128,
    )
    before, after = _untrained_then_trained(cfg, "win_rate")
    assert before <= 0.5 and after >= 0.9, (before, after)


def _failing_run(fault: str, tiny_config: Any, tmp_path: Path, workers: int) -> tuple[Any, Path]:
    """A config whose environment fails with ``fault`` in the third chunk (once the trigger
    file exists) over ``workers`` processes per pool, and that trigger, already created."""
    trigger = tmp_path / "fault"
    trigger.touch()
    kwargs = {fault: str(trigger), "fault_after": 40}  # in the third chunk of 16 steps
    cfg = tiny_config(
        env=HOST_GAME,
        env_kwargs=json.dumps(kwargs),
        env_workers=workers,
        worker_timeout=5.0,
        total_steps=4 * 8 * 8,
    )
    return cfg, trigger


def _stops_by_name(cfg: Any, message: str) -> str:
    """Train ``cfg`` into its failure; check the error and what is left; return the error."""
    with pytest.raises(HostEnvError) as error:
        train(cfg)
    text = str(error.value)
    assert HOST_GAME in text and message in text and "the same command resumes" in text
    assert multiprocessing.active_children() == []
    saved = [update for update, _ in checkpoints(Path(cfg.run_dir))]
    assert saved and max(saved) < cfg.num_updates and f"update_{max(saved):08d}" in text
    return text


def test_a_crashed_worker_stops_the_run_by_name_and_the_same_config_resumes(
    tiny_config: Any, tmp_path: Path
) -> None:
    """A worker process that dies mid-run stops training with an error naming the
    environment; the checkpoints stay, no worker process is left, and the same config
    resumes from the last checkpoint and finishes with every update logged once."""
    cfg, trigger = _failing_run("crash_file", tiny_config, tmp_path, workers=2)  # one survives
    _stops_by_name(cfg, "a worker process died")
    assert not trigger.exists()  # the crash was one-off
    summary = train(cfg)
    assert summary.updates == cfg.num_updates
    records = [json.loads(line) for line in (Path(cfg.run_dir) / METRICS_FILE).open()]
    updates = [r["update"] for r in records if r["kind"] == "train"]
    assert updates == list(range(1, cfg.num_updates + 1))


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        ("hang_file", "did not answer a step within 5 s"),
        ("raise_file", "raised ValueError: the referee walked off"),
    ],
)
def test_a_hung_or_raising_worker_stops_the_run_by_name(
    fault: str, message: str, tiny_config: Any, tmp_path: Path
) -> None:
    """A worker that hangs past ``worker_timeout`` or whose environment raises stops the
    run the same way: one error naming the environment and the fault, checkpoints kept,
    no worker process left."""
    cfg, _ = _failing_run(fault, tiny_config, tmp_path, workers=1)  # fewer processes to start
    _stops_by_name(cfg, message)


@pytest.mark.skipif(
    importlib.util.find_spec("gfootball") is None, reason="needs the football extra"
)
def test_football_counterattack_is_four_agents_scoring() -> None:
    """academy_counterattack_easy: four agents with simple115v2 observations, the state
    their concatenation, 19 actions; random play ends every episode within 400 steps."""
    from b2mapo.envs.host.football import FootballEnv

    env = FootballEnv("grf:academy_counterattack_easy", "academy_counterattack_easy", {}, None)
    spec = env.spec
    assert (spec.num_agents, spec.obs_dim, spec.state_dim, spec.num_actions) == (4, 115, 460, 19)
    assert spec.episode_limit == 400
    first = env.reset(seed=0)
    assert first["obs"].shape == (4, 115) and first["avail"].all()
    rng = np.random.default_rng(0)
    for _ in range(400):
        out = env.step(rng.integers(0, 19, 4))
        if out["terminated"] or out["truncated"]:
            break
    assert out["terminated"] or out["truncated"]
    assert 0 < out["episode_length"] <= 400
    assert out["won"] == (out["reward"] > 0)
    env.close()


def test_football_defaults_to_independent_parameters_and_options_win() -> None:
    """grf:... resolves to one parameter set per agent and football's sizes, between the
    algorithm's preset and explicit options; other families keep shared parameters."""
    from b2mapo.config import resolve

    football = resolve({"env": "grf:academy_counterattack_hard", "algo": "b2mapo"})
    assert not football.share_params and football.num_envs == 16
    assert football.partition == "learned"  # the preset still applies
    assert json.loads(football.env_kwargs) == {"rewards": "scoring,checkpoints"}
    chosen = resolve({"env": "grf:academy_counterattack_easy", "share_params": True})
    assert chosen.share_params
    assert resolve({"env": HOST_GAME}).share_params


@pytest.mark.slow
def test_mappo_beats_random_on_pettingzoo_simple_spread(tiny_config: Any) -> None:
    """PettingZoo's MPE simple spread through the host runner: MAPPO's greedy return after
    40k env steps beats the untrained policy's by a clear margin (seed 0: -45.5 -> -24.1)."""
    cfg = tiny_config(
        env="pettingzoo:mpe2.simple_spread_v3",
        **SIZES,
        updates_per_chunk=10,
        total_steps=40_000,
        eval_every=0,
        eval_episodes=32,
        final_eval_episodes=64,
    )
    before, after = _untrained_then_trained(cfg, "episode_return")
    assert after > before + 10.0, (before, after)
