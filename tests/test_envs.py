"""Conformance of every registered environment to the b2mapo environment contract.

Each environment is built once with a short time limit, reset on a couple of keys and stepped
for a few steps (random available actions) with one jitted step; the recorded rollout is
shared by the parametrized checks below. The won flag is checked on hand-made SMAX battles.
"""

from __future__ import annotations

import copy
import functools
import subprocess
import sys
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from b2mapo.envs import REGISTRY, Env, EnvSpec, TimeStep, UnknownEnvError, make_env
from b2mapo.envs.core import WrappedState
from b2mapo.envs.probes import TargetWalk

NAMES = list(REGISTRY)
MPE_NAMES = [name for name in NAMES if name.startswith("mpe:")]
PROBE_NAMES = [name for name in NAMES if name.startswith("probe:")]
# The quick set checks one map of each kind: homogeneous, mixed unit types, SMACv2's
# procedural units, the two maps b2mapo composes itself, MPE and the probe. SMAX maps differ
# only in their unit lists, and each costs a SMAX compile (about 15 s), so the other maps run
# with the slow set.
QUICK_NAMES = {
    "smax:3m",
    "smax:2s3z",
    "smax:smacv2_5_units",
    "smax:8m_vs_9m",
    "smax:6z_vs_24zg",
    *MPE_NAMES,
    *PROBE_NAMES,
}
MAPS = [
    name if name in QUICK_NAMES else pytest.param(name, marks=pytest.mark.slow) for name in NAMES
]

EPISODE_LIMIT = 3  # a short override, so that a few steps span several auto-resets
NUM_ENVS = 2
SEED = 0

# jaxmarl SMAX: actions 0-3 move, 4 is "stop" (the only action left to a dead unit: see
# ``SMAX.get_avail_actions``), 5.. attack enemy ``action - 5``.
NUM_MOVES = 4
STOP = 4
# jaxmarl SMAX's default ``won_battle_bonus``. The damage part of the team reward is the mean
# fraction of enemy health removed in the step, at most 1, so ``reward >= 1`` means the bonus
# was paid (or, never seen in practice, every enemy died from full health in one step).
WON_BATTLE_BONUS = 1.0

StepFn = Callable[[jax.Array, Any, jax.Array], tuple[Any, TimeStep]]


class Rollout(NamedTuple):
    """A short recorded run of one environment, as numpy arrays."""

    spec: EnvSpec
    reset: TimeStep  # leaves [B, ...]
    steps: TimeStep  # leaves [T, B, ...]
    reset_dtypes: dict[str, np.dtype]
    step_dtypes: dict[str, np.dtype]
    ally_alive: np.ndarray | None  # [T, B, n] for SMAX: ally alive in the state after each step
    weak_typed: list[str]  # paths of weakly typed leaves in reset/step outputs
    cache_size: int  # compilations of the jitted step after feeding it its own outputs


@functools.cache
def _env_and_step(name: str) -> tuple[Env, StepFn]:
    env = make_env(name, episode_limit=EPISODE_LIMIT)
    return env, jax.jit(env.step)


def _stack(trees: list[Any], axis: int = 0) -> Any:
    return jax.tree.map(lambda *leaves: np.stack(leaves, axis=axis), *trees)


def _weak_paths(tree: Any, prefix: str) -> list[str]:
    leaves = jax.tree_util.tree_leaves_with_path(tree)
    return [prefix + jax.tree_util.keystr(path) for path, leaf in leaves if leaf.weak_type]


def _dtypes(timestep: TimeStep) -> dict[str, np.dtype]:
    return {field: np.dtype(value.dtype) for field, value in timestep._asdict().items()}


def _random_available(rng: np.random.Generator, avail: np.ndarray) -> np.ndarray:
    """A uniformly random available action per agent ([n, A] mask -> [n] int32)."""
    scores = np.where(avail, rng.random(avail.shape), -1.0)
    return np.argmax(scores, axis=-1).astype(np.int32)


