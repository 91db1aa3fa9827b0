"""The one environment contract every algorithm in b2mapo is written against.

An environment is a pair of pure functions, ``reset(key)`` and ``step(key, state, actions)``,
that return agent-stacked arrays. Algorithms never see an environment's own dicts.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol, runtime_checkable

import jax
import jax.numpy as jnp

from b2mapo.envs.spec import EnvSpec


class TimeStep(NamedTuple):
    """What the agents see after a reset or a step (one environment, agents stacked).

    On the step that ends an episode, ``obs``/``state``/``avail`` already belong to the next
    episode (auto-reset); ``final_state`` is the state the finished episode ended in, and
    ``episode_return``/``episode_length`` are the finished episode's totals.
    """

    obs: jax.Array  # [n, obs_dim] float32
    state: jax.Array  # [state_dim] float32, global state for centralised critics
    avail: jax.Array  # [n, num_actions] bool, available actions
    reward: jax.Array  # [] float32, shared team reward of the transition into this step
    terminated: jax.Array  # [] bool, the episode ended in a terminal state
    truncated: jax.Array  # [] bool, the episode hit its time limit without terminating
    won: jax.Array  # [] bool, the episode ended in a win
    final_state: jax.Array  # [state_dim] float32, state before the auto-reset
    episode_return: jax.Array  # [] float32, running (or, when done, final) episode return
    episode_length: jax.Array  # [] int32, running (or, when done, final) episode length

    @property
    def done(self) -> jax.Array:
        """The episode ended on this step, by termination or by truncation."""
        return self.terminated | self.truncated


class Env(Protocol):
    """What an environment provides: a spec and two pure, jit-able functions."""

    spec: EnvSpec

    def reset(self, key: jax.Array) -> tuple[Any, TimeStep]: ...

    def step(self, key: jax.Array, state: Any, actions: jax.Array) -> tuple[Any, TimeStep]: ...


@runtime_checkable
class BatchedEnv(Protocol):
    """An environment that resets and steps a fixed batch of instances in one call (a pool
    of host processes, ``b2mapo.envs.host``) instead of one pure function per instance."""

    spec: EnvSpec

    def reset_batch(self, keys: jax.Array) -> tuple[Any, TimeStep]: ...

    def step_batch(
        self, keys: jax.Array, states: Any, actions: jax.Array
    ) -> tuple[Any, TimeStep]: ...


def reset_batch(env: Env | BatchedEnv, keys: jax.Array) -> tuple[Any, TimeStep]:
    """Reset one environment per key (leading axis of the results)."""
    if isinstance(env, BatchedEnv):
        return env.reset_batch(keys)
    return jax.vmap(env.reset)(keys)


def step_batch(
    env: Env | BatchedEnv, keys: jax.Array, states: Any, actions: jax.Array
) -> tuple[Any, TimeStep]:
    """Step a batch of environments, one key, state and joint action each."""
    if isinstance(env, BatchedEnv):
        return env.step_batch(keys, states, actions)
    return jax.vmap(env.step)(keys, states, actions)


class EpisodeStats(NamedTuple):
    """Running totals of the current episode, carried inside the environment state."""

    episode_return: jax.Array
    episode_length: jax.Array


class WrappedState(NamedTuple):
    """Environment state: the wrapped env's own state plus the running episode totals."""

    inner: Any
    stats: EpisodeStats


def reset_where(
    done: jax.Array, reset_state: Any, stepped_state: Any, reset_view: Any, stepped_view: Any
) -> tuple[Any, Any]:
    """Auto-reset of a pure env's step: the fresh episode's state and view (obs, global
    state, avail) where ``done``, else the stepped ones."""

    def pick(fresh: jax.Array, kept: jax.Array) -> jax.Array:
        return jnp.where(done, fresh, kept)

    return jax.tree.map(pick, reset_state, stepped_state), jax.tree.map(
        pick, reset_view, stepped_view
    )


def strip_weak_types(tree: Any) -> Any:
    """Give every leaf a strong dtype, so that jitted steps do not compile twice."""
    return jax.tree.map(lambda leaf: jnp.asarray(leaf, dtype=jnp.asarray(leaf).dtype), tree)


