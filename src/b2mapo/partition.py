"""Partitioners: how agents are grouped into batches that update in sequence.

A partition is a fixed-shape int32 array ``batch_index[n]``: agent ``i`` updates in batch
``batch_index[i]``; batches are numbered ``0..K-1`` with none empty, and update in that
order. Every partitioner is a pure, jit-able function ``(key, scores) -> batch_index``;
``scores[n]`` are per-agent numbers from the rollout (used by A2PO's order rule only).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

PartitionFn = Callable[[jax.Array, jax.Array], jax.Array]


@dataclass(frozen=True)
class Partitioner:
    """A partition rule; ``needs_scores`` rules are applied after advantages are known."""

    partition: PartitionFn
    needs_scores: bool = False


def single(num_agents: int) -> PartitionFn:
    """Everyone in one batch (MAPPO)."""
    return lambda key, scores: jnp.zeros((num_agents,), jnp.int32)


def sequential_random(num_agents: int) -> PartitionFn:
    """One agent per batch in a fresh uniformly random order (HAPPO)."""

    def partition(key: jax.Array, scores: jax.Array) -> jax.Array:
        order = jax.random.permutation(key, num_agents)
        return jnp.zeros((num_agents,), jnp.int32).at[order].set(jnp.arange(num_agents))

    return partition


def sequential_advantage(num_agents: int) -> PartitionFn:
    """A2PO's semi-greedy order: alternately the highest-scoring remaining agent and a
    uniformly random remaining one; one agent per batch."""

    def partition(key: jax.Array, scores: jax.Array) -> jax.Array:
        def place(position: int, carry: tuple) -> tuple:
            batch_index, remaining, key = carry
            key, pick_key = jax.random.split(key)
            greedy = jnp.argmax(jnp.where(remaining, scores, -jnp.inf))
            random = jax.random.categorical(pick_key, jnp.where(remaining, 0.0, -jnp.inf))
            agent = jnp.where(position % 2 == 0, greedy, random)
            return batch_index.at[agent].set(position), remaining.at[agent].set(False), key

        start = (jnp.zeros((num_agents,), jnp.int32), jnp.ones((num_agents,), bool), key)
        batch_index, _, _ = jax.lax.fori_loop(0, num_agents, place, start)
        return batch_index

    return partition


def random_k(num_agents: int, num_batches: int) -> PartitionFn:
    """A uniformly random partition into ``num_batches`` non-empty batches of near-equal size."""

    def partition(key: jax.Array, scores: jax.Array) -> jax.Array:
        order = jax.random.permutation(key, num_agents)
        positions = jnp.zeros((num_agents,), jnp.int32).at[order].set(jnp.arange(num_agents))
        return (positions % num_batches).astype(jnp.int32)

    return partition


def greedy_colouring(adjacency: jax.Array) -> jax.Array:
    """Greedy colouring of a dependency graph in agent order: each agent takes the lowest
    batch none of its earlier dependants holds, so every batch is an independent set (the
    polynomial set-cover approximation of the paper). Jit-able; ``adjacency[n, n]`` bool."""
    num_agents = adjacency.shape[0]
    adjacency = adjacency | adjacency.T
    colours = jnp.arange(num_agents)

    def colour(agent: int, batch_index: jax.Array) -> jax.Array:
        coloured_neighbour = adjacency[agent] & (jnp.arange(num_agents) < agent)
        taken = jnp.any(coloured_neighbour[:, None] & (batch_index[:, None] == colours), axis=0)
        return batch_index.at[agent].set(jnp.argmin(taken).astype(jnp.int32))

    return jax.lax.fori_loop(0, num_agents, colour, jnp.zeros((num_agents,), jnp.int32))


def minimum_colouring(adjacency: np.ndarray) -> np.ndarray:
    """Exact minimum partition into independent sets, by backtracking (small n only)."""
    adjacency = np.asarray(adjacency, bool)
    adjacency = (adjacency | adjacency.T) & ~np.eye(len(adjacency), dtype=bool)
    num_agents = adjacency.shape[0]

    def assign(labels: list[int], num_batches: int) -> list[int] | None:
        agent = len(labels)
        if agent == num_agents:
            return labels
        # Canonical labels: a new batch is always the next unused number.
        for batch in range(min(num_batches, max(labels, default=-1) + 2)):
            if not any(adjacency[agent, j] and labels[j] == batch for j in range(agent)):
                found = assign([*labels, batch], num_batches)
                if found is not None:
                    return found
        return None

    for num_batches in range(1, num_agents + 1):
        found = assign([], num_batches)
        if found is not None:
            return np.asarray(found, np.int32)
    raise AssertionError("unreachable: n batches always suffice")


BRUTE_FORCE_MAX_AGENTS = 10


def parse_graph(spec: str, num_agents: int) -> np.ndarray:
    """A dependency graph from a config string: ``none``, ``full``, ``chain`` or an edge list
    like ``0-1,1-2``. Returns a symmetric ``[n, n]`` bool matrix with an empty diagonal."""
    adjacency = np.zeros((num_agents, num_agents), bool)
    if spec == "none":
        pass
    elif spec == "full":
        adjacency[:] = True
    elif spec == "chain":
        for i in range(num_agents - 1):
            adjacency[i, i + 1] = True
    else:
        for edge in spec.split(","):
            try:
                a, b = (int(x) for x in edge.split("-"))
            except ValueError:
                raise ValueError(
                    f"dependency_graph edge {edge!r} is not of the form 'i-j'; use none, "
                    "full, chain or an edge list like 0-1,1-2"
                ) from None
            if not (0 <= a < num_agents and 0 <= b < num_agents):
                raise ValueError(
                    f"dependency_graph edge {edge!r} names an agent outside 0..{num_agents - 1}"
                )
            adjacency[a, b] = True
    adjacency = adjacency | adjacency.T
    np.fill_diagonal(adjacency, False)
    return adjacency


PartitionerBuilder = Callable[[int, int, str], Partitioner]
"""Builds a partitioner from ``(num_agents, num_batches, dependency_graph)``; ``ValueError``
on bad settings."""


def _random_k(num_agents: int, num_batches: int, dependency_graph: str) -> Partitioner:
    if not 1 <= num_batches <= num_agents:
        raise ValueError(
            f"num_batches={num_batches} must be between 1 and the number of agents "
            f"({num_agents}) for random_k"
        )
    return Partitioner(random_k(num_agents, num_batches))


def _greedy_coloring(num_agents: int, num_batches: int, dependency_graph: str) -> Partitioner:
    fixed = greedy_colouring(jnp.asarray(parse_graph(dependency_graph, num_agents)))
    return Partitioner(lambda key, scores: fixed)


def _brute_force(num_agents: int, num_batches: int, dependency_graph: str) -> Partitioner:
    adjacency = parse_graph(dependency_graph, num_agents)
    if num_agents > BRUTE_FORCE_MAX_AGENTS:
        raise ValueError(
            f"brute_force handles at most {BRUTE_FORCE_MAX_AGENTS} agents, not "
            f"{num_agents}; use greedy_coloring"
        )
    fixed = jnp.asarray(minimum_colouring(adjacency))
    return Partitioner(lambda key, scores: fixed)


PARTITIONERS: dict[str, PartitionerBuilder] = {
    "single": lambda num_agents, num_batches, graph: Partitioner(single(num_agents)),
    "sequential_random": lambda num_agents, num_batches, graph: Partitioner(
        sequential_random(num_agents)
    ),
    "sequential_advantage": lambda num_agents, num_batches, graph: Partitioner(
        sequential_advantage(num_agents), needs_scores=True
    ),
    "random_k": _random_k,
    "greedy_coloring": _greedy_coloring,
    "brute_force": _brute_force,
}
"""The partitioners by name: each name is a ``--partition`` value."""


def make_partitioner(
    name: str, num_agents: int, num_batches: int = 1, dependency_graph: str = "none"
) -> Partitioner:
    """Build a named partitioner for ``num_agents`` agents; ``ValueError`` on bad settings."""
    if name not in PARTITIONERS:
        raise ValueError(f"unknown partitioner {name!r}; choose one of: {', '.join(PARTITIONERS)}")
    return PARTITIONERS[name](num_agents, num_batches, dependency_graph)
