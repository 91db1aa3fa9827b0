"""B2MAPO's upper layer: the DAG batch-sequence generator as a PPO policy (the paper's eq. 5-8).

Every ``T = dag_period`` environment steps (a *period*) the generator encodes each agent's
observation (MLP -> GRU, one recurrent state per agent across the episode), builds the
attention dependency graph, samples a DAG (``b2mapo.upper.dag``) and lays it out into batches;
the batches drive the lower layer's acting and update for the period's ``T`` steps. Its
critic (MLP -> GRU over the joint observation and global state) values the period's state.
Its reward is the period's discounted return minus ``batch_cost · K``. PPO-clip with the
KL penalty to the old generator trains both on GAE over periods.

Episode ends inside a period: the period's return stops at the end (a time-limit truncation
bootstraps there from the critic, a termination does not), the period counts as done, and the
new episode plays the rest of the period with the same DAG; the recurrent states restart at
the next period boundary.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

from b2mapo.config import TrainConfig
from b2mapo.envs.core import EnvSpec
from b2mapo.losses import clipped_surrogate, corrected_gae, normalise, td_errors
from b2mapo.networks import Params, _dense, choose, gru_update, with_agent_id
from b2mapo.upper.dag import (
    DagAction,
    DagGenerator,
    build_dag,
    edges,
    entropy_of_edges,
    layering,
    log_prob,
    sample_dag,
)


def batch_layering(action: DagAction) -> jax.Array:
    """The batch index ``[E, n]`` of every env's DAG (leaves ``[E, ...]``)."""
    return jax.vmap(lambda a: layering(edges(a)))(action)


def dependency_threshold(relative_delta: float, num_agents: int) -> float:
    """The absolute threshold δ on attention weights: ``dag_delta`` is given in units of the
    uniform weight ``1 / (n - 1)``, so one setting means the same on 3 agents and on 27."""
    return relative_delta / max(num_agents - 1, 1)


class ResettingGRU(nn.Module):
    """Dense+ReLU -> GRU whose state restarts where ``reset`` is true."""

    hidden_size: int

    @nn.compact
    def __call__(self, carry: jax.Array, x: jax.Array, reset: jax.Array) -> jax.Array:
        x = nn.relu(_dense(self.hidden_size, np.sqrt(2))(x))
        carry = jnp.where(reset[..., None], jnp.zeros_like(carry), carry)
        hidden_gates = nn.Dense(3 * self.hidden_size, kernel_init=nn.initializers.orthogonal())
        return gru_update(carry, nn.Dense(3 * self.hidden_size)(x), hidden_gates(carry))


class UpperOutput(NamedTuple):
    """The generator's distribution over DAGs at one period, and the critic's value."""

    g: jax.Array  # [n, n] dependency matrix
    order_scores: jax.Array  # [n]
    edge_logits: jax.Array  # [n, n]
    value: jax.Array  # []


class UpperNetwork(nn.Module):
    """Per-agent encoder, DAG generator and DAG critic of one environment (no batch axis).

    Split into ``recur`` (the encoder's and the critic's recurrent updates) and ``heads``
    (generator and value head on the recurrent states), so that the PPO loss replays only
    the recurrences period by period and runs the heads once over all periods.
    """

    hidden_size: int
    delta: float
    keep_init: float

    def setup(self) -> None:
        self.encoder = ResettingGRU(self.hidden_size)
        self.critic = ResettingGRU(self.hidden_size)
        self.generator = DagGenerator(self.hidden_size, self.delta, self.keep_init)
        self.value_head = _dense(1, 1.0)

    def __call__(
        self, carry: tuple[jax.Array, jax.Array], obs: jax.Array, state: jax.Array, reset: jax.Array
    ) -> tuple[tuple[jax.Array, jax.Array], UpperOutput]:
        carry = self.recur(carry, obs, state, reset)
        return carry, self.heads(*carry)

    def recur(
        self, carry: tuple[jax.Array, jax.Array], obs: jax.Array, state: jax.Array, reset: jax.Array
    ) -> tuple[jax.Array, jax.Array]:
        """The encoder's ``[n, h]`` and the critic's ``[h]`` states after one period's input."""
        agent_carry, critic_carry = carry
        n = obs.shape[0]
        agent_carry = self.encoder(agent_carry, with_agent_id(obs), jnp.broadcast_to(reset, (n,)))
        joint = jnp.concatenate([obs.reshape(-1), state])
        return agent_carry, self.critic(critic_carry, joint, reset)

    def heads(self, agent_carry: jax.Array, critic_carry: jax.Array) -> UpperOutput:
        """The DAG distribution and the value from the recurrent states."""
        g, _, order_scores, edge_logits = self.generator(agent_carry)
        return UpperOutput(g, order_scores, edge_logits, self.value_head(critic_carry)[0])


