"""Collecting experience: the compiled rollout shared by every algorithm."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from b2mapo.envs.core import BatchedEnv, Env, TimeStep, reset_batch, step_batch
from b2mapo.losses import categorical_log_prob
from b2mapo.networks import Networks, Params


class Transition(NamedTuple):
    """One step of experience for every env and agent (leading axes ``[T, E]`` when stacked)."""

    obs: jax.Array  # [E, n, obs_dim]
    state: jax.Array  # [E, state_dim]
    next_state: jax.Array  # [E, state_dim], state reached, before auto-reset
    avail: jax.Array  # [E, n, A]
    first: jax.Array  # [E], obs is the first of an episode (resets the GRU)
    carry: jax.Array  # [E, n, h], the actor's GRU state before the step (training replays
    # each chunk of the rollout from it)
    action: jax.Array  # [E, n]
    logits: jax.Array  # [E, n, A], the masked logits the action was drawn from
    batch_index: jax.Array  # [E, n], the agent's batch in the update sequence at this step
    log_prob: jax.Array  # [E, n], behaviour log-probability
    value: jax.Array  # [E, n], critic value of ``state`` (normalised scale)
    next_value: jax.Array  # [E, n], critic value of the state reached, before auto-reset
    reward: jax.Array  # [E]
    terminated: jax.Array  # [E]
    done: jax.Array  # [E]


class Distillation(NamedTuple):
    """A teacher policy to distil into the actor being trained (π into π_ind, eq. 13)."""

    logits: jax.Array  # [T, E, n, A], the teacher's masked logits
    weight: jax.Array  # [T, E], coefficient of KL(teacher || actor); 0 turns it off


class Follower(NamedTuple):
    """A policy that watches a rollout without acting (B2MAPO's π_ind, which learns from π's
    rollouts): ``step(carry, obs, first, avail) -> (carry, record)`` runs at every env step
    beside the acting policy, so that its recurrent state needs no second pass over the
    rollout."""

    step: Callable[[Any, jax.Array, jax.Array, jax.Array], tuple[Any, Any]]
    carry: Any


class Followed(NamedTuple):
    """What a follower recorded during a rollout, and its state after it."""

    records: Any  # leaves [T, ...]
    carry: Any


class Trajectory(NamedTuple):
    """A time-major rollout plus the actor's GRU state at its start (and what a follower
    recorded, when one watched)."""

    transitions: Transition  # leaves [T, E, ...]
    initial_carry: jax.Array  # [E, n, h]
    distill: Distillation | None = None
    followed: Followed | None = None


class EnvLoopState(NamedTuple):
    """What the rollout carries from one update to the next."""

    env_state: Any
    timestep: TimeStep  # leaves [E, ...]
    first: jax.Array  # [E]
    carry: jax.Array  # [E, n, h]


class EpisodeMetrics(NamedTuple):
    """Sums over the episodes that ended during a rollout."""

    episodes: jax.Array
    return_sum: jax.Array
    length_sum: jax.Array
    wins: jax.Array


def reset_envs(
    env: Env | BatchedEnv, networks: Networks, key: jax.Array, num_envs: int
) -> EnvLoopState:
    """Reset ``num_envs`` environments and the actor's GRU state."""
    env_state, timestep = reset_batch(env, jax.random.split(key, num_envs))
    first = jnp.ones((num_envs,), bool)
    return EnvLoopState(env_state, timestep, first, networks.initial_carry((num_envs,)))


def rollout(
    env: Env | BatchedEnv,
    networks: Networks,
    params: dict[str, Params],
    loop: EnvLoopState,
    key: jax.Array,
    length: int,
    batch_index: jax.Array,
    follower: Follower | None = None,
) -> tuple[EnvLoopState, Trajectory, EpisodeMetrics]:
    """Run every env ``length`` steps with the current policy and record the transitions;
    ``batch_index`` (``[n]``, or ``[E, n]`` per env) is the partition in force during it."""
    num_envs = loop.first.shape[0]

    def step(carry: tuple[EnvLoopState, Any], key: jax.Array) -> tuple[tuple, tuple]:
        loop, follower_carry = carry
        # One split for the acting key and every env's key (one threefry call, not two).
        keys = jax.random.split(key, num_envs + 1)
        action_key, env_keys = keys[0], keys[1:]
        ts = loop.timestep
        record = None
        if follower is not None:
            follower_carry, record = follower.step(follower_carry, ts.obs, loop.first, ts.avail)
        carry, action, logits = networks.policy_step(
            params["actor"], loop.carry, ts.obs, loop.first, ts.avail, batch_index, action_key
        )
        env_state, next_ts = step_batch(env, env_keys, loop.env_state, action)
        # The values of the state acted in and of the state reached, in one critic pass.
        states = jnp.stack([ts.state, next_ts.final_state])
        value, next_value = networks.value(params["critic"], states)
        transition = Transition(
            obs=ts.obs,
            state=ts.state,
            next_state=next_ts.final_state,
            avail=ts.avail,
            first=loop.first,
            carry=loop.carry,
            action=action,
            logits=logits,
            batch_index=jnp.broadcast_to(batch_index, action.shape),
            log_prob=categorical_log_prob(logits, action),
            value=value,
            next_value=next_value,
            reward=next_ts.reward,
            terminated=next_ts.terminated,
            done=next_ts.done,
        )
        done = next_ts.done
        episode = EpisodeMetrics(
            episodes=done.sum(),
            return_sum=jnp.where(done, next_ts.episode_return, 0.0).sum(),
            length_sum=jnp.where(done, next_ts.episode_length, 0).sum(),
            wins=(done & next_ts.won).sum(),
        )
        next_loop = EnvLoopState(env_state, next_ts, done, carry)
        return (next_loop, follower_carry), (transition, episode, record)

    start = (loop, None if follower is None else follower.carry)
    (new_loop, follower_carry), (transitions, episodes, records) = jax.lax.scan(
        step, start, jax.random.split(key, length)
    )
    followed = None if follower is None else Followed(records, follower_carry)
    trajectory = Trajectory(transitions, loop.carry, followed=followed)
    return new_loop, trajectory, jax.tree.map(jnp.sum, episodes)
