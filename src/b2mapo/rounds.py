"""The round interface every algorithm implements, and its implementation for fixed partitions.

A round is ``collect`` (a rollout of π), then ``update`` (π by the batch-sequential engine, then
whatever else the algorithm trains). MAPPO, HAPPO, A2PO and ``b2mapo-fixed`` are
``FixedRound``s: a partitioner draws the batches, the engine does the rest. B2MAPO's learned
DAG is ``b2mapo.upper.round.LearnedRound``; the trainer and the runner see only this interface.
"""

from __future__ import annotations

import abc
from pathlib import Path
from typing import Any, Protocol

import jax
import jax.numpy as jnp

from b2mapo.config import ConfigError, TrainConfig
from b2mapo.engine import batch_sequential_update
from b2mapo.envs.core import Env, TimeStep
from b2mapo.evaluation import Player
from b2mapo.learner import EngineSettings, LearnerState
from b2mapo.networks import Networks, Params
from b2mapo.partition import Partitioner, make_partitioner
from b2mapo.rollout import rollout
from b2mapo.state import Collected, Policies, RunnerState


class History(Protocol):
    """What a round records of a run beside its metrics at every evaluation (B2MAPO: its
    sampled DAGs at fixed states): JSON lines at ``path``, cut back to a resumed checkpoint's
    update (``rundir.keep_until``) as the metrics are."""

    path: Path

    def record(self, policies: Policies, update: int) -> None:
        """Record ``policies`` (every seed's, on a leading axis) after ``update`` updates."""
        ...


class Round(abc.ABC):
    """One algorithm's training round on one env, per seed (the trainer maps it over seeds).

    Subclasses own their state beside π's learner (``RunnerState.own``), their rollout and
    update, the policies that act, and the players evaluation scores.
    """

    batches_metric = "num_batches"
    """The metric that holds the round's number of batches K (the progress line shows it)."""

    def __init__(
        self, cfg: TrainConfig, env: Env, networks: Networks, partitioner: Partitioner
    ) -> None:
        self.cfg = cfg
        self.env = env
        self.networks = networks
        self.partitioner = partitioner
        self.engine_settings = EngineSettings.of(cfg)

    @abc.abstractmethod
    def init_own(self, keys: tuple[jax.Array, jax.Array], num_envs: int) -> Any:
        """The round's own state (``RunnerState.own``) for ``num_envs`` envs, from two keys
        reserved for it."""

    @abc.abstractmethod
    def collect(self, state: RunnerState, key: jax.Array) -> Collected:
        """A round's rollout of π."""

    @abc.abstractmethod
    def update(
        self, state: RunnerState, collected: Collected, key: jax.Array
    ) -> tuple[RunnerState, dict[str, jax.Array]]:
        """The update phase on ``collected``; returns the state with the rollout's loop
        state taken over. With ``time_updates``, a metric ``X_update_end`` (a host-clock
        reading) becomes ``X_update_seconds`` from the phase's start."""

    @abc.abstractmethod
    def policies(self, state: RunnerState) -> Policies:
        """The parameters of ``state`` that act (evaluation input)."""

    @abc.abstractmethod
    def evaluation_players(self, keys: jax.Array, joint: bool) -> dict[str, tuple[Player, Any]]:
        """The players evaluation scores, by metric prefix, with their per-seed keys: ``""``
        is the policy that executes; ``joint`` also asks for π's own score if it differs."""

    @abc.abstractmethod
    def joint_player(self, num_envs: int | None = None) -> Player:
        """π acting batch by batch in ``num_envs`` envs (default: evaluation's). Its carry
        ends with the batch index ``[num_envs, n]``."""

    @abc.abstractmethod
    def executing_player(self, num_envs: int | None = None) -> Player:
        """The policy that executes, in ``num_envs`` envs (default: evaluation's)."""

    def updated_params(self, state: RunnerState) -> list[Any]:
        """The parameters an update phase writes (the host clock waits for them)."""
        return [state.learner.params]

    def resume_own(self, restored: Any, fresh: Any) -> Any:
        """The own state a host environment's run resumes with: its episodes were lost with
        its workers, so what follows them restarts from ``fresh``."""
        return restored

    def own_per_env(self, own: Any, per_env: Any) -> Any:
        """``own`` (the own state's shardings, all per seed) with its per-environment parts
        (recurrent states that follow the episodes) given ``per_env`` instead."""
        return own

    def history(self, run_dir: Path) -> History | None:
        """What the round records of a run at every evaluation, if anything."""
        return None

    def update_joint(
        self, state: RunnerState, collected: Collected, key: jax.Array
    ) -> tuple[LearnerState, dict[str, jax.Array]]:
        """π's batch-sequential engine update on the round's rollout (every algorithm's)."""
        return batch_sequential_update(
            state.learner,
            collected.trajectory,
            key,
            self.networks,
            self.partitioner,
            self.engine_settings,
        )

    def act_joint(
        self,
        policies: Policies,
        carry: jax.Array,
        ts: TimeStep,
        first: jax.Array,
        batch_index: jax.Array,
        key: jax.Array,
        greedy: bool | jax.Array,
    ) -> tuple[jax.Array, jax.Array]:
        """π's step for a batch of envs, batch by batch on ``batch_index``: (carry, actions)."""
        carry, actions, _ = self.networks.policy_step(
            policies.joint["actor"], carry, ts.obs, first, ts.avail, batch_index, key, greedy
        )
        return carry, actions

    # --- the policy that executes, alone (``b2mapo.load_policy``) ---------------------------

    @abc.abstractmethod
    def executing_params(self, policies: Policies) -> Any:
        """The parameters of the policy that executes."""

    def executing_batches(self, key: jax.Array, num_envs: int) -> jax.Array:
        """The batch index ``[num_envs, n]`` the executing policy acts on (zeros: at once)."""
        return jnp.zeros((num_envs, self.env.spec.num_agents), jnp.int32)

    @abc.abstractmethod
    def execute(
        self,
        params: Any,
        carry: jax.Array,
        obs: jax.Array,
        first: jax.Array,
        avail: jax.Array,
        batch_index: jax.Array,
        key: jax.Array,
        greedy: bool | jax.Array,
    ) -> tuple[jax.Array, jax.Array]:
        """One step of the executing policy for a batch of envs: (carry, actions ``[B, n]``)."""