class UpperCarry(NamedTuple):
    """Recurrent states of the encoder ``[E, n, h]`` and critic ``[E, h]``, and whether each
    env started a new episode since the last period boundary ``[E]``."""

    agents: jax.Array
    critic: jax.Array
    reset: jax.Array


class UpperLearner(NamedTuple):
    """Upper-layer parameters and optimiser state."""

    params: Params
    opt: optax.OptState


class Period(NamedTuple):
    """One period of every env, as the upper layer's PPO needs it (leaves ``[E, ...]``;
    stacked ``[P, E, ...]``)."""

    obs: jax.Array  # [E, n, obs_dim] at the period's first step
    state: jax.Array  # [E, state_dim]
    reset: jax.Array  # [E], recurrent states restart here
    carry: tuple[jax.Array, jax.Array]  # encoder [E, n, h] and critic [E, h] states before it
    action: DagAction  # order [E, n], keep [E, n, n]
    g: jax.Array  # [E, n, n], the graph the action was sampled on (fixes the candidate pairs)
    log_prob: jax.Array  # [E]
    value: jax.Array  # [E]
    reward: jax.Array  # [E], discounted return of the period minus batch_cost * K
    baseline: jax.Array  # [E], with dag_credit=paired: the reward of the same period (same
    # start, same keys) replayed on the generator's most likely DAG; else 0
    done: jax.Array  # [E], an episode ended during the period
    batch_index: jax.Array  # [E, n], the sampled DAG's layering

    @property
    def num_batches(self) -> jax.Array:
        """K of each sampled DAG (``[E]``, or ``[P, E]`` stacked)."""
        return jnp.max(self.batch_index, axis=-1) + 1


