"""Actor and critic networks, and how they are applied over the agent axis.

Agents are an array axis. With parameter sharing one set of weights is broadcast over it;
with independent parameters the weights carry a leading agent axis and are mapped over it.
Both paths run the same module code.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from b2mapo.envs.core import EnvSpec

Params = Any
MASKED_LOGIT = -1e9


def _dense(features: int, scale: float) -> nn.Dense:
    """A dense layer with the orthogonal initialisation of the MAPPO implementation details."""
    return nn.Dense(features, kernel_init=nn.initializers.orthogonal(scale))


class RecurrentActor(nn.Module):
    """One step of the GRU actor: obs -> MLP -> GRU -> masked logits (one agent, a batch)."""

    hidden_size: int
    num_actions: int

    @nn.compact
    def __call__(
        self, carry: jax.Array, obs: jax.Array, first: jax.Array, avail: jax.Array
    ) -> tuple[jax.Array, jax.Array]:
        x = nn.relu(_dense(self.hidden_size, np.sqrt(2))(obs))
        carry = jnp.where(first[..., None], jnp.zeros_like(carry), carry)
        carry, x = nn.GRUCell(self.hidden_size)(carry, x)
        logits = _dense(self.num_actions, 0.01)(x)
        return carry, jnp.where(avail, logits, MASKED_LOGIT)


class StateCritic(nn.Module):
    """Centralised critic: global state and agent id -> value (normalised scale)."""

    hidden_size: int

    @nn.compact
    def __call__(self, state: jax.Array) -> jax.Array:
        x = nn.relu(_dense(self.hidden_size, np.sqrt(2))(state))
        x = nn.relu(_dense(self.hidden_size, np.sqrt(2))(x))
        return _dense(1, 1.0)(x)[..., 0]


def agent_ids(num_agents: int, batch_shape: tuple[int, ...]) -> jax.Array:
    """One-hot agent ids, broadcast to ``batch_shape + (n, n)``."""
    return jnp.broadcast_to(jnp.eye(num_agents), (*batch_shape, num_agents, num_agents))


def with_agent_id(x: jax.Array) -> jax.Array:
    """Append the one-hot agent id to per-agent features ``[..., n, d]``."""
    return jnp.concatenate([x, agent_ids(x.shape[-2], x.shape[:-2])], axis=-1)


def critic_input(state: jax.Array, num_agents: int) -> jax.Array:
    """Per-agent critic input ``[..., n, state_dim + n]`` from states ``[..., state_dim]``."""
    per_agent = jnp.broadcast_to(
        state[..., None, :], (*state.shape[:-1], num_agents, state.shape[-1])
    )
    return with_agent_id(per_agent)


class Networks:
    """The actor and critic of one algorithm, applied agent-stacked (agent axis = -2 of inputs).

    ``share_params`` broadcasts one parameter set over agents; otherwise each agent has its
    own parameters, stacked along a leading axis.
    """

    def __init__(self, spec: EnvSpec, hidden_size: int, share_params: bool) -> None:
        self.spec = spec
        self.hidden_size = hidden_size
        self.share_params = share_params
        self.actor = RecurrentActor(hidden_size, spec.num_actions)
        self.critic = StateCritic(hidden_size)
        self._param_axis = None if share_params else 0

    def init(self, key: jax.Array) -> dict[str, Params]:
        """Initial actor and critic parameters (stacked per agent when not shared)."""
        n, spec = self.spec.num_agents, self.spec
        obs = jnp.zeros((1, spec.obs_dim + n))
        carry = jnp.zeros((1, self.hidden_size))
        first = jnp.zeros((1,), bool)
        avail = jnp.ones((1, spec.num_actions), bool)
        state = jnp.zeros((1, spec.state_dim + n))

        def init_one(k: jax.Array) -> dict[str, Params]:
            ka, kc = jax.random.split(k)
            return {
                "actor": self.actor.init(ka, carry, obs, first, avail),
                "critic": self.critic.init(kc, state),
            }

        if self.share_params:
            return init_one(key)
        return jax.vmap(init_one)(jax.random.split(key, n))

    def initial_carry(self, batch_shape: tuple[int, ...]) -> jax.Array:
        """Zero GRU state for ``batch_shape + (n,)`` agents."""
        return jnp.zeros((*batch_shape, self.spec.num_agents, self.hidden_size))

    def act(
        self,
        actor_params: Params,
        carry: jax.Array,
        obs: jax.Array,
        first: jax.Array,
        avail: jax.Array,
    ) -> tuple[jax.Array, jax.Array]:
        """One actor step for all agents: inputs ``[B, n, ...]``, ``first`` ``[B]``.

        Returns the new carry ``[B, n, h]`` and masked logits ``[B, n, A]``.
        """
        first = jnp.broadcast_to(first[:, None], obs.shape[:2])
        apply = jax.vmap(self.actor.apply, in_axes=(self._param_axis, 1, 1, 1, 1), out_axes=1)
        return apply(actor_params, carry, with_agent_id(obs), first, avail)

    def value(self, critic_params: Params, state: jax.Array) -> jax.Array:
        """Values ``[..., n]`` (normalised scale) from global states ``[..., state_dim]``."""
        batch_shape = state.shape[:-1]
        inputs = critic_input(state.reshape(-1, state.shape[-1]), self.spec.num_agents)
        apply = jax.vmap(self.critic.apply, in_axes=(self._param_axis, 1), out_axes=1)
        return apply(critic_params, inputs).reshape(*batch_shape, self.spec.num_agents)

    def unroll(
        self,
        actor_params: Params,
        carry: jax.Array,
        obs: jax.Array,
        first: jax.Array,
        avail: jax.Array,
    ) -> jax.Array:
        """Replay the actor over a sequence: inputs ``[T, B, n, ...]``, logits ``[T, B, n, A]``."""

        def step(c: jax.Array, inputs: tuple[jax.Array, ...]) -> tuple[jax.Array, jax.Array]:
            return self.act(actor_params, c, *inputs)

        _, logits = jax.lax.scan(step, carry, (obs, first, avail))
        return logits