class FixedRound(Round):
    """MAPPO, HAPPO, A2PO and ``b2mapo-fixed``: π's batches come from a partitioner (A2PO's
    from the round's advantages, inside the engine) and π is all the round trains."""

    def __init__(self, cfg: TrainConfig, env: Env, networks: Networks) -> None:
        n = env.spec.num_agents
        try:
            partitioner = make_partitioner(cfg.partition, n, cfg.num_batches, cfg.dependency_graph)
        except ValueError as error:
            raise ConfigError(f"{error} (env {cfg.env})") from None
        super().__init__(cfg, env, networks, partitioner)

    def init_own(self, keys: tuple[jax.Array, jax.Array], num_envs: int) -> None:
        return None

    def collect(self, state: RunnerState, key: jax.Array) -> Collected:
        """π's rollout on a partition drawn from the partitioner."""
        partition_key, rollout_key = jax.random.split(key)
        no_scores = jnp.zeros((self.env.spec.num_agents,))
        batch_index = self.partitioner.partition(partition_key, no_scores)
        loop, trajectory, episodes = rollout(
            self.env,
            self.networks,
            state.learner.params,
            state.loop,
            rollout_key,
            self.cfg.rollout_len,
            batch_index,
        )
        return Collected(trajectory, loop, episodes)

    def update(
        self, state: RunnerState, collected: Collected, key: jax.Array
    ) -> tuple[RunnerState, dict[str, jax.Array]]:
        learner, metrics = self.update_joint(state, collected, key)
        return state._replace(learner=learner, loop=collected.loop), metrics

    def policies(self, state: RunnerState) -> Policies:
        return Policies(state.learner.params)

    def evaluation_players(self, keys: jax.Array, joint: bool) -> dict[str, tuple[Player, Any]]:
        return {"": (self.joint_player(), keys)}

    def executing_player(self, num_envs: int | None = None) -> Player:
        return self.joint_player(num_envs)

    def joint_player(self, num_envs: int | None = None) -> Player:
        """π on a partition drawn once per evaluation (every agent at once for MAPPO)."""
        episodes = num_envs or self.cfg.eval_episodes

        def start(policies: Policies, key: jax.Array) -> tuple[tuple, jax.Array]:
            partition_key, key = jax.random.split(key)
            return (
                self.networks.initial_carry((episodes,)),
                self.partition(partition_key, episodes),
            ), key

        def act(policies, carry, ts: TimeStep, first, step, key, greedy):
            actor_carry, batch_index = carry
            _, action_key = jax.random.split(key)
            actor_carry, action = self.act_joint(
                policies, actor_carry, ts, first, batch_index, action_key, greedy
            )
            return (actor_carry, batch_index), action

        return Player(start, act)

    def partition(self, key: jax.Array, num_envs: int) -> jax.Array:
        """One partition drawn with ``key``, as the batch index ``[num_envs, n]``."""
        n = self.env.spec.num_agents
        return jnp.broadcast_to(self.partitioner.partition(key, jnp.zeros((n,))), (num_envs, n))

    def executing_params(self, policies: Policies) -> dict[str, Params]:
        return policies.joint

    def executing_batches(self, key: jax.Array, num_envs: int) -> jax.Array:
        """A policy that acts batch by batch on a fixed partition (``b2mapo-fixed``) draws it
        from ``key``; the others act at once."""
        if not self.cfg.condition_on_actions:
            return super().executing_batches(key, num_envs)
        return self.partition(key, num_envs)

    def execute(self, params, carry, obs, first, avail, batch_index, key, greedy):
        carry, actions, _ = self.networks.policy_step(
            params["actor"], carry, obs, first, avail, batch_index, key, greedy
        )
        return carry, actions