class UpperLayer:
    """The generator policy of one config: acting at period boundaries and its PPO update."""

    def __init__(self, spec: EnvSpec, cfg: TrainConfig) -> None:
        self.spec = spec
        self.cfg = cfg
        self.delta = dependency_threshold(cfg.dag_delta, spec.num_agents)
        self.network = UpperNetwork(cfg.hidden_size, self.delta, cfg.dag_keep_init)
        total = cfg.num_updates * cfg.dag_epochs * cfg.dag_minibatches
        lr = (
            optax.linear_schedule(cfg.dag_lr, cfg.dag_lr_floor, total)
            if cfg.anneal_lr
            else cfg.dag_lr
        )
        # Its state is kept on the parameters raveled into one vector, and ``update`` steps it
        # on that vector: a few XLA kernels per step instead of a few per parameter array.
        self.optimiser = optax.flatten(
            optax.chain(
                optax.clip_by_global_norm(cfg.max_grad_norm), optax.adam(lr, eps=cfg.dag_adam_eps)
            )
        )

    def init(self, key: jax.Array) -> UpperLearner:
        spec, h = self.spec, self.cfg.hidden_size
        carry = (jnp.zeros((spec.num_agents, h)), jnp.zeros((h,)))
        obs = jnp.zeros((spec.num_agents, spec.obs_dim))
        params = self.network.init(key, carry, obs, jnp.zeros((spec.state_dim,)), jnp.bool_(True))
        return UpperLearner(params, self.optimiser.init(params))

    def initial_carry(self, num_envs: int) -> UpperCarry:
        """Fresh recurrent states; every env restarts at its first period."""
        n, h = self.spec.num_agents, self.cfg.hidden_size
        return UpperCarry(
            jnp.zeros((num_envs, n, h)), jnp.zeros((num_envs, h)), jnp.ones((num_envs,), bool)
        )

    def _apply(
        self, params: Params, carry: UpperCarry, obs: jax.Array, state: jax.Array
    ) -> tuple[tuple[jax.Array, jax.Array], UpperOutput]:
        apply = jax.vmap(self.network.apply, in_axes=(None, 0, 0, 0, 0))
        return apply(params, (carry.agents, carry.critic), obs, state, carry.reset)

    def act(
        self,
        params: Params,
        carry: UpperCarry,
        obs: jax.Array,
        state: jax.Array,
        key: jax.Array,
        greedy: bool | jax.Array = False,
    ) -> tuple[UpperCarry, DagAction, UpperOutput, jax.Array]:
        """Sample (or take the most likely) DAG for every env at a period boundary.

        Returns the advanced carry (``reset`` cleared), the action, the distribution and the
        batch index ``[E, n]`` from the DAG's layering.
        """
        (agents, critic), out = self._apply(params, carry, obs, state)
        delta = self.delta
        cap = self.cfg.dag_max_batches

        def sampled() -> DagAction:
            keys = jax.random.split(key, obs.shape[0])
            sample = jax.vmap(sample_dag, in_axes=(0, 0, 0, 0, None, None))
            return sample(keys, out.order_scores, out.edge_logits, out.g, delta, cap)

        action = choose(greedy, lambda: self.most_likely(out), sampled)
        new_carry = UpperCarry(agents, critic, jnp.zeros_like(carry.reset))
        return new_carry, action, out, batch_layering(action)

    def log_prob(self, action: DagAction, out: UpperOutput, batch_index: jax.Array) -> jax.Array:
        """Every env's exact log-probability ``[E]`` of ``action`` (its layering
        ``batch_index``) under the distribution ``out`` it was drawn from."""
        per_env = jax.vmap(log_prob, in_axes=(0, 0, 0, 0, None, None, 0))
        return per_env(
            action,
            out.order_scores,
            out.edge_logits,
            out.g,
            self.delta,
            self.cfg.dag_max_batches,
            batch_index,
        )

    def most_likely(self, out: UpperOutput) -> DagAction:
        """Every env's most likely DAG under ``out`` (leaves ``[E, ...]``): the order by
        score, each candidate pair kept where its keep probability exceeds one half."""
        order = jnp.argsort(-out.order_scores, axis=-1).astype(jnp.int32)
        build = jax.vmap(build_dag, in_axes=(0, 0, 0, None, None))
        return build(order, out.edge_logits > 0, out.g, self.delta, self.cfg.dag_max_batches)

    def value(self, params: Params, carry: UpperCarry, obs: jax.Array, state: jax.Array):
        """Critic value ``[E]`` at a boundary, without advancing the carry (for bootstraps)."""
        return self._apply(params, carry, obs, state)[1].value

    def period_reward(
        self,
        reward: jax.Array,
        done: jax.Array,
        terminated: jax.Array,
        end_value: jax.Array,
        num_batches: jax.Array,
    ) -> tuple[jax.Array, jax.Array]:
        """``Σ_{l<T} γ^l r_{t+l}`` up to the first episode end, minus ``batch_cost · K``;
        rewards and flags ``[T, E]``. If that end is a time-limit truncation (done, not
        terminated) at step l, the return bootstraps with ``γ^{l+1} end_value`` (``[E]``, the
        critic's value of the state the episode was cut at), as the lower layer's GAE does.
        Also returns whether an episode ended ``[E]`` (GAE does not bootstrap past it)."""
        steps = reward.shape[0]
        alive = jnp.cumprod(1.0 - done.astype(jnp.float32), axis=0)
        still_running = jnp.concatenate([jnp.ones_like(alive[:1]), alive[:-1]], axis=0)
        discount = (self.cfg.gamma ** jnp.arange(steps))[:, None]
        period_return = jnp.sum(discount * still_running * reward, axis=0)
        first_end = done & (still_running > 0)
        truncated = jnp.any(first_end & ~terminated, axis=0)
        end_discount = jnp.sum(jnp.where(first_end, discount * self.cfg.gamma, 0.0), axis=0)
        period_return += jnp.where(truncated, end_discount * end_value, 0.0)
        return period_return - self.cfg.batch_cost * num_batches, done.any(axis=0)

    def end_value(
        self, params: Params, carry: UpperCarry, obs: jax.Array, state: jax.Array, done: jax.Array
    ) -> jax.Array:
        """Critic value ``[E]`` of the state where each env's first episode of a period ended
        (``obs[T, E, n, o]`` at that step, ``state[T, E, s]`` the state it reached), from the
        recurrent state after the period's first step; 0 where no episode ended."""
        step = jnp.argmax(done, axis=0)
        envs = jnp.arange(done.shape[1])
        value = self.value(params, carry, obs[step, envs], state[step, envs])
        return jnp.where(done.any(axis=0), value, 0.0)

    def update(
        self,
        learner: UpperLearner,
        periods: Period,
        last_value: jax.Array,
        key: jax.Array,
    ) -> tuple[UpperLearner, dict[str, jax.Array]]:
        """PPO-clip with the KL penalty to the old generator (eq. 8) over the rollout's
        periods ``[P, E]``; advantages by GAE over periods with discount ``γ^T`` (eq. 6-7). The
        metrics are the updated generator's on all the periods, so KL and clip fraction move."""
        cfg = self.cfg
        discount = cfg.gamma**cfg.dag_period
        done = periods.done.astype(jnp.float32)
        next_values = jnp.concatenate([periods.value[1:], last_value[None]], axis=0)
        deltas = td_errors(periods.reward, periods.value, next_values, done, discount)
        advantages = corrected_gae(deltas, jnp.ones_like(deltas), done, discount, cfg.gae_lambda)
        targets = advantages + periods.value
        if cfg.dag_credit == "paired":  # the sampled DAG's gain over the most likely one
            advantages = periods.reward - periods.baseline
        advantages = normalise(advantages, jnp.ones_like(advantages, bool))
        flat_params, unravel = ravel_pytree(learner.params)

        def flat_loss(flat: jax.Array, *batch: object) -> tuple:
            return self._loss(unravel(flat), *batch)

        grad_fn = jax.value_and_grad(flat_loss, has_aux=True)

        def minibatch_step(learner: UpperLearner, batch: tuple) -> tuple:
            grads = grad_fn(learner.params, *batch)[1]
            updates, opt = self.optimiser.update(grads, learner.opt, learner.params)
            return UpperLearner(optax.apply_updates(learner.params, updates), opt), None

        num_envs = periods.done.shape[1]

        def epoch(learner: UpperLearner, key: jax.Array) -> tuple:
            order = jax.random.permutation(key, num_envs).reshape(cfg.dag_minibatches, -1)
            batches = (
                jax.tree.map(lambda x: x[:, order].swapaxes(0, 1), periods),
                advantages[:, order].swapaxes(0, 1),
                targets[:, order].swapaxes(0, 1),
            )
            return jax.lax.scan(minibatch_step, learner, batches)

        learner = learner._replace(params=flat_params)
        learner = jax.lax.scan(epoch, learner, jax.random.split(key, cfg.dag_epochs))[0]
        learner = learner._replace(params=unravel(learner.params))
        # Measured after the update, on all the round's periods: the KL and clip fraction of
        # the updated generator against the one that sampled them (0 before any step).
        metrics = self._loss(learner.params, periods, advantages, targets)[1]
        if cfg.dag_credit == "paired":
            metrics["paired_gain"] = jnp.mean(periods.reward - periods.baseline)
        return learner, {f"dag_{k}": v for k, v in metrics.items()}

    def _loss(
        self,
        params: Params,
        periods: Period,
        advantages: jax.Array,
        targets: jax.Array,
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        cfg = self.cfg
        # Each period's recurrent step from the state the rollout had before it, all periods
        # at once (gradients through one step, as π's chunks replay from stored states): a
        # scan over the periods made the generator's step about twice as expensive.
        recur = partial(self.network.apply, params, method=UpperNetwork.recur)
        over_periods_and_envs = jax.vmap(jax.vmap(recur))
        agents, critic = over_periods_and_envs(
            periods.carry, periods.obs, periods.state, periods.reset
        )
        heads = partial(self.network.apply, params, method=UpperNetwork.heads)
        out = jax.vmap(jax.vmap(heads))(agents, critic)
        per_env = jax.vmap(log_prob, in_axes=(0, 0, 0, 0, None, None, 0))
        over_periods = jax.vmap(per_env, in_axes=(0, 0, 0, 0, None, None, 0))
        new_log_prob = over_periods(
            periods.action,
            out.order_scores,
            out.edge_logits,
            periods.g,
            self.delta,
            cfg.dag_max_batches,
            periods.batch_index,
        )
        log_ratio = new_log_prob - periods.log_prob
        ratio = jnp.exp(log_ratio)
        policy_loss = -jnp.mean(clipped_surrogate(ratio, advantages, cfg.clip_eps))
        kl = jnp.mean((ratio - 1.0) - log_ratio)  # KL(old || new), estimated on old's samples
        edge_entropy = jax.vmap(jax.vmap(entropy_of_edges, in_axes=(0, 0, None)), (0, 0, None))
        first_choice = -jnp.sum(
            jax.nn.softmax(out.order_scores) * jax.nn.log_softmax(out.order_scores), axis=-1
        )
        entropy = jnp.mean(edge_entropy(out.edge_logits, periods.g, self.delta) + first_choice)
        value_loss = jnp.mean((out.value - targets) ** 2)
        loss = policy_loss + cfg.dag_kl_coef * kl - cfg.dag_ent_coef * entropy + 0.5 * value_loss
        metrics = {
            "policy_loss": policy_loss,
            "value_loss": value_loss,
            "kl": kl,
            "clip_frac": jnp.mean(jnp.abs(ratio - 1.0) > cfg.clip_eps),
            "entropy": entropy,
        }
        return loss, metrics