class JaxMARLAdapter:
    """Turns a jaxmarl ``MultiAgentEnv`` into the b2mapo contract.

    Subclasses say how to read observations, global state, masks and the episode outcome
    out of the wrapped environment; stepping, auto-reset and episode bookkeeping live here.
    """

    spec: EnvSpec

    def __init__(self, env: Any, name: str, state_dim: int, episode_limit: int) -> None:
        self._env = env
        self._agents = list(env.agents)
        self.spec = EnvSpec(
            name=name,
            num_agents=len(self._agents),
            obs_dim=int(env.observation_spaces[self._agents[0]].shape[0]),
            state_dim=state_dim,
            num_actions=int(env.action_spaces[self._agents[0]].n),
            episode_limit=episode_limit,
        )

    # Hooks for subclasses.
    def _global_state(self, raw_obs: dict[str, jax.Array], inner: Any) -> jax.Array:
        raise NotImplementedError

    def _avail(self, inner: Any) -> jax.Array:
        raise NotImplementedError

    def _outcome(
        self, inner: Any, rewards: dict[str, jax.Array], all_done: jax.Array, infos: dict
    ) -> tuple[jax.Array, jax.Array, jax.Array]:
        """Return (shared reward, terminated, won) of a step that ended in ``inner``."""
        raise NotImplementedError

    def _raw_obs(self, inner: Any) -> dict[str, jax.Array] | None:
        """The wrapped env's observation dict of a state (what its ``reset`` and ``step_env``
        return with it), or None if it offers none. With it, a step observes the state it
        hands on once, instead of observing both the stepped state and a fresh reset's and
        choosing between them (one observation function less in every compiled step)."""
        del inner
        return None

    def _time_limit(self, episode_length: jax.Array) -> jax.Array:
        """Whether b2mapo itself ends the episode after ``episode_length`` steps (a
        truncation); the wrapped environments here keep their own time limits."""
        del episode_length
        return jnp.bool_(False)

    # The contract.
    def _observe(self, raw_obs: dict[str, jax.Array], inner: Any) -> tuple[jax.Array, ...]:
        obs = jnp.stack([raw_obs[agent] for agent in self._agents]).astype(jnp.float32)
        state = self._global_state(raw_obs, inner).astype(jnp.float32)
        return obs, state, self._avail(inner)

    def reset(self, key: jax.Array) -> tuple[WrappedState, TimeStep]:
        raw_obs, inner = self._env.reset(key)
        inner = strip_weak_types(inner)
        obs, state, avail = self._observe(raw_obs, inner)
        zero_f, zero_i, false = jnp.float32(0.0), jnp.int32(0), jnp.bool_(False)
        stats = EpisodeStats(zero_f, zero_i)
        timestep = TimeStep(obs, state, avail, zero_f, false, false, false, state, zero_f, zero_i)
        return WrappedState(inner, stats), timestep

    def step(
        self, key: jax.Array, state: WrappedState, actions: jax.Array
    ) -> tuple[WrappedState, TimeStep]:
        step_key, reset_key = jax.random.split(key)
        action_dict = {agent: actions[i] for i, agent in enumerate(self._agents)}
        raw_obs, inner, rewards, dones, infos = self._env.step_env(
            step_key, state.inner, action_dict
        )
        inner = strip_weak_types(inner)
        done = dones["__all__"]
        reward, terminated, won = self._outcome(inner, rewards, done, infos)
        episode_return = state.stats.episode_return + reward
        episode_length = state.stats.episode_length + 1
        done = done | self._time_limit(episode_length)
        truncated = done & ~terminated
        stepped = self._observe(raw_obs, inner)

        reset_state, reset_timestep = self.reset(reset_key)
        next_inner = jax.tree.map(lambda r, s: jnp.where(done, r, s), reset_state.inner, inner)
        next_raw_obs = self._raw_obs(next_inner)
        if next_raw_obs is None:
            obs, global_state, avail = jax.tree.map(
                lambda r, s: jnp.where(done, r, s),
                (reset_timestep.obs, reset_timestep.state, reset_timestep.avail),
                stepped,
            )
        else:
            obs, global_state, avail = self._observe(next_raw_obs, next_inner)
        stats = EpisodeStats(
            jnp.where(done, 0.0, episode_return).astype(jnp.float32),
            jnp.where(done, 0, episode_length).astype(jnp.int32),
        )
        timestep = TimeStep(
            obs=obs,
            state=global_state,
            avail=avail,
            reward=reward.astype(jnp.float32),
            terminated=terminated,
            truncated=truncated,
            won=won,
            final_state=stepped[1],
            episode_return=episode_return.astype(jnp.float32),
            episode_length=episode_length.astype(jnp.int32),
        )
        return WrappedState(next_inner, stats), timestep
