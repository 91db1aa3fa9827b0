"""Networks: sequence replay equals step-by-step acting; per-agent parameters stay per agent."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from b2mapo.envs import EnvSpec
from b2mapo.networks import MASKED_LOGIT, Networks

SPEC = EnvSpec("probe", num_agents=3, obs_dim=5, state_dim=7, num_actions=4, episode_limit=10)


def random_inputs(key: jax.Array, steps: int = 6, batch: int = 2) -> tuple[jax.Array, ...]:
    k_obs, k_first, k_avail = jax.random.split(key, 3)
    n, a = SPEC.num_agents, SPEC.num_actions
    obs = jax.random.normal(k_obs, (steps, batch, n, SPEC.obs_dim))
    first = jax.random.bernoulli(k_first, 0.3, (steps, batch))
    avail = jax.random.bernoulli(k_avail, 0.6, (steps, batch, n, a)).at[..., 0].set(True)
    return obs, first, avail


@pytest.mark.parametrize("share_params", [True, False])
def test_unroll_equals_stepwise_acting(share_params: bool) -> None:
    """Training's sequence replay gives the logits the rollout's step-by-step acting gave."""
    nets = Networks(SPEC, hidden_size=8, share_params=share_params)
    params = nets.init(jax.random.PRNGKey(0))["actor"]
    obs, first, avail = random_inputs(jax.random.PRNGKey(1))
    carry0 = jax.random.normal(jax.random.PRNGKey(2), (2, SPEC.num_agents, 8))
    replayed = nets.unroll(params, carry0, obs, first, avail)
    carry, stepped = carry0, []
    for t in range(obs.shape[0]):
        carry, logits = nets.act(params, carry, obs[t], first[t], avail[t])
        stepped.append(logits)
    np.testing.assert_allclose(np.asarray(replayed), np.asarray(jnp.stack(stepped)), atol=1e-5)
    assert bool(jnp.all((replayed <= MASKED_LOGIT / 2) == ~avail))


def test_independent_parameters_are_per_agent() -> None:
    """With independent parameters, changing agent 0's weights changes only agent 0's output."""
    nets = Networks(SPEC, hidden_size=8, share_params=False)
    params = nets.init(jax.random.PRNGKey(0))
    kernel = params["actor"]["params"]["input_layer"]["kernel"]
    assert kernel.shape[0] == SPEC.num_agents
    assert not np.allclose(kernel[0], kernel[1])
    obs, first, avail = random_inputs(jax.random.PRNGKey(1))
    carry = nets.initial_carry((2,))
    before = nets.unroll(params["actor"], carry, obs, first, avail)
    bumped = jax.tree.map(lambda x: x.at[0].add(0.5), params["actor"])
    after = nets.unroll(bumped, carry, obs, first, avail)
    changed = np.abs(np.asarray(after - before)).max(axis=(0, 1, 3))
    assert changed[0] > 1e-3
    assert np.all(changed[1:] == 0.0)
    state = jax.random.normal(jax.random.PRNGKey(3), (5, SPEC.state_dim))
    assert nets.value(params["critic"], state).shape == (5, SPEC.num_agents)


def test_conditioned_actor_reads_only_earlier_actions() -> None:
    """With conditioning, a later batch's logits depend on an earlier batch's action; the
    earlier batch's logits do not depend on anyone's."""
    nets = Networks(SPEC, hidden_size=8, share_params=True, condition_on_actions=True)
    params = nets.init(jax.random.PRNGKey(0))["actor"]
    obs, first, avail = random_inputs(jax.random.PRNGKey(1))
    avail = jnp.ones_like(avail)
    batch_index = jnp.broadcast_to(jnp.array([0, 1, 1]), obs.shape[:3])
    carry = nets.initial_carry((2,))
    actions_a = jnp.zeros(obs.shape[:3], jnp.int32)
    actions_b = actions_a.at[..., 0].set(2)  # agent 0 (batch 0) acts differently
    logits_a, logits_b = (
        nets.unroll(params, carry, obs, first, avail, nets.preceding(a, batch_index))
        for a in (actions_a, actions_b)
    )
    np.testing.assert_array_equal(np.asarray(logits_a[..., 0, :]), np.asarray(logits_b[..., 0, :]))
    assert np.abs(np.asarray(logits_a[..., 1:, :] - logits_b[..., 1:, :])).max() > 1e-4


def test_shared_parameters_tell_the_agents_apart_by_their_id() -> None:
    """One parameter set for all agents: identical observations still give each agent its
    own logits and values, through the one-hot agent id (actor and critic)."""
    nets = Networks(SPEC, hidden_size=8, share_params=True)
    params = nets.init(jax.random.PRNGKey(0))
    obs = jnp.broadcast_to(jax.random.normal(jax.random.PRNGKey(1), (SPEC.obs_dim,)), (1, 3, 5))
    avail = jnp.ones((1, SPEC.num_agents, SPEC.num_actions), bool)
    _, logits = nets.act(params["actor"], nets.initial_carry((1,)), obs, jnp.ones(1, bool), avail)
    assert np.abs(np.asarray(logits[0, 0] - logits[0, 1])).max() > 1e-5
    values = nets.value(params["critic"], jnp.ones((1, SPEC.state_dim)))
    assert np.abs(np.asarray(values[0, 0] - values[0, 1])) > 1e-5
