"""Actor and critic networks, and how they are applied over the agent axis.

Agents are an array axis. With parameter sharing one set of weights is broadcast over it;
with independent parameters the weights carry a leading agent axis and are mapped over it.
Both paths run the same module code.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

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
    """GRU actor: obs -> Dense+ReLU -> GRU -> masked logits, for one agent and a batch.

    Split into ``encode`` (everything that depends on the observation alone: the input layer
    and the GRU's input projections), ``recur`` (the GRU's hidden update) and ``head``, so
    that training runs ``encode`` and ``head`` over a whole sequence at once and only the
    small hidden matmul stays inside the time loop.
    """

    hidden_size: int
    num_actions: int
    preceding_agents: int = 0  # agents whose earlier actions this actor sees; 0: none

    def setup(self) -> None:
        if self.preceding_agents:
            # Dense([features, one-hot actions of all agents]) written as a dense layer on the
            # features plus a per-(agent, action) embedding gathered and summed: the same
            # function, without an [n * A]-wide matmul.
            self.preceding_layer = _dense(self.hidden_size, np.sqrt(2))
            fan_in = self.hidden_size + self.preceding_agents * self.num_actions
            self.preceding_embedding = self.param(
                "preceding_embedding",
                nn.initializers.normal(np.sqrt(2.0 / fan_in)),
                (self.preceding_agents, self.num_actions, self.hidden_size),
            )
        self.input_layer = _dense(self.hidden_size, np.sqrt(2))
        self.input_gates = nn.Dense(3 * self.hidden_size)  # reset, update, candidate
        self.hidden_gates = nn.Dense(3 * self.hidden_size, kernel_init=nn.initializers.orthogonal())
        self.policy_head = _dense(self.num_actions, 0.01)

    def __call__(
        self,
        carry: jax.Array,
        obs: jax.Array,
        first: jax.Array,
        avail: jax.Array,
        preceding: jax.Array | None = None,
    ) -> tuple[jax.Array, jax.Array]:
        carry, features = self.recur(carry, self.encode(obs), first)
        return carry, self.head(features, avail, preceding)

    def encode(self, obs: jax.Array) -> jax.Array:
        return self.input_gates(nn.relu(self.input_layer(obs)))

    def recur(
        self, carry: jax.Array, input_gates: jax.Array, first: jax.Array
    ) -> tuple[jax.Array, jax.Array]:
        """One GRU step (flax ``GRUCell`` equations); ``first`` zeroes the carry first."""
        carry = jnp.where(first[..., None], jnp.zeros_like(carry), carry)
        carry = gru_update(carry, input_gates, self.hidden_gates(carry))
        return carry, carry

    def head(
        self, features: jax.Array, avail: jax.Array, preceding: jax.Array | None = None
    ) -> jax.Array:
        """Masked logits from the GRU features and, when conditioned, the actions of the
        agents in earlier batches (they enter after the GRU, so acting batch by batch
        re-runs only this head)."""
        if self.preceding_agents:
            visible = preceding < self.num_actions  # [..., n]
            action = jnp.minimum(preceding, self.num_actions - 1)
            embedded = self.preceding_embedding[jnp.arange(self.preceding_agents), action]
            seen = jnp.sum(jnp.where(visible[..., None], embedded, 0.0), axis=-2)
            features = nn.relu(self.preceding_layer(features) + seen)
        return jnp.where(avail, self.policy_head(features), MASKED_LOGIT)


def gru_update(carry: jax.Array, input_gates: jax.Array, hidden_gates: jax.Array) -> jax.Array:
    """The GRU's new state from its input's and its state's projections onto the reset,
    update and candidate gates (``[..., 3h]`` each, in that order): two matmuls per step
    instead of the six of flax's ``GRUCell``, with the same equations."""
    x_r, x_z, x_n = jnp.split(input_gates, 3, axis=-1)
    h_r, h_z, h_n = jnp.split(hidden_gates, 3, axis=-1)
    reset = nn.sigmoid(x_r + h_r)
    update = nn.sigmoid(x_z + h_z)
    candidate = jnp.tanh(x_n + reset * h_n)
    return (1.0 - update) * candidate + update * carry