def _walk_cells(obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """probe:walk's cells and targets, read off its one-hot observations [..., 2 * cells]."""
    cells = obs.shape[-1] // 2
    return obs[..., :cells].argmax(-1), obs[..., cells:].argmax(-1)


def _walk_avail(obs: np.ndarray) -> np.ndarray:
    """probe:walk's mask, from first principles: on its target an agent may only stay, else it
    may make every move that keeps it on the line."""
    cell, target = _walk_cells(obs)
    landing = cell[..., None] + np.asarray(TargetWalk.MOVES)
    on_line = (landing >= 0) & (landing < obs.shape[-1] // 2)
    stay_only = np.asarray(TargetWalk.MOVES) == 0
    return np.where((cell == target)[..., None], stay_only, on_line)


@functools.cache
def _rollout(name: str) -> Rollout:
    # One jitted (not vmapped: it compiles faster) step drives NUM_ENVS independent runs.
    env, step = _env_and_step(name)
    num_steps = 2 * env.spec.episode_limit + 2
    rng = np.random.default_rng(SEED)
    resets, runs, alive, weak = [], [], [], []
    for i, key in enumerate(jax.random.split(jax.random.PRNGKey(SEED), NUM_ENVS)):
        state, timestep = env.reset(key)
        resets.append(timestep)
        weak += _weak_paths((state, timestep), f"reset[{i}]")
        run, run_alive = [], []
        for t in range(num_steps):
            actions = jnp.asarray(_random_available(rng, np.asarray(timestep.avail)))
            state, timestep = step(jax.random.fold_in(key, t), state, actions)
            if t == 0:
                weak += _weak_paths((state, timestep), f"step[{i}]")
            run.append(timestep)
            if name.startswith("smax:"):
                run_alive.append(np.asarray(state.inner.state.unit_alive[: env.spec.num_agents]))
        runs.append(_stack(run))
        alive.append(np.stack(run_alive) if run_alive else None)

    return Rollout(
        spec=env.spec,
        reset=_stack(resets),
        steps=_stack(runs, axis=1),
        reset_dtypes=_dtypes(resets[0]),
        step_dtypes=_dtypes(runs[0]),
        ally_alive=np.stack(alive, axis=1) if alive[0] is not None else None,
        weak_typed=weak,
        cache_size=step._cache_size(),  # type: ignore[attr-defined]
    )


def _expected_shapes(spec: EnvSpec) -> dict[str, tuple[tuple[int, ...], type]]:
    n, a = spec.num_agents, spec.num_actions
    return {
        "obs": ((n, spec.obs_dim), np.float32),
        "state": ((spec.state_dim,), np.float32),
        "avail": ((n, a), np.bool_),
        "reward": ((), np.float32),
        "terminated": ((), np.bool_),
        "truncated": ((), np.bool_),
        "won": ((), np.bool_),
        "final_state": ((spec.state_dim,), np.float32),
        "episode_return": ((), np.float32),
        "episode_length": ((), np.int32),
    }


@pytest.mark.parametrize("name", MAPS)
def test_timestep_shapes_and_dtypes(name: str) -> None:
    """Every TimeStep field of reset and step has the spec's shape and the contract's dtype."""
    ro = _rollout(name)
    spec = ro.spec
    assert spec.name == name
    assert min(spec.num_agents, spec.obs_dim, spec.state_dim, spec.num_actions) > 0
    num_steps = ro.steps.reward.shape[0]
    for field, (shape, dtype) in _expected_shapes(spec).items():
        assert ro.reset_dtypes[field] == dtype, f"reset {field}: {ro.reset_dtypes[field]}"
        assert ro.step_dtypes[field] == dtype, f"step {field}: {ro.step_dtypes[field]}"
        reset_value = getattr(ro.reset, field)
        step_value = getattr(ro.steps, field)
        assert reset_value.shape == (NUM_ENVS, *shape), f"reset {field}: {reset_value.shape}"
        assert step_value.shape == (num_steps, NUM_ENVS, *shape), f"step {field}"
    for timestep in (ro.reset, ro.steps):
        for field in ("obs", "state", "final_state", "reward", "episode_return"):
            assert np.all(np.isfinite(getattr(timestep, field))), field


@pytest.mark.parametrize("name", MAPS)
def test_available_actions(name: str) -> None:
    """Every agent has an available action; in SMAX a dead ally can only stop, a live one can
    always move and stop; in probe:walk an agent on its target can only stay, others every
    move that stays on the line; elsewhere (MPE, climbing) every action is always available."""
    ro = _rollout(name)
    avail = np.concatenate([ro.reset.avail[None], ro.steps.avail])  # [T+1, B, n, A]
    assert np.all(avail.any(axis=-1))
    if name == "probe:walk":
        obs = np.concatenate([ro.reset.obs[None], ro.steps.obs])
        np.testing.assert_array_equal(avail, _walk_avail(obs))
        assert not np.all(avail)
        return
    if not name.startswith("smax:"):
        assert np.all(avail)
        return
    assert ro.ally_alive is not None
    stop_only = np.zeros(ro.spec.num_actions, dtype=bool)
    stop_only[STOP] = True
    steps_avail = ro.steps.avail
    dead = ~ro.ally_alive
    assert np.all(steps_avail[dead] == stop_only)
    assert np.all(steps_avail[~dead][:, : NUM_MOVES + 1])
    assert np.all(ro.reset.avail[..., : NUM_MOVES + 1])  # everyone is alive after a reset


@pytest.mark.parametrize("name", MAPS)
def test_episode_bookkeeping_and_flags(name: str) -> None:
    """Auto-reset bookkeeping (running/final return and length, length 1 after a done step) and
    the done flags: terminated and truncated exclusive, won only on termination."""
    ro = _rollout(name)
    reset, steps = ro.reset, ro.steps
    assert np.all(reset.episode_length == 0) and np.all(reset.episode_return == 0.0)
    assert not np.any(reset.terminated | reset.truncated | reset.won)
    assert np.all(reset.reward == 0.0)

    done = steps.terminated | steps.truncated
    assert not np.any(steps.terminated & steps.truncated)
    assert not np.any(steps.won & ~steps.terminated)
    assert np.any(done), "the rollout should span at least one auto-reset"

    length = np.zeros(NUM_ENVS, dtype=np.int32)
    total = np.zeros(NUM_ENVS, dtype=np.float32)
    for t in range(steps.reward.shape[0]):
        length, total = length + 1, total + steps.reward[t]
        np.testing.assert_array_equal(steps.episode_length[t], length, err_msg=f"step {t}")
        np.testing.assert_allclose(steps.episode_return[t], total, rtol=1e-5, atol=1e-6)
        if t > 0:
            np.testing.assert_array_equal(steps.episode_length[t][done[t - 1]], 1)
        length = np.where(done[t], 0, length).astype(np.int32)
        total = np.where(done[t], 0.0, total).astype(np.float32)

    if name in MPE_NAMES:
        assert not np.any(steps.won) and not np.any(steps.terminated)
    elif name == "probe:walk":  # all arrived is a win, each arrival pays 1/n
        np.testing.assert_allclose(steps.episode_return[steps.won], 1.0, rtol=1e-6)
        assert np.all(steps.episode_return[done & ~steps.won] < 1.0 - 1e-3)
    if name in PROBE_NAMES:  # won or lost, a probe's episode ends by termination
        np.testing.assert_array_equal(steps.terminated, done)
    elif name.startswith("smax:"):
        np.testing.assert_array_equal(steps.won, steps.reward >= WON_BATTLE_BONUS)


@pytest.mark.parametrize("name", MAPS)
def test_episode_limit(name: str) -> None:
    """Episodes never outlast spec.episode_limit, and a truncated one lasts exactly that long.
    A probe's limit is part of its game (its state carries the time): reaching it terminates."""
    ro = _rollout(name)
    limit, steps = ro.spec.episode_limit, ro.steps
    longest = int(steps.episode_length.max())
    assert longest <= limit, f"spec.episode_limit is {limit} but an episode lasted {longest}"
    assert np.any(steps.truncated) == (name not in PROBE_NAMES)
    np.testing.assert_array_equal(steps.episode_length[steps.truncated], limit)
    reached = steps.episode_length == limit
    assert np.all(steps.truncated[reached] | steps.terminated[reached])


@pytest.mark.parametrize("name", MAPS)
def test_step_compiles_once(name: str) -> None:
    """A jitted step fed the reset state, then its own outputs, compiles once (no weak types)."""
    ro = _rollout(name)
    assert ro.weak_typed == []
    assert ro.cache_size == 1


@pytest.mark.parametrize("name", ["smax:3m", *MPE_NAMES])
def test_a_step_observes_the_state_it_hands_on_as_the_env_itself_does(name: str) -> None:
    """SMAX and MPE steps observe the state they hand on (after the auto-reset) themselves;
    the recorded rollout equals, field by field, the same run of an adapter that takes the
    wrapped env's own observations of the stepped state and of the fresh reset instead."""
    ro = _rollout(name)
    env, _ = _env_and_step(name)
    assert env._raw_obs(env.reset(jax.random.PRNGKey(0))[0].inner) is not None
    choosing = copy.copy(env)
    choosing._raw_obs = lambda inner: None  # the wrapped env's own observations, chosen
    step = jax.jit(choosing.step)
    rng = np.random.default_rng(SEED)
    for i, key in enumerate(jax.random.split(jax.random.PRNGKey(SEED), NUM_ENVS)):
        state, timestep = choosing.reset(key)
        for t in range(ro.steps.reward.shape[0]):
            actions = jnp.asarray(_random_available(rng, np.asarray(timestep.avail)))
            state, timestep = step(jax.random.fold_in(key, t), state, actions)
            for field, value in timestep._asdict().items():
                recorded = getattr(ro.steps, field)[t, i]
                np.testing.assert_array_equal(value, recorded, err_msg=f"{field}, step {t}")


def test_unknown_env_name() -> None:
    """make_env rejects an unknown name with an error naming it and listing the allowed ones."""
    with pytest.raises(UnknownEnvError) as excinfo:
        make_env("smax:nope")
    message = str(excinfo.value)
    assert "smax:nope" in message
    for name in NAMES:
        assert name in message
    assert issubclass(UnknownEnvError, ValueError)


# Hand-made battles on smax:3m: three allies face three marines two units away (in range).
BATTLE_MAP = "smax:3m"
MARINE_HEALTH = 45.0
UNIT_FEATURES = 10  # world state per unit: health, x, y, cooldown, 6 unit-type bits


def _battle(base: WrappedState, ally_health: list[float], enemy_health: list[float]) -> Any:
    smax = base.inner.state
    rows = jnp.array([15.0, 16.0, 17.0])
    allies = jnp.stack([jnp.full(3, 15.0), rows], axis=-1)
    enemies = jnp.stack([jnp.full(3, 17.0), rows], axis=-1)
    health = jnp.array(ally_health + enemy_health, dtype=smax.unit_health.dtype)
    smax = smax.replace(
        unit_positions=jnp.concatenate([allies, enemies]).astype(smax.unit_positions.dtype),
        unit_health=health,
        unit_alive=health > 0,
    )
    return base._replace(inner=base.inner.replace(state=smax))


def test_smax_won_flag() -> None:
    """On crafted smax:3m battles, won is set exactly when the won-battle bonus is paid: a win
    (bonus), a draw and a loss (no bonus), and a lost ally who may then only stop."""
    env, step = _env_and_step(BATTLE_MAP)
    assert env.spec.state_dim == 6 * (UNIT_FEATURES + 2)
    base, _ = env.reset(jax.random.PRNGKey(SEED))
    full, low = [MARINE_HEALTH] * 3, [1.0] * 3
    attack = [NUM_MOVES + 1 + i for i in range(3)]  # ally i attacks enemy i
    stop = [STOP] * 3
    battles = {  # name: (ally health, enemy health, ally actions)
        "win": (full, low, attack),
        "draw": (low, low, attack),
        "loss": (low, full, stop),
        "casualty": ([1.0, MARINE_HEALTH, MARINE_HEALTH], full, stop),
    }
    results: dict[str, TimeStep] = {}
    for b, (ally_health, enemy_health, actions) in battles.items():
        state = _battle(base, ally_health, enemy_health)
        _, timestep = step(jax.random.PRNGKey(7), state, jnp.array(actions, dtype=jnp.int32))
        results[b] = jax.tree.map(np.asarray, timestep)

    health = {b: ts.final_state[: 6 * UNIT_FEATURES : UNIT_FEATURES] for b, ts in results.items()}
    damage = 3 * (1.0 / MARINE_HEALTH) / 3  # mean fraction of enemy health removed

    win = results["win"]
    assert win.won and win.terminated and not win.truncated
    np.testing.assert_allclose(win.reward, WON_BATTLE_BONUS + damage, rtol=1e-5)
    assert np.all(health["win"][3:] == 0) and np.all(health["win"][:3] > 0)
    assert win.episode_length == 1 and win.episode_return == win.reward
    assert np.all(win.state[: 6 * UNIT_FEATURES : UNIT_FEATURES] == 1.0)  # next episode

    for b in ("draw", "loss"):
        ts = results[b]
        assert ts.terminated and not ts.won and not ts.truncated, b
        assert ts.reward < WON_BATTLE_BONUS, b
        assert np.all(health[b][:3] == 0), b
    np.testing.assert_allclose(results["draw"].reward, damage, rtol=1e-5)
    assert np.all(health["draw"][3:] == 0)
    assert results["loss"].reward == 0.0

    casualty = results["casualty"]
    assert not (casualty.terminated or casualty.truncated or casualty.won)
    assert health["casualty"][0] == 0 and np.all(health["casualty"][1:] > 0)
    expected_avail = np.zeros(env.spec.num_actions, dtype=bool)
    expected_avail[STOP] = True
    np.testing.assert_array_equal(casualty.avail[0], expected_avail)
    assert np.all(casualty.avail[1:, : NUM_MOVES + 1])


def test_only_the_wrapped_jaxmarl_environments_load_and_jaxmarl_still_imports() -> None:
    """b2mapo loads SMAX and MPE without building every jaxmarl environment (seconds of
    import time), and a user's later ``import jaxmarl`` still gets the whole package."""
    script = (
        "import sys, b2mapo.envs\n"
        "print(sorted(m for m in ('jaxmarl.environments.storm', 'jaxmarl.environments.hanabi')"
        " if m in sys.modules))\n"
        "import jaxmarl\n"
        "from b2mapo.envs.smax import HeuristicEnemySMAX\n"
        "from jaxmarl.environments.smax import HeuristicEnemySMAX as Theirs\n"
        "print(HeuristicEnemySMAX is Theirs, type(jaxmarl.make('MPE_simple_spread_v3')).__name__)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=True
    )
    lines = result.stdout.splitlines()
    assert lines[0] == "[]"
    assert lines[-1] == "True SimpleSpreadMPE"


def test_walking_to_the_targets_wins_probe_walk() -> None:
    """In probe:walk, agents that head straight for their targets (two cells a step while
    they can) all arrive within three steps: a terminated, won episode of return 1 whose
    next observation is a fresh episode's; an unavailable move leaves an agent in place."""
    env, step = _env_and_step("probe:walk")
    moves = np.asarray(TargetWalk.MOVES)
    for seed in range(8):
        key = jax.random.PRNGKey(seed)
        state, timestep = env.reset(key)
        for t in range(3):
            cell, target = _walk_cells(np.asarray(timestep.obs))
            wanted = np.clip(target - cell, -2, 2)
            actions = np.argmax(moves == wanted[:, None], axis=1).astype(np.int32)
            state, timestep = step(jax.random.fold_in(key, t), state, jnp.asarray(actions))
            if bool(timestep.done):
                break
        assert bool(timestep.won) and bool(timestep.terminated), seed
        assert float(timestep.episode_return) == pytest.approx(1.0)
        assert int(timestep.episode_length) == t + 1
        cell, target = _walk_cells(np.asarray(timestep.obs))
        assert np.all(cell != target)  # the next episode starts with nobody arrived

    state, _ = env.reset(jax.random.PRNGKey(0))
    cell = jnp.array([0, 5, 1], jnp.int32)
    state = state._replace(cell=cell, target=jnp.array([3, 2, 4], jnp.int32))
    off_line = jnp.array([3, 4, 3], jnp.int32)  # -2, +2, -2: each would leave the line
    _, timestep = step(jax.random.PRNGKey(1), state, off_line)
    np.testing.assert_array_equal(_walk_cells(np.asarray(timestep.obs))[0], cell)
    assert not bool(timestep.done) and float(timestep.reward) == 0.0
