"""The learned DAG batch-sequence generator: its pure, jit-able core (the paper's §3.2.1).

From per-agent encodings ``h[n, d]`` the generator builds an attention dependency matrix
``G``, embeds each agent, and samples an action: a priority order of the agents
(Plackett-Luce) and, for every candidate pair (``g_ij + g_ji >= delta``), whether to keep the
dependency. Kept pairs point from the earlier to the later agent, so the graph is acyclic; its
longest-path layering is the partition ``batch_index[n]`` (see ``b2mapo.partition``).
Everything here has fixed shapes and works under ``jit`` and ``vmap``.
"""

from __future__ import annotations

from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from b2mapo.networks import _dense


class DagAction(NamedTuple):
    """One action of the DAG generator: a priority order and the kept dependencies."""

    order: jax.Array  # [n] int32, position -> agent
    keep: jax.Array  # [n, n] bool, symmetric, False outside candidate pairs and the diagonal


def attention_scores(q: jax.Array, k: jax.Array) -> jax.Array:
    """The scaled scores ``s_ij = q_i·k_j / sqrt(d)`` of eq. 5, ``[n, n]``."""
    return q @ k.T / jnp.sqrt(jnp.asarray(q.shape[1], q.dtype))


def dependency_matrix(q: jax.Array, k: jax.Array, delta: float | jax.Array) -> jax.Array:
    """``g_ij = softmax_j(q_i·k_j / sqrt(d))`` over ``j != i`` (eq. 5), entries below ``delta``
    zeroed; ``[n, n]`` with a zero diagonal (all zeros for a single agent)."""
    n = q.shape[0]
    if n == 1:
        return jnp.zeros((1, 1), q.dtype)
    scores = jnp.where(jnp.eye(n, dtype=bool), -jnp.inf, attention_scores(q, k))
    g = jax.nn.softmax(scores, axis=-1)
    return jnp.where(g >= delta, g, 0.0)


def candidate_pairs(g: jax.Array, delta: float | jax.Array) -> jax.Array:
    """Unordered pairs whose dependency is decided, each once: ``i < j`` and
    ``g_ij + g_ji >= delta``; ``[n, n]`` bool, upper triangle only."""
    n = g.shape[0]
    upper = jnp.triu(jnp.ones((n, n), bool), k=1)
    return upper & (jax.lax.stop_gradient(g + g.T) >= delta)


