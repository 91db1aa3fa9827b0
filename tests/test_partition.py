"""Partitioners return valid partitions; the graph-based ones respect dependencies."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from b2mapo.partition import (
    PARTITIONERS,
    greedy_colouring,
    make_partitioner,
    minimum_colouring,
    parse_graph,
)


def assert_valid(batch_index: np.ndarray, num_agents: int) -> None:
    """Every agent in exactly one batch; batches numbered 0..K-1 with none empty."""
    assert batch_index.shape == (num_agents,)
    used = np.unique(batch_index)
    np.testing.assert_array_equal(used, np.arange(len(used)))


def random_graph(draw: st.DrawFn, num_agents: int) -> np.ndarray:
    edges = draw(st.lists(st.booleans(), min_size=num_agents**2, max_size=num_agents**2))
    adjacency = np.array(edges, bool).reshape(num_agents, num_agents)
    adjacency = adjacency | adjacency.T
    np.fill_diagonal(adjacency, False)
    return adjacency


@st.composite
def graphs(draw: st.DrawFn, max_agents: int = 7) -> np.ndarray:
    return random_graph(draw, draw(st.integers(1, max_agents)))


@settings(deadline=None, max_examples=40)
@given(
    name=st.sampled_from([p for p in PARTITIONERS if p not in ("greedy_coloring", "brute_force")]),
    num_agents=st.integers(1, 12),
    num_batches=st.integers(1, 12),
    seed=st.integers(0, 2**16),
)
def test_partitions_are_valid(name: str, num_agents: int, num_batches: int, seed: int) -> None:
    """Every partitioner assigns each agent exactly one batch, batches contiguous from 0."""
    num_batches = min(num_batches, num_agents)
    partitioner = make_partitioner(name, num_agents, num_batches)
    scores = jax.random.normal(jax.random.PRNGKey(seed + 1), (num_agents,))
    batch_index = np.asarray(partitioner.partition(jax.random.PRNGKey(seed), scores))
    assert_valid(batch_index, num_agents)
    expected_k = {
        "single": 1,
        "sequential_random": num_agents,
        "sequential_advantage": num_agents,
        "random_k": num_batches,
    }[name]
    assert batch_index.max() + 1 == expected_k


@settings(deadline=None, max_examples=60)
@given(adjacency=graphs())
def test_greedy_colouring_separates_dependent_agents(adjacency: np.ndarray) -> None:
    """No two dependent agents share a batch, and the partition is valid."""
    batch_index = np.asarray(greedy_colouring(jnp.asarray(adjacency)))
    assert_valid(batch_index, len(adjacency))
    same = np.equal.outer(batch_index, batch_index)
    assert not np.any(same & adjacency)


@settings(deadline=None, max_examples=60)
@given(adjacency=graphs(max_agents=6))
def test_brute_force_is_minimal(adjacency: np.ndarray) -> None:
    """brute_force is a valid colouring no larger than greedy's, and no colouring with one
    batch fewer exists (checked by exhaustive search)."""
    n = len(adjacency)
    batch_index = minimum_colouring(adjacency)
    assert_valid(batch_index, n)
    assert not np.any(np.equal.outer(batch_index, batch_index) & adjacency)
    k = batch_index.max() + 1
    assert k <= np.asarray(greedy_colouring(jnp.asarray(adjacency))).max() + 1
    if k > 1:
        fewer = np.array(np.meshgrid(*[np.arange(k - 1)] * n)).reshape(n, -1).T
        conflicts = [np.any(np.equal.outer(c, c) & adjacency) for c in fewer]
        assert all(conflicts)


def test_sequential_advantage_follows_a2po_rule() -> None:
    """Even positions take the highest-scoring remaining agent (A2PO's semi-greedy rule)."""
    scores = jnp.array([0.1, 5.0, 3.0, 0.2, 4.0])
    partitioner = make_partitioner("sequential_advantage", 5)
    for seed in range(5):
        batch_index = np.asarray(partitioner.partition(jax.random.PRNGKey(seed), scores))
        order = np.argsort(batch_index)  # agents by position
        assert order[0] == 1
        remaining = [a for a in range(5) if a not in (order[0], order[1])]
        assert order[2] == max(remaining, key=lambda a: float(scores[a]))


def test_known_graphs() -> None:
    """A chain needs two batches, a full graph n, no graph one."""
    assert minimum_colouring(parse_graph("chain", 5)).max() + 1 == 2
    assert minimum_colouring(parse_graph("full", 4)).max() + 1 == 4
    assert minimum_colouring(parse_graph("none", 4)).max() + 1 == 1
    assert minimum_colouring(parse_graph("0-1,1-2,2-0", 4)).max() + 1 == 3


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("random_k", 3, 4), "num_batches=4"),
        (("greedy_coloring", 3, 1, "0-7"), "0-7"),
        (("greedy_coloring", 3, 1, "zigzag"), "zigzag"),
        (("brute_force", 12, 1, "chain"), "greedy_coloring"),
        (("nope", 3), "sequential_random"),
    ],
)
def test_bad_partitioner_settings(args: tuple, message: str) -> None:
    """Bad partitioner settings raise errors naming the value and what is allowed."""
    with pytest.raises(ValueError, match=message):
        make_partitioner(*args)