class StateCritic(nn.Module):
    """Critic MLP: per-agent input (global state or own observation, plus agent id) -> value
    (normalised scale)."""

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


def preceding_actions(actions: jax.Array, batch_index: jax.Array, num_actions: int) -> jax.Array:
    """Each agent's view of the actions taken at the same step by agents in earlier batches:
    ``[..., n_i, n_j]`` int32, agent j's action where ``m[j] < m[i]``, else ``num_actions``
    (nothing seen)."""
    earlier = batch_index[..., None, :] < batch_index[..., :, None]  # [..., i, j]
    return jnp.where(earlier, actions[..., None, :], num_actions).astype(jnp.int32)


class Networks:
    """The actor and critic of one algorithm, applied agent-stacked (agent axis = -2 of inputs).

    ``share_params`` broadcasts one parameter set over agents; otherwise each agent has its
    own parameters, stacked along a leading axis. ``condition_on_actions`` gives the actor
    the actions of agents in earlier batches at the same step (B2MAPO); then agents act
    batch by batch. ``local_critic`` gives the critic each agent's own observation instead
    of the global state (IPPO's decentralised critic).
    """

    def __init__(
        self,
        spec: EnvSpec,
        hidden_size: int,
        share_params: bool,
        condition_on_actions: bool = False,
        local_critic: bool = False,
    ) -> None:
        self.spec = spec
        self.hidden_size = hidden_size
        self.share_params = share_params
        self.condition_on_actions = condition_on_actions
        self.local_critic = local_critic
        preceding_agents = spec.num_agents if condition_on_actions else 0
        self.actor = RecurrentActor(hidden_size, spec.num_actions, preceding_agents)
        self.critic = StateCritic(hidden_size)
        self._param_axis = None if share_params else 0

    def init(self, key: jax.Array) -> dict[str, Params]:
        """Initial actor and critic parameters (stacked per agent when not shared)."""
        n, spec = self.spec.num_agents, self.spec
        obs = jnp.zeros((1, spec.obs_dim + n))
        carry = jnp.zeros((1, self.hidden_size))
        first = jnp.zeros((1,), bool)
        avail = jnp.ones((1, spec.num_actions), bool)
        preceding = jnp.zeros((1, n), jnp.int32) if self.condition_on_actions else None
        state = jnp.zeros((1, (spec.obs_dim if self.local_critic else spec.state_dim) + n))

        def init_one(k: jax.Array) -> dict[str, Params]:
            ka, kc = jax.random.split(k)
            return {
                "actor": self.actor.init(ka, carry, obs, first, avail, preceding),
                "critic": self.critic.init(kc, state),
            }

        if self.share_params:
            return init_one(key)
        return jax.vmap(init_one)(jax.random.split(key, n))

    def initial_carry(self, batch_shape: tuple[int, ...]) -> jax.Array:
        """Zero GRU state for ``batch_shape + (n,)`` agents."""
        return jnp.zeros((*batch_shape, self.spec.num_agents, self.hidden_size))

    def preceding(self, actions: jax.Array, batch_index: jax.Array) -> jax.Array | None:
        """The earlier batches' action input ``[..., n, n]``, or None when not conditioned."""
        if not self.condition_on_actions:
            return None
        return preceding_actions(actions, batch_index, self.spec.num_actions)

    def _per_agent(self, method: Any, agent_axis: int, *args: jax.Array | None) -> Any:
        """Apply an actor method to every agent (inputs carry the agent axis at ``agent_axis``)."""

        def apply(params: Params, *inputs: jax.Array | None) -> Any:
            return self.actor.apply(params, *inputs, method=method)

        in_axes = (self._param_axis, *(None if a is None else agent_axis for a in args))
        return jax.vmap(apply, in_axes=in_axes, out_axes=agent_axis)

    def act(
        self,
        actor_params: Params,
        carry: jax.Array,
        obs: jax.Array,
        first: jax.Array,
        avail: jax.Array,
        preceding: jax.Array | None = None,
    ) -> tuple[jax.Array, jax.Array]:
        """One actor step for all agents: inputs ``[B, n, ...]``, ``first`` ``[B]``.

        Returns the new carry ``[B, n, h]`` and masked logits ``[B, n, A]``.
        """
        first = jnp.broadcast_to(first[:, None], obs.shape[:2])
        obs = with_agent_id(obs)
        apply = self._per_agent(RecurrentActor.__call__, 1, carry, obs, first, avail, preceding)
        return apply(actor_params, carry, obs, first, avail, preceding)

    def policy_step(
        self,
        actor_params: Params,
        carry: jax.Array,
        obs: jax.Array,
        first: jax.Array,
        avail: jax.Array,
        batch_index: jax.Array,
        key: jax.Array,
        greedy: bool | jax.Array = False,
    ) -> tuple[jax.Array, jax.Array, jax.Array]:
        """Choose every agent's action for one step (inputs ``[B, n, ...]``).

        Without conditioning, all agents act at once. With it, batch 0 acts on its history
        only and batch k also sees the actions just chosen by batches < k: the GRU runs once
        and the head once per batch. Returns (carry, actions ``[B, n]``, the logits each
        agent's action was drawn from ``[B, n, A]``).
        """
        if not self.condition_on_actions:
            carry, logits = self.act(actor_params, carry, obs, first, avail)
            return carry, sample_actions(key, logits, greedy), logits
        first = jnp.broadcast_to(first[:, None], obs.shape[:2])
        obs = with_agent_id(obs)
        recur = self._per_agent(RecurrentActor.recur, 1, carry, obs, first)
        encode = self._per_agent(RecurrentActor.encode, 1, obs)
        carry, features = recur(actor_params, carry, encode(actor_params, obs), first)
        index = jnp.broadcast_to(batch_index, obs.shape[:2])
        actions = jnp.zeros(obs.shape[:2], jnp.int32)
        logits = jnp.zeros((*obs.shape[:2], self.spec.num_actions))
        # ``features`` stands in for the preceding-action input: only its presence matters here.
        head = self._per_agent(RecurrentActor.head, 1, features, avail, features)

        # Gumbel-max with noise drawn once: each agent's draw is used only in its own batch,
        # so sharing the noise across batches leaves every distribution unchanged.
        noise = choose(
            greedy, lambda: jnp.zeros(logits.shape), lambda: jax.random.gumbel(key, logits.shape)
        )

        def batch_acts(stage: jax.Array, acted: tuple) -> tuple:
            actions, logits = acted
            stage_logits = head(actor_params, features, avail, self.preceding(actions, index))
            chosen = jnp.argmax(stage_logits + noise, axis=-1)
            in_stage = index == stage
            return (
                jnp.where(in_stage, chosen, actions),
                jnp.where(in_stage[..., None], stage_logits, logits),
            )

        actions, logits = jax.lax.fori_loop(0, jnp.max(index) + 1, batch_acts, (actions, logits))
        return carry, actions, logits

    def value(
        self, critic_params: Params, state: jax.Array, obs: jax.Array | None = None
    ) -> jax.Array:
        """Values ``[..., n]`` (normalised scale) from global states ``[..., state_dim]`` or,
        with a local critic, from observations ``[..., n, obs_dim]``.

        The critic is a state-value baseline and does not see earlier batches' actions: a
        bootstrap from the next state would need actions not yet chosen.
        """
        n = self.spec.num_agents
        batch_shape = state.shape[:-1]
        if self.local_critic:
            assert obs is not None, "a local critic needs the observations"
            inputs = with_agent_id(obs.reshape(-1, n, obs.shape[-1]))
        else:
            inputs = critic_input(state.reshape(-1, state.shape[-1]), n)
        apply = jax.vmap(self.critic.apply, in_axes=(self._param_axis, 1), out_axes=1)
        return apply(critic_params, inputs).reshape(*batch_shape, n)

    def unroll(
        self,
        actor_params: Params,
        carry: jax.Array,
        obs: jax.Array,
        first: jax.Array,
        avail: jax.Array,
        preceding: jax.Array | None = None,
    ) -> jax.Array:
        """Replay the actor over a sequence: inputs ``[T, B, n, ...]``, logits ``[T, B, n, A]``.

        The same function as ``act`` step by step, but the input layers and the policy head
        run once over the whole sequence; only the GRU's hidden update is sequential.
        """
        first = jnp.broadcast_to(first[..., None], obs.shape[:3])
        obs = with_agent_id(obs)
        encode = self._per_agent(RecurrentActor.encode, 2, obs)
        input_gates = encode(actor_params, obs)
        recur = self._per_agent(RecurrentActor.recur, 1, carry, input_gates[0], first[0])

        def step(c: jax.Array, inputs: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, tuple]:
            return recur(actor_params, c, *inputs)

        _, features = jax.lax.scan(step, carry, (input_gates, first))
        head = self._per_agent(RecurrentActor.head, 2, features, avail, preceding)
        return head(actor_params, features, avail, preceding)

    def unit_logits(
        self,
        actor_params: Params,
        agents: jax.Array,
        carry: jax.Array,
        obs: jax.Array,
        first: jax.Array,
        avail: jax.Array,
        preceding: jax.Array | None = None,
    ) -> jax.Array:
        """Logits ``[L, W, A]`` of ``W`` training units, each one agent's sequence of ``L``
        steps replayed from its GRU state ``carry[W, h]`` (``obs[L, W, o]``, ``first[L, W]``,
        ``avail[L, W, A]``, ``preceding[L, W, n]``); ``agents[W]`` says whose they are."""
        obs = self._with_unit_id(obs, agents)

        def sequence(params: Params, c: jax.Array, o, f, a, p) -> jax.Array:
            gates = self.actor.apply(params, o, method=RecurrentActor.encode)

            def step(c: jax.Array, inputs: tuple[jax.Array, jax.Array]) -> tuple:
                return self.actor.apply(params, c, *inputs, method=RecurrentActor.recur)

            _, features = jax.lax.scan(step, c, (gates, f))
            return self.actor.apply(params, features, a, p, method=RecurrentActor.head)

        params, param_axis = self._unit_params(actor_params, agents)
        in_axes = (param_axis, 0, 1, 1, 1, None if preceding is None else 1)
        return jax.vmap(sequence, in_axes=in_axes, out_axes=1)(
            params, carry, obs, first, avail, preceding
        )

    def unit_values(
        self,
        critic_params: Params,
        agents: jax.Array,
        state: jax.Array,
        obs: jax.Array | None = None,
    ) -> jax.Array:
        """Values ``[L, W]`` of training units from their global states ``[L, W, s]`` or,
        with a local critic, their own observations ``[L, W, o]``."""
        x = obs if self.local_critic else state
        assert x is not None, "a local critic needs the observations"
        x = self._with_unit_id(x, agents)
        params, param_axis = self._unit_params(critic_params, agents)
        return jax.vmap(self.critic.apply, in_axes=(param_axis, 1), out_axes=1)(params, x)

    def _with_unit_id(self, x: jax.Array, agents: jax.Array) -> jax.Array:
        """Append each unit's one-hot agent id to its inputs ``[L, W, d]``."""
        ids = jax.nn.one_hot(agents, self.spec.num_agents, dtype=x.dtype)
        return jnp.concatenate([x, jnp.broadcast_to(ids, (*x.shape[:2], ids.shape[-1]))], -1)

    def _unit_params(self, params: Params, agents: jax.Array) -> tuple[Params, int | None]:
        """Parameters per training unit: the shared set, or each unit's agent's own set."""
        if self.share_params:
            return params, None
        return jax.tree.map(lambda p: p[agents], params), 0


_Choice = TypeVar("_Choice")


def choose(
    greedy: bool | jax.Array,
    most_likely: Callable[[], _Choice],
    sampled: Callable[[], _Choice],
) -> _Choice:
    """``most_likely()`` if ``greedy``, else ``sampled()``. A Python bool branches in Python, so
    training's rollouts compile one side only; a traced flag becomes a ``lax.cond``, so that one
    compiled evaluation serves both modes (the flag is the same for every seed, so under the
    seed vmap it stays a branch)."""
    if isinstance(greedy, bool):
        return most_likely() if greedy else sampled()
    return jax.lax.cond(greedy, most_likely, sampled)


def sample_actions(
    key: jax.Array, logits: jax.Array, greedy: bool | jax.Array = False
) -> jax.Array:
    """Sample (or take the most likely) action from masked logits ``[..., A]``."""
    return choose(
        greedy,
        lambda: jnp.argmax(logits, axis=-1),
        lambda: jax.random.categorical(key, logits),
    )
