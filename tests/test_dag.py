"""The DAG generator core: acyclic samples, valid layerings, an exact log-probability."""

from __future__ import annotations

import itertools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from b2mapo.upper.dag import (
    DagAction,
    DagGenerator,
    candidate_pairs,
    cap_depth,
    dependency_matrix,
    edges,
    entropy_of_edges,
    layering,
    log_prob,
    num_batches,
    pair_dense,
    sample_dag,
)

sample_jit = jax.jit(sample_dag, static_argnums=5)
log_prob_jit = jax.jit(log_prob)
edges_jit = jax.jit(edges)
layering_jit = jax.jit(layering)
dependency_jit = jax.jit(dependency_matrix)


def random_inputs(
    seed: int, n: int, scale: float = 2.0, delta: float = 0.0
) -> tuple[np.ndarray, ...]:
    """Order scores, edge logits and an attention dependency matrix for ``n`` agents."""
    rng = np.random.default_rng(seed)
    scores = rng.normal(0.0, scale, n).astype(np.float32)
    logits = rng.normal(0.0, scale, (n, n)).astype(np.float32)
    q, k = rng.normal(0.0, 1.0, (2, n, 3)).astype(np.float32)
    g = np.asarray(dependency_jit(q, k, delta))
    return scores, logits, g


def assert_valid_partition(batch_index: np.ndarray, num_agents: int) -> None:
    """Batches numbered 0..K-1, none empty."""
    assert batch_index.shape == (num_agents,)
    assert batch_index.dtype == np.int32
    np.testing.assert_array_equal(np.unique(batch_index), np.arange(batch_index.max() + 1))


def longest_path_layers(adjacency: np.ndarray) -> np.ndarray:
    """Reference longest-path layering by peeling sources (raises on a cycle)."""
    n = len(adjacency)
    layers = np.zeros(n, np.int64)
    remaining = set(range(n))
    while remaining:
        sources = [i for i in remaining if not any(adjacency[j, i] for j in remaining)]
        assert sources, "the graph has a cycle"
        for i in sources:
            preds = np.flatnonzero(adjacency[:, i])
            layers[i] = max((layers[j] + 1 for j in preds), default=0)
        remaining -= set(sources)
    return layers


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 10),
    seed=st.integers(0, 2**31 - 1),
    delta=st.sampled_from([0.0, 0.05, 0.2, 0.5]),
)
def test_samples_are_acyclic_and_layerings_valid(n: int, seed: int, delta: float) -> None:
    scores, logits, g = random_inputs(seed, n, delta=delta)
    action = sample_jit(jax.random.key(seed), scores, logits, g, delta)
    order, keep = np.asarray(action.order), np.asarray(action.keep)
    np.testing.assert_array_equal(np.sort(order), np.arange(n))
    np.testing.assert_array_equal(keep, keep.T)
    assert not keep.diagonal().any()
    candidates = np.asarray(candidate_pairs(g, delta))
    assert not (keep & ~(candidates | candidates.T)).any()
    adjacency = np.asarray(edges_jit(action))
    np.testing.assert_array_equal(adjacency | adjacency.T, keep)
    position = np.argsort(order)
    src, dst = np.nonzero(adjacency)
    assert (position[src] < position[dst]).all()
    batch_index = np.asarray(layering_jit(adjacency))
    assert_valid_partition(batch_index, n)
    np.testing.assert_array_equal(batch_index, longest_path_layers(adjacency))
    assert (batch_index[src] < batch_index[dst]).all()  # no edge inside a batch
    assert int(num_batches(batch_index)) == batch_index.max() + 1
    assert np.isfinite(float(log_prob_jit(action, scores, logits, g, delta)))


def all_actions(n: int, candidates: np.ndarray) -> DagAction:
    """Every (order, keep-subset of candidate pairs) action, stacked."""
    pairs = list(zip(*np.nonzero(candidates), strict=True))
    orders, keeps = [], []
    for order in itertools.permutations(range(n)):
        for subset in itertools.product([False, True], repeat=len(pairs)):
            keep = np.zeros((n, n), bool)
            for (i, j), kept in zip(pairs, subset, strict=True):
                keep[i, j] = keep[j, i] = kept
            orders.append(order)
            keeps.append(keep)
    return DagAction(jnp.asarray(orders, jnp.int32), jnp.asarray(np.stack(keeps)))


