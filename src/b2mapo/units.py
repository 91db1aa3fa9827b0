"""The rollout as training units, and units laid out in windows.

The rollout is cut into chunks of ``recurrent_chunk`` steps; a *unit* is one agent in one env
for one chunk, replayed from the GRU state the rollout had at the chunk's start, and a
*group* is the units of one (chunk, env). The batch index is constant within a unit (fixed
partitions hold for the round; a learned DAG holds for its period, which the chunk divides).
A stage of the engine gathers only its own units: they are sorted into fixed-size *windows*
(groups kept whole, so the joint ratio sees all of a step's batch-k agents).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from b2mapo.rollout import Trajectory


def to_units(x: jax.Array, chunk: int) -> jax.Array:
    """``[T, E, n, ...]`` -> ``[L, U, ...]``: time within the chunk, then unit
    ``u = (chunk * E + env) * n + agent``."""
    steps, envs, agents = x.shape[:3]
    x = x.reshape(steps // chunk, chunk, envs, agents, *x.shape[3:])
    return jnp.moveaxis(x, 1, 0).reshape(chunk, -1, *x.shape[4:])


def to_groups(x: jax.Array, chunk: int) -> jax.Array:
    """``[T, E, ...]`` -> ``[L, G, ...]`` with group ``g = chunk * E + env``."""
    steps, envs = x.shape[:2]
    x = x.reshape(steps // chunk, chunk, envs, *x.shape[2:])
    return jnp.moveaxis(x, 1, 0).reshape(chunk, -1, *x.shape[3:])


def from_groups(x: jax.Array, num_envs: int) -> jax.Array:
    """Inverse of ``to_groups``: ``[L, G, ...]`` -> ``[T, E, ...]``."""
    chunk = x.shape[0]
    x = x.reshape(chunk, -1, num_envs, *x.shape[2:])
    return jnp.moveaxis(x, 0, 1).reshape(-1, num_envs, *x.shape[3:])


class Units(NamedTuple):
    """The round's rollout as training units (see the module docstring). Leaves ``[L, U, ...]``
    per unit and step, ``[L, G, ...]`` per group and step, ``[U, ...]`` per unit."""

    obs: jax.Array  # [L, U, obs_dim]
    avail: jax.Array  # [L, U, A]
    action: jax.Array  # [L, U]
    log_prob: jax.Array  # [L, U], behaviour log-probability
    value: jax.Array  # [L, U], rollout-time value (normalised scale)
    active: jax.Array  # [L, U], the agent had a choice of action
    state: jax.Array  # [L, G, state_dim]
    first: jax.Array  # [L, G]
    group_action: jax.Array  # [L, G, n], every agent's action (the conditioning input)
    group_batch: jax.Array  # [G, n], every agent's batch in the unit's chunk
    carry: jax.Array  # [U, h], GRU state at the chunk's start
    batch_index: jax.Array  # [U]
    teacher: jax.Array | None  # [L, U, A], logits to distil (π_ind only)
    teacher_weight: jax.Array | None  # [L, G]

    @property
    def num_agents(self) -> int:
        return self.group_batch.shape[1]

    @property
    def num_units(self) -> int:
        return self.carry.shape[0]


def make_units(trajectory: Trajectory, batch_index: jax.Array, chunk: int) -> Units:
    """Cut a rollout ``[T, E, ...]`` into units of ``chunk`` steps; ``batch_index[T, E, n]``."""
    tr = trajectory.transitions
    n = tr.action.shape[-1]
    starts = batch_index[::chunk].reshape(-1, n)  # [G, n]
    teacher = trajectory.distill
    return Units(
        obs=to_units(tr.obs, chunk),
        avail=to_units(tr.avail, chunk),
        action=to_units(tr.action, chunk),
        log_prob=to_units(tr.log_prob, chunk),
        value=to_units(tr.value, chunk),
        active=to_units(tr.avail.sum(-1) > 1, chunk),
        state=to_groups(tr.state, chunk),
        first=to_groups(tr.first, chunk),
        group_action=to_groups(tr.action, chunk),
        group_batch=starts,
        carry=tr.carry[::chunk].reshape(-1, tr.carry.shape[-1]),
        batch_index=starts.reshape(-1),
        teacher=None if teacher is None else to_units(teacher.logits, chunk),
        teacher_weight=None if teacher is None else to_groups(teacher.weight, chunk),
    )


class Windows(NamedTuple):
    """Some units laid out in fixed-size windows: slot ``s`` holds unit ``unit[s]`` where
    ``valid[s]``; ``segment[s]`` numbers the unit's group within its window."""

    unit: jax.Array  # [S]
    valid: jax.Array  # [S]
    segment: jax.Array  # [S]
    count: jax.Array  # [], windows in use