class DagGenerator(nn.Module):
    """Attention dependency graph, agent embeddings, order scores and pairwise edge logits.

    ``__call__(h[n, d]) -> (G[n, n], Z[n, hidden], order_scores[n], edge_logits[n, n])``.
    ``Z_i = MLP([h_i, Σ_j g_ij v_j])`` carries agent i's own encoding (``g_ii = 0`` leaves
    none of it in the attention sum). The edge logits are symmetric, one Bernoulli per pair:
    ``l_ij = f(Z_i, Z_j) + f(Z_j, Z_i) + s_ij + s_ji`` with the attention scores ``s`` of
    eq. 5, so that the DAG is drawn from G and the policy gradient reaches the attention.
    """

    hidden_size: int
    delta: float = 0.1
    keep_init: float = 0.5  # initial probability of keeping a candidate dependency

    @nn.compact
    def __call__(self, h: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
        n = h.shape[0]
        orthogonal = nn.initializers.orthogonal()
        q = nn.Dense(self.hidden_size, use_bias=False, kernel_init=orthogonal, name="query")(h)
        k = nn.Dense(self.hidden_size, use_bias=False, kernel_init=orthogonal, name="key")(h)
        v = nn.Dense(self.hidden_size, use_bias=False, kernel_init=orthogonal, name="value")(h)
        g = dependency_matrix(q, k, self.delta)
        z = nn.relu(_dense(self.hidden_size, np.sqrt(2))(jnp.concatenate([h, g @ v], axis=-1)))
        z = nn.relu(_dense(self.hidden_size, np.sqrt(2))(z))
        order_scores = _dense(1, 0.01)(z)[:, 0]
        pair_hidden = nn.relu(pair_dense(_dense(self.hidden_size, np.sqrt(2)), z))
        # Each direction carries half the initial log-odds: l_ij = f(Z_i, Z_j) + f(Z_j, Z_i).
        half_log_odds = 0.5 * float(np.log(self.keep_init / (1.0 - self.keep_init)))
        edge_head = nn.Dense(
            1,
            kernel_init=nn.initializers.orthogonal(0.01),
            bias_init=nn.initializers.constant(half_log_odds),
        )
        directed = edge_head(pair_hidden)[..., 0]
        one_way = directed + attention_scores(q, k)
        edge_logits = jnp.where(jnp.eye(n, dtype=bool), 0.0, one_way + one_way.T)
        return g, z, order_scores, edge_logits


def pair_dense(layer: nn.Dense, z: jax.Array) -> jax.Array:
    """``layer([z_i, z_j])`` for every pair, ``[n, n, features]``, from ``2n + 1`` rows
    instead of ``n²``: a dense layer on a concatenation is ``W_a z_i + W_b z_j + b``. On
    8m_vs_9m this was most of the generator's PPO step."""
    n, width = z.shape
    zeros = jnp.zeros_like(z)
    rows = jnp.concatenate(
        [
            jnp.concatenate([z, zeros], axis=-1),  # W_a z_i + b
            jnp.concatenate([zeros, z], axis=-1),  # W_b z_j + b
            jnp.zeros((1, 2 * width), z.dtype),  # b
        ]
    )
    out = layer(rows)
    return out[:n, None, :] + out[None, n : 2 * n, :] - out[2 * n]


def sample_dag(
    key: jax.Array,
    order_scores: jax.Array,
    edge_logits: jax.Array,
    g: jax.Array,
    delta: float | jax.Array,
    max_batches: int = 0,
) -> DagAction:
    """Sample an order by Gumbel top-k (exact Plackett-Luce) and keep each candidate pair
    ``{i, j}`` (``i < j``) with probability ``sigmoid(edge_logits[i, j])``; with
    ``max_batches`` > 0, a pair whose earlier agent already sits in the last allowed batch
    is dropped (see ``cap_depth``)."""
    n = order_scores.shape[0]
    order_key, edge_key = jax.random.split(key)
    perturbed = order_scores + jax.random.gumbel(order_key, (n,), order_scores.dtype)
    order = jnp.argsort(-perturbed).astype(jnp.int32)
    wanted = jax.random.bernoulli(edge_key, jax.nn.sigmoid(edge_logits))
    return build_dag(order, wanted, g, delta, max_batches)


def build_dag(
    order: jax.Array,
    wanted: jax.Array,
    g: jax.Array,
    delta: float | jax.Array,
    max_batches: int = 0,
) -> DagAction:
    """The action that keeps the candidate pairs ``wanted`` (read on the upper triangle),
    capped to ``max_batches`` layers when that is positive."""
    kept = wanted & candidate_pairs(g, delta)
    keep = kept | kept.T
    if max_batches > 0:
        keep = cap_depth(order, keep, max_batches)
    return DagAction(order, keep)


def cap_depth(order: jax.Array, keep: jax.Array, max_batches: int) -> jax.Array:
    """Drop the kept pairs that would put an agent past batch ``max_batches - 1``: agents
    are placed in priority order, and a dependency on an earlier agent that is already in
    the last allowed batch is dropped. The layering of the result has at most
    ``max_batches`` batches. Which pairs were forced is a function of the result
    (``forced_pairs``), so the log-probability stays exact."""
    n = order.shape[0]

    def place(position: int, carry: tuple[jax.Array, jax.Array]) -> tuple:
        depth, kept = carry
        agent = order[position]
        placed = _positions(order) < position
        allowed = keep[:, agent] & placed & (depth < max_batches - 1)
        agent_depth = jnp.max(jnp.where(allowed, depth + 1, 0))
        return depth.at[agent].set(agent_depth), kept.at[:, agent].set(allowed)

    start = (jnp.zeros((n,), jnp.int32), jnp.zeros((n, n), bool))
    _, kept = jax.lax.fori_loop(0, n, place, start)
    return kept | kept.T


def forced_pairs(action: DagAction, max_batches: int, depth: jax.Array | None = None) -> jax.Array:
    """Pairs ``{i, j}`` (both orientations) whose drop ``cap_depth`` forced: the earlier
    agent is already in the last allowed batch. All False without a cap. ``depth`` is the
    action's layering (``layering(edges(action))``), computed here when not given."""
    n = action.order.shape[0]
    if max_batches <= 0:
        return jnp.zeros((n, n), bool)
    if depth is None:
        depth = layering(edges(action))
    position = _positions(action.order)
    earlier_full = (position[:, None] < position[None, :]) & (depth[:, None] >= max_batches - 1)
    return earlier_full | earlier_full.T


def _positions(order: jax.Array) -> jax.Array:
    """``position[agent]``: where each agent stands in the priority order."""
    n = order.shape[0]
    return jnp.zeros((n,), jnp.int32).at[order].set(jnp.arange(n, dtype=jnp.int32))


def order_log_prob(order: jax.Array, order_scores: jax.Array) -> jax.Array:
    """Exact Plackett-Luce ``log P(order)``: ``Σ_p s[order[p]] - logsumexp(s[order[p:]])``."""
    ranked = order_scores[order]
    return jnp.sum(ranked - jax.lax.cumlogsumexp(ranked, reverse=True))


def _edge_log_probs(
    keep: jax.Array, edge_logits: jax.Array, g: jax.Array, delta: float | jax.Array
) -> jax.Array:
    """Per-pair ``log Bernoulli(keep)`` on candidate pairs, 0 elsewhere (``[n, n]``)."""
    log_kept = jnp.where(keep, jax.nn.log_sigmoid(edge_logits), jax.nn.log_sigmoid(-edge_logits))
    return jnp.where(candidate_pairs(g, delta), log_kept, 0.0)


def log_prob(
    action: DagAction,
    order_scores: jax.Array,
    edge_logits: jax.Array,
    g: jax.Array,
    delta: float | jax.Array,
    max_batches: int = 0,
    depth: jax.Array | None = None,
) -> jax.Array:
    """Exact log-probability of ``action``: Plackett-Luce order plus one Bernoulli per
    candidate pair whose drop the batch cap did not force. Pass the ``g`` the action was
    sampled with: it fixes the candidate set; and its layering as ``depth`` where it is
    known, which spares recomputing it."""
    edge_terms = _edge_log_probs(action.keep, edge_logits, g, delta)
    edge_terms = jnp.where(forced_pairs(action, max_batches, depth), 0.0, edge_terms)
    return order_log_prob(action.order, order_scores) + jnp.sum(edge_terms)


def entropy_of_edges(edge_logits: jax.Array, g: jax.Array, delta: float | jax.Array) -> jax.Array:
    """Entropy of the edge decisions (sum of the candidate pairs' Bernoulli entropies)."""
    log_p, log_not_p = jax.nn.log_sigmoid(edge_logits), jax.nn.log_sigmoid(-edge_logits)
    pair_entropy = -(jnp.exp(log_p) * log_p + jnp.exp(log_not_p) * log_not_p)
    return jnp.sum(jnp.where(candidate_pairs(g, delta), pair_entropy, 0.0))


def edges(action: DagAction) -> jax.Array:
    """Directed adjacency ``[n, n]`` bool: each kept pair points from the agent earlier in the
    order to the later one, so the graph is acyclic."""
    position = _positions(action.order)
    return action.keep & (position[:, None] < position[None, :])


def layering(adjacency: jax.Array) -> jax.Array:
    """Longest-path layering of a DAG: ``m[i]`` = edges on the longest path ending at ``i``.
    Batches are ``0..K-1`` with none empty and no edge inside a batch."""
    n = adjacency.shape[0]

    def relax(_: int, m: jax.Array) -> jax.Array:
        return jnp.max(jnp.where(adjacency, m[:, None] + 1, 0), axis=0)

    return jax.lax.fori_loop(0, n, relax, jnp.zeros((n,), jnp.int32))


def num_batches(batch_index: jax.Array) -> jax.Array:
    """Number of batches ``K`` of a partition (``max + 1``)."""
    return jnp.max(batch_index) + 1