@pytest.mark.parametrize("n", [2, 3, 4])
@pytest.mark.parametrize("delta", [0.0, 0.3, 0.6])
@pytest.mark.parametrize("seed", [0, 1])
def test_log_prob_is_exact(n: int, delta: float, seed: int) -> None:
    scores, logits, g = random_inputs(seed + 10 * n, n)
    candidates = np.asarray(candidate_pairs(g, delta))
    actions = all_actions(n, candidates)
    batched = jax.jit(jax.vmap(log_prob, in_axes=(0, None, None, None, None)))
    log_p = np.asarray(batched(actions, scores, logits, g, delta), np.float64)
    assert np.exp(log_p).sum() == pytest.approx(1.0, abs=1e-4)
    # Each action's term by hand: the first-placed agent is drawn from all, and so on.
    for a in range(0, len(log_p), max(1, len(log_p) // 7)):
        order, keep = np.asarray(actions.order[a]), np.asarray(actions.keep[a])
        expected = sum(
            scores[order[p]] - np.log(np.exp(scores[order[p:]].astype(np.float64)).sum())
            for p in range(n)
        )
        for i, j in zip(*np.nonzero(candidates), strict=True):
            prob = 1.0 / (1.0 + np.exp(-float(logits[i, j])))
            expected += np.log(prob if keep[i, j] else 1.0 - prob)
        assert log_p[a] == pytest.approx(expected, abs=1e-4)
    # The edge entropy is that of the keep-subset distribution.
    # The first 2^c actions share the identity order and run over every keep-subset.
    first_order = log_p[: 2 ** int(candidates.sum())]
    edge_log_p = first_order - np.log(np.exp(first_order).sum())
    subset_p = np.exp(edge_log_p)
    expected_entropy = -(subset_p * edge_log_p).sum()
    entropy = float(entropy_of_edges(jnp.asarray(logits), jnp.asarray(g), delta))
    assert entropy == pytest.approx(expected_entropy, abs=1e-4)


def test_log_prob_matches_sampling_frequency() -> None:
    n, delta = 3, 0.0
    scores, logits, g = random_inputs(7, n, scale=1.0)
    keys = jax.random.split(jax.random.key(0), 20_000)
    sampled = jax.jit(jax.vmap(sample_dag, in_axes=(0, None, None, None, None)))(
        keys, scores, logits, g, delta
    )
    actions = all_actions(n, np.asarray(candidate_pairs(g, delta)))
    batched = jax.jit(jax.vmap(log_prob, in_axes=(0, None, None, None, None)))
    expected = np.exp(np.asarray(batched(actions, scores, logits, g, delta)))

    def codes(a: DagAction) -> list[tuple]:
        pairs = zip(np.asarray(a.order), np.asarray(a.keep), strict=True)
        return [tuple(o) + tuple(k.ravel()) for o, k in pairs]

    index = {code: i for i, code in enumerate(codes(actions))}
    counts = np.zeros(len(index))
    for code in codes(sampled):
        counts[index[code]] += 1
    np.testing.assert_allclose(counts / len(keys), expected, atol=0.012)


def test_delta_above_every_weight_gives_one_batch() -> None:
    n = 6
    rng = np.random.default_rng(3)
    q, k = rng.normal(size=(2, n, 4)).astype(np.float32)
    delta = 1.01  # softmax weights are at most 1
    g = np.asarray(dependency_jit(q, k, delta))
    assert not g.any()
    assert not np.asarray(candidate_pairs(g, delta)).any()
    scores, logits = rng.normal(size=n), np.full((n, n), 50.0)
    action = sample_jit(jax.random.key(0), scores, logits, g, delta)
    assert not np.asarray(action.keep).any()
    adjacency = edges_jit(action)
    assert not np.asarray(adjacency).any()
    batch_index = layering_jit(adjacency)
    np.testing.assert_array_equal(batch_index, np.zeros(n))
    assert int(num_batches(batch_index)) == 1


@pytest.mark.parametrize("big", [1e4, np.inf])
def test_every_dependency_kept_gives_a_chain(big: float) -> None:
    n = 7
    rng = np.random.default_rng(5)
    q, k = rng.normal(size=(2, n, 4)).astype(np.float32)
    g = dependency_jit(q, k, 0.0)
    order = rng.permutation(n)
    scores = np.zeros(n, np.float32)
    scores[order] = -100.0 * np.arange(n)  # the Gumbel noise cannot reorder these
    logits = np.full((n, n), big, np.float32)
    action = sample_jit(jax.random.key(1), scores, logits, g, 0.0)
    np.testing.assert_array_equal(action.order, order)
    np.testing.assert_array_equal(action.keep, ~np.eye(n, dtype=bool))
    batch_index = np.asarray(layering_jit(edges_jit(action)))
    np.testing.assert_array_equal(batch_index, np.argsort(order))  # layer = position
    assert int(num_batches(batch_index)) == n
    log_p = float(log_prob_jit(action, scores, logits, g, 0.0))
    assert np.isfinite(log_p)
    assert log_p == pytest.approx(0.0, abs=1e-3)


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 8),
    seed=st.integers(0, 2**31 - 1),
    delta=st.floats(0.0, 1.0),
    scale=st.sampled_from([0.1, 1.0, 10.0]),
)
def test_dependency_matrix_properties(n: int, seed: int, delta: float, scale: float) -> None:
    q, k = np.random.default_rng(seed).normal(0.0, scale, (2, n, 5)).astype(np.float32)
    g = np.asarray(dependency_jit(q, k, delta))
    assert g.shape == (n, n)
    assert np.isfinite(g).all()
    np.testing.assert_array_equal(g.diagonal(), 0.0)
    assert (g.sum(axis=1) <= 1.0 + 1e-5).all()
    assert ((g == 0.0) | (g >= delta)).all()
    if n > 1 and delta == 0.0:
        np.testing.assert_allclose(g.sum(axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("n", [1, 2, 5])
def test_pair_dense_is_the_layer_on_every_concatenated_pair(n: int) -> None:
    """The generator's pair layer from per-agent rows equals the dense layer applied to
    ``[z_i, z_j]`` for every ordered pair."""
    z = jax.random.normal(jax.random.key(0), (n, 6))
    layer = nn.Dense(4, bias_init=nn.initializers.normal(1.0))
    pairs = jnp.concatenate(
        [jnp.broadcast_to(z[:, None], (n, n, 6)), jnp.broadcast_to(z[None], (n, n, 6))], -1
    )
    params = layer.init(jax.random.key(1), pairs)
    expected = layer.apply(params, pairs)
    got = nn.apply(lambda module, z: pair_dense(module, z), layer)(params, z)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_generator_under_jit_and_vmap() -> None:
    n, envs, obs_dim, hidden, delta = 5, 4, 6, 16, 0.1
    model = DagGenerator(hidden, delta)
    h = jax.random.normal(jax.random.key(0), (envs, n, obs_dim))
    params = model.init(jax.random.key(1), h[0])

    @jax.jit
    def run(params, h, key):
        g, z, scores, logits = jax.vmap(model.apply, in_axes=(None, 0))(params, h)
        keys = jax.random.split(key, envs)
        actions = jax.vmap(sample_dag, in_axes=(0, 0, 0, 0, None))(keys, scores, logits, g, delta)
        batch_index = jax.vmap(lambda a: layering(edges(a)))(actions)

        def total_log_prob(params):
            g, _, scores, logits = jax.vmap(model.apply, in_axes=(None, 0))(params, h)
            lp = jax.vmap(log_prob, in_axes=(0, 0, 0, 0, None))(actions, scores, logits, g, delta)
            return lp.sum()

        return g, z, scores, logits, actions, batch_index, jax.grad(total_log_prob)(params)

    g, z, scores, logits, actions, batch_index, grads = run(params, h, jax.random.key(2))
    assert g.shape == (envs, n, n) and z.shape == (envs, n, hidden)
    assert scores.shape == (envs, n) and logits.shape == (envs, n, n)
    np.testing.assert_allclose(logits, np.swapaxes(logits, 1, 2))
    assert actions.order.shape == (envs, n) and actions.keep.shape == (envs, n, n)
    for b in np.asarray(batch_index):
        assert_valid_partition(b, n)
    assert all(np.isfinite(x).all() for x in jax.tree_util.tree_leaves(grads))
    # A single agent: no pairs, one batch.
    one = jax.random.normal(jax.random.key(3), (1, obs_dim))
    g1, _, s1, l1 = model.apply(model.init(jax.random.key(4), one), one)
    action = sample_dag(jax.random.key(5), s1, l1, g1, delta)
    np.testing.assert_array_equal(layering(edges(action)), [0])
    assert float(log_prob(action, s1, l1, g1, delta)) == pytest.approx(0.0, abs=1e-6)


def valid_under_cap(actions: DagAction, max_batches: int) -> np.ndarray:
    """Which enumerated actions the capped sampler can produce: capping changes nothing."""
    capped = jax.jit(jax.vmap(cap_depth, in_axes=(0, 0, None)), static_argnums=2)(
        actions.order, actions.keep, max_batches
    )
    return np.asarray((capped == actions.keep).all(axis=(1, 2)))


@pytest.mark.parametrize(("n", "max_batches"), [(3, 1), (3, 2), (4, 2), (4, 3)])
def test_capped_log_prob_is_exact(n: int, max_batches: int) -> None:
    """With a batch cap, the probabilities of every action the sampler can produce sum to 1,
    and sampling frequencies match them."""
    scores, logits, g = random_inputs(3 + n, n, scale=1.0)
    actions = all_actions(n, np.asarray(candidate_pairs(g, 0.0)))
    valid = valid_under_cap(actions, max_batches)
    batched = jax.jit(
        jax.vmap(log_prob, in_axes=(0, None, None, None, None, None)), static_argnums=5
    )
    log_p = np.asarray(batched(actions, scores, logits, g, 0.0, max_batches), np.float64)
    assert np.exp(log_p[valid]).sum() == pytest.approx(1.0, abs=1e-4)

    keys = jax.random.split(jax.random.key(1), 20_000)
    sampler = jax.vmap(sample_dag, in_axes=(0, None, None, None, None, None))
    sampled = jax.jit(sampler, static_argnums=5)(keys, scores, logits, g, 0.0, max_batches)
    layers = jax.vmap(lambda a: layering(edges(a)))(sampled)
    assert int(np.asarray(layers).max()) <= max_batches - 1
    codes = [tuple(o) + tuple(k.ravel()) for o, k in zip(*map(np.asarray, actions), strict=True)]
    index = {code: i for i, code in enumerate(codes)}
    counts = np.zeros(len(index))
    for o, k in zip(*map(np.asarray, sampled), strict=True):
        counts[index[tuple(o) + tuple(k.ravel())]] += 1
    assert counts[~valid].sum() == 0
    np.testing.assert_allclose(counts / len(keys), np.exp(log_p) * valid, atol=0.012)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(2, 9), seed=st.integers(0, 10_000), max_batches=st.integers(1, 4))
def test_capped_samples_stay_within_the_cap(n: int, seed: int, max_batches: int) -> None:
    """Capped DAGs are acyclic, keep only candidate pairs and have at most the cap's batches."""
    scores, logits, g = random_inputs(seed, n, scale=3.0)
    action = sample_jit(jax.random.key(seed), scores, logits, g, 0.0, max_batches)
    adjacency = np.asarray(edges_jit(action))
    batch_index = np.asarray(layering_jit(jnp.asarray(adjacency)))
    assert batch_index.max() < max_batches
    for i, j in zip(*np.nonzero(adjacency), strict=True):
        assert batch_index[i] < batch_index[j]