def window_size(num_units: int, num_agents: int, minibatches: int, whole: bool) -> int:
    """Units per window: one agent's share of a MAPPO minibatch, so that a stage of A2PO or
    HAPPO is one window per minibatch; or, for a ``whole`` single-stage round, the minibatch
    itself (one window each instead of ``n`` windows replayed one after another)."""
    return max(8, math.ceil(num_units / (minibatches * (1 if whole else num_agents))))


def pack_windows(
    member: jax.Array, rank: jax.Array, width: int, slack: int, num_agents: int
) -> Windows:
    """Lay the units where ``member[U]`` into windows of ``width + slack`` slots, in order
    of ``rank[U]`` (a unit's group must be contiguous in that order).

    With ``slack = n - 1`` no group is split between windows: a window takes the groups that
    *start* among its ``width`` positions, which end at most ``n - 1`` slots later. With
    ``slack = 0`` units are placed one after another (groups may split).
    """
    num_units = member.shape[0]
    window = width + slack
    max_windows = -(-num_units // width)
    order = jnp.argsort(jnp.where(member, rank, jnp.iinfo(jnp.int32).max))
    count = jnp.sum(member)
    position = jnp.arange(num_units)
    if slack:
        group = order // num_agents
        starts_group = jnp.concatenate([jnp.ones((1,), bool), group[1:] != group[:-1]])
        start = jax.lax.cummax(jnp.where(starts_group, position, 0))
    else:
        start = position
    window_of = start // width
    slot = window_of * window + position - window_of * width
    slot = jnp.where(position < count, slot, max_windows * window)  # past the end: dropped
    size = max_windows * window
    return Windows(
        unit=jnp.zeros(size, jnp.int32).at[slot].set(order, mode="drop"),
        valid=jnp.zeros(size, bool).at[slot].set(True, mode="drop"),
        segment=jnp.zeros(size, jnp.int32).at[slot].set(start - window_of * width, mode="drop"),
        count=jnp.where(count > 0, window_of[jnp.maximum(count - 1, 0)] + 1, 0),
    )


class WindowBatch(NamedTuple):
    """The inputs of one window of units (leaves ``[L, W, ...]`` or ``[W, ...]``)."""

    unit: jax.Array  # [W]
    group: jax.Array  # [W]
    agent: jax.Array  # [W]
    valid: jax.Array  # [W]
    segment: jax.Array  # [W]
    carry: jax.Array  # [W, h]
    obs: jax.Array
    avail: jax.Array
    action: jax.Array
    log_prob: jax.Array
    value: jax.Array
    active: jax.Array  # [L, W], valid and the agent had a choice
    state: jax.Array
    first: jax.Array
    preceding: jax.Array  # [L, W, n], earlier batches' actions (num_actions: none)
    teacher: jax.Array | None
    teacher_weight: jax.Array | None


def window_batch(units: Units, windows: Windows, index: jax.Array, window: int) -> WindowBatch:
    """Gather window ``index`` of ``windows``."""
    n = units.num_agents
    take = jax.lax.dynamic_slice_in_dim
    unit = take(windows.unit, index * window, window)
    valid = take(windows.valid, index * window, window)
    group = unit // n

    def per_unit(x: jax.Array | None) -> jax.Array | None:
        return None if x is None else jnp.take(x, unit, axis=1)

    def per_group(x: jax.Array | None) -> jax.Array | None:
        return None if x is None else jnp.take(x, group, axis=1)

    num_actions = units.avail.shape[-1]
    own_batch = units.batch_index[unit]  # [W]
    earlier = units.group_batch[group] < own_batch[:, None]  # [W, n]
    preceding = jnp.where(earlier, per_group(units.group_action), num_actions)
    return WindowBatch(
        unit=unit,
        group=group,
        agent=unit % n,
        valid=valid,
        segment=take(windows.segment, index * window, window),
        carry=units.carry[unit],
        obs=per_unit(units.obs),
        avail=per_unit(units.avail),
        action=per_unit(units.action),
        log_prob=per_unit(units.log_prob),
        value=per_unit(units.value),
        active=per_unit(units.active) & valid,
        state=per_group(units.state),
        first=per_group(units.first),
        preceding=preceding.astype(jnp.int32),
        teacher=per_unit(units.teacher),
        teacher_weight=per_group(units.teacher_weight),
    )
