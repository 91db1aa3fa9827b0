"""Evaluation: players (a policy as evaluation plays it), the episode loop over seeds, pooled
evaluations of a runner state, and the Wilson interval of a win rate."""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from b2mapo.envs.core import Env, TimeStep, reset_batch, step_batch
from b2mapo.state import Policies, RunnerState

if TYPE_CHECKING:
    from b2mapo.train import Trainer

# Keys of evaluation runs are offset from training keys so evaluation never shares randomness.
EVAL_SEED_OFFSET = 1_000_003
# Names of ``EvalResult``'s fields in metrics and summaries, as means over episodes.
EVAL_NAMES = ("win_rate", "episode_return", "episode_length")


class EvalResult(NamedTuple):
    """Outcome of the first episode in each of ``eval_episodes`` evaluation envs, ``[episodes]``
    per seed: the caller averages (and pools several calls for a longer evaluation)."""

    won: jax.Array
    episode_return: jax.Array
    episode_length: jax.Array


class Player(NamedTuple):
    """A policy as evaluation plays it, per seed: ``start(policies, key) -> (carry, key)``
    and ``act(policies, carry, timestep, first, step, key, greedy) -> (carry, actions)``."""

    start: Callable[[Policies, jax.Array], tuple[Any, jax.Array]]
    act: Callable[..., tuple[Any, jax.Array]]


class Playing(NamedTuple):
    """One seed's evaluation in progress (leaves ``[episodes, ...]``): the first episode of
    each env is scored, later ones only keep the envs stepping."""

    carry: Any
    env_state: Any
    timestep: TimeStep
    first: jax.Array
    finished: jax.Array
    scored: EvalResult  # the first episode of each env, once it has ended
    step_keys: jax.Array  # [episode_limit, key], one per step


def play(
    player: Player,
    policies: Policies,
    keys: jax.Array,
    greedy: jax.Array,
    env: Env,
    episodes: int,
    over_seeds: Callable[[Callable, tuple[int | None, ...]], Callable],
) -> EvalResult:
    """Run ``player`` in ``episodes`` envs per seed until every env's first episode has ended
    (at most one episode length) and score those episodes.

    The loop over steps runs outside the seed map (``over_seeds``) and stops as soon as all
    seeds' episodes are over: evaluation episodes are usually much shorter than the time limit.
    """
    limit = env.spec.episode_limit

    def begin(policies: Policies, key: jax.Array) -> Playing:
        carry, key = player.start(policies, key)
        reset_key, key = jax.random.split(key)
        env_state, ts = reset_batch(env, jax.random.split(reset_key, episodes))
        no = jnp.zeros((episodes,), bool)
        zeros = jnp.zeros((episodes,))
        first = jnp.ones((episodes,), bool)
        scored = EvalResult(no, zeros, zeros)
        return Playing(carry, env_state, ts, first, no, scored, jax.random.split(key, limit))

    def advance(policies: Policies, playing: Playing, index: jax.Array, greedy) -> Playing:
        action_key, env_key = jax.random.split(playing.step_keys[index])
        carry, action = player.act(
            policies, playing.carry, playing.timestep, playing.first, index, action_key, greedy
        )
        env_state, ts = step_batch(
            env, jax.random.split(env_key, episodes), playing.env_state, action
        )
        ends_now = ts.done & ~playing.finished
        ended = EvalResult(ts.won, ts.episode_return, ts.episode_length)
        return playing._replace(
            carry=carry,
            env_state=env_state,
            timestep=ts,
            first=ts.done,
            finished=playing.finished | ts.done,
            scored=jax.tree.map(partial(jnp.where, ends_now), ended, playing.scored),
        )

    step_all = over_seeds(advance, (0, 0, None, None))

    def running(loop: tuple[jax.Array, Playing]) -> jax.Array:
        index, playing = loop
        return (index < limit) & ~jnp.all(playing.finished)

    def step(loop: tuple[jax.Array, Playing]) -> tuple[jax.Array, Playing]:
        index, playing = loop
        return index + 1, step_all(policies, playing, index, greedy)

    playing = over_seeds(begin, (0, 0))(policies, keys)
    _, playing = jax.lax.while_loop(running, step, (jnp.int32(0), playing))
    return playing.scored


def evaluate(
    trainer: Trainer, state: RunnerState, joint: bool = True, episodes: int | None = None
) -> tuple[dict, dict]:
    """Greedy and sampled evaluation of every seed's executing policy (π_ind for B2MAPO,
    whose joint policy π is also scored, under ``joint_`` keys, when ``joint``).

    ``episodes`` per seed (default ``eval_episodes``) are played in calls of the one compiled
    evaluation program, ``eval_episodes`` at a time: a longer final evaluation compiles
    nothing new. Returns per-seed means, greedy then sampled.
    """
    episodes = trainer.cfg.eval_episodes if episodes is None else episodes
    calls = -(-episodes // trainer.cfg.eval_episodes)
    update = int(trainer.layout.to_host(state.update).max())
    keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(
        trainer.seed_keys(EVAL_SEED_OFFSET), update
    )
    policies = trainer.layout.local(trainer.policies(state))
    results = []
    for greedy in (True, False):
        pooled: dict[str, list[np.ndarray]] = {}
        for call in range(calls):
            call_keys = keys if call == 0 else jax.vmap(jax.random.fold_in, (0, None))(keys, call)
            by_policy = trainer.evaluate(policies, call_keys, np.bool_(greedy), joint)
            for prefix, result in by_policy.items():
                for name, value in zip(EVAL_NAMES, result, strict=True):
                    pooled.setdefault(prefix + name, []).append(np.asarray(value))
        results.append(
            {k: np.concatenate(v, axis=1)[:, :episodes].mean(axis=1) for k, v in pooled.items()}
        )
    return results[0], results[1]


def wilson_interval(wins: float, episodes: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval (95% for z = 1.96) of a win rate from ``episodes`` episodes:
    unlike mean ± 1.96 standard errors it stays inside [0, 1] and is right near 0 and 1."""
    if episodes < 1:
        raise ValueError(f"episodes={episodes} must be at least 1")
    rate = wins / episodes
    centre = (rate + z**2 / (2 * episodes)) / (1 + z**2 / episodes)
    half = z * math.sqrt(rate * (1 - rate) / episodes + z**2 / (4 * episodes**2))
    half /= 1 + z**2 / episodes
    return max(0.0, centre - half), min(1.0, centre + half)
