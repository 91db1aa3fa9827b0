"""B2MAPO's round (the paper's §3-4): π acts and updates batch by batch on DAGs the generator
samples every ``dag_period`` steps; then the generator learns by PPO on the periods and π_ind
by its own PPO plus distillation from the updated π."""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from b2mapo.config import TrainConfig
from b2mapo.derived import DerivedState, make_derived
from b2mapo.envs.core import Env
from b2mapo.evaluation import Player
from b2mapo.networks import Networks, Params
from b2mapo.partition import Partitioner, single
from b2mapo.rollout import Distillation, Followed, Trajectory, rollout
from b2mapo.rounds import History, Round
from b2mapo.state import Collected, Policies, RunnerState, host_clock
from b2mapo.upper.generator import (
    Period,
    UpperCarry,
    UpperLayer,
    UpperLearner,
    batch_layering,
)


class LearnedState(NamedTuple):
    """B2MAPO's own state beside π's learner (``RunnerState.own``)."""

    upper: UpperLearner  # the DAG generator and its critic
    upper_carry: UpperCarry  # their recurrent states at the start of the next rollout
    derived: DerivedState  # π_ind


class LearnedRollout(NamedTuple):
    """What B2MAPO's update needs beside π's rollout (``Collected.own``)."""

    periods: Period  # leaves [T / dag_period, E, ...], the generator's experience
    upper_carry: UpperCarry  # generator state after the rollout


class LearnedRound(Round):
    """The learned DAG's round: the generator's DAGs drive π's acting and update; the
    generator and π_ind train on the same rollout."""

    batches_metric = "dag_num_batches"

    def __init__(self, cfg: TrainConfig, env: Env, networks: Networks) -> None:
        # The batches come from the DAG generator and are stored per step; the engine only
        # reads them from the rollout.
        super().__init__(cfg, env, networks, Partitioner(single(env.spec.num_agents)))
        self.upper = UpperLayer(env.spec, cfg)
        self.derived = make_derived(env.spec, cfg)

    def init_own(self, keys: tuple[jax.Array, jax.Array], num_envs: int) -> LearnedState:
        upper_key, derived_key = keys
        return LearnedState(
            self.upper.init(upper_key),
            self.upper.initial_carry(num_envs),
            self.derived.init(derived_key, num_envs),
        )

    def collect(self, state: RunnerState, key: jax.Array) -> Collected:
        """A scan over periods; at each period's first step the generator samples a DAG per
        env, whose layering drives π's acting for the period's steps."""
        cfg, upper, own = self.cfg, self.upper, state.own
        params = state.learner.params
        derived_params = own.derived.learner.params

        def period_reward(
            trajectory: Trajectory, next_carry: UpperCarry, batch_index: jax.Array
        ) -> tuple[jax.Array, jax.Array]:
            tr = trajectory.transitions
            end_value = upper.end_value(
                own.upper.params, next_carry, tr.obs, tr.next_state, tr.done
            )
            k = jnp.max(batch_index, axis=-1) + 1
            return upper.period_reward(tr.reward, tr.done, tr.terminated, end_value, k)

        def period(carry: tuple, key: jax.Array) -> tuple[tuple, tuple]:
            start, upper_carry, derived_carry = carry
            act_key, step_key = jax.random.split(key)
            ts = start.timestep
            next_carry, action, dist, batch_index = upper.act(
                own.upper.params, upper_carry, ts.obs, ts.state, act_key
            )
            # π_ind watches π's acting, step by step (its GRU over the rollout).
            follower = self.derived.follower(derived_params, derived_carry)
            loop, trajectory, episodes = rollout(
                self.env,
                self.networks,
                params,
                start,
                step_key,
                cfg.dag_period,
                batch_index,
                follower,
            )
            reward, ended = period_reward(trajectory, next_carry, batch_index)
            baseline = jnp.zeros_like(reward)
            if cfg.dag_credit == "paired":  # the same period again on the most likely DAG
                greedy_index = batch_layering(upper.most_likely(dist))
                replayed = rollout(
                    self.env, self.networks, params, start, step_key, cfg.dag_period, greedy_index
                )[1]
                baseline = period_reward(replayed, next_carry, greedy_index)[0]
            record = Period(
                obs=ts.obs,
                state=ts.state,
                reset=upper_carry.reset,
                carry=(upper_carry.agents, upper_carry.critic),
                action=action,
                g=dist.g,
                log_prob=upper.log_prob(action, dist, batch_index),
                value=dist.value,
                reward=reward,
                baseline=baseline,
                done=ended,
                batch_index=batch_index,
            )
            next_carry = next_carry._replace(reset=ended)
            derived_carry = trajectory.followed.carry
            return (loop, next_carry, derived_carry), (trajectory, record, episodes)

        periods_per_round = cfg.rollout_len // cfg.dag_period
        (loop, upper_carry, derived_carry), (pieces, periods, episodes) = jax.lax.scan(
            period,
            (state.loop, own.upper_carry, own.derived.carry),
            jax.random.split(key, periods_per_round),
        )

        def steps(x: jax.Array) -> jax.Array:  # [P, dag_period, ...] -> [T, ...]
            return x.reshape(-1, *x.shape[2:])

        transitions = jax.tree.map(steps, pieces.transitions)
        followed = Followed(jax.tree.map(steps, pieces.followed.records), derived_carry)
        trajectory = Trajectory(transitions, pieces.initial_carry[0], followed=followed)
        episodes = jax.tree.map(jnp.sum, episodes)
        return Collected(trajectory, loop, episodes, LearnedRollout(periods, upper_carry))

    def update(
        self, state: RunnerState, collected: Collected, key: jax.Array
    ) -> tuple[RunnerState, dict[str, jax.Array]]:
        """π by the engine on the DAGs' batches, then the generator by PPO on the periods,
        then π_ind on the same rollout with distillation from the updated π."""
        cfg = self.cfg
        update_key, upper_key, derived_key = jax.random.split(key, 3)
        trajectory, transitions = collected.trajectory, collected.trajectory.transitions
        learner, metrics = self.update_joint(state, collected, update_key)
        if cfg.time_updates:
            metrics["joint_update_end"] = host_clock(
                jax.tree.leaves(learner.params)[0], metrics["policy_loss"]
            )
        if cfg.dag_frozen:  # the ablation: the generator keeps its initial parameters
            upper_learner, upper_metrics = state.own.upper, {}
        else:
            upper_learner, upper_metrics = self.update_generator(state, collected, upper_key)
        # π_ind distils π: the logits the rollout's actions were drawn from, or those of the
        # updated π on the same steps.
        if cfg.distill_teacher == "behaviour":
            teacher_logits = transitions.logits
        else:
            teacher_logits = self.teacher_logits(learner.params["actor"], trajectory)
        distilling = (state.update % cfg.distill_every) == 0
        weight = jnp.where(distilling, cfg.distill_coef, 0.0)
        teacher = Distillation(teacher_logits, jnp.broadcast_to(weight, transitions.reward.shape))
        derived, derived_metrics = self.update_derived(state, collected, teacher, derived_key)
        metrics |= upper_metrics | derived_metrics
        metrics["dag_num_batches"] = collected.own.periods.num_batches.mean()
        own = LearnedState(upper_learner, collected.own.upper_carry, derived)
        return state._replace(learner=learner, loop=collected.loop, own=own), metrics

    def update_generator(
        self, state: RunnerState, collected: Collected, key: jax.Array
    ) -> tuple[UpperLearner, dict[str, jax.Array]]:
        """The DAG generator's PPO on the round's periods, bootstrapped from its value of
        the state the rollout ended in."""
        own, last = state.own, collected.loop.timestep
        upper_carry = collected.own.upper_carry
        last_value = self.upper.value(own.upper.params, upper_carry, last.obs, last.state)
        periods = collected.own.periods
        return self.upper.update(own.upper, periods, last_value, key)

    def update_derived(
        self, state: RunnerState, collected: Collected, teacher: Distillation, key: jax.Array
    ) -> tuple[DerivedState, dict[str, jax.Array]]:
        """π_ind's round on π's rollout, distilling ``teacher``."""
        last_obs = collected.loop.timestep.obs
        return self.derived.update(state.own.derived, collected.trajectory, last_obs, teacher, key)

    def teacher_logits(self, actor_params: Params, trajectory: Trajectory) -> jax.Array:
        """π's logits (``[T, E, n, A]``) with ``actor_params`` over the rollout, conditioned on
        the earlier batches' actions it took: π_ind's teacher after π's update."""
        t = trajectory.transitions
        preceding = self.networks.preceding(t.action, t.batch_index)
        return self.networks.unroll(
            actor_params, trajectory.initial_carry, t.obs, t.first, t.avail, preceding
        )

    def updated_params(self, state: RunnerState) -> list[Any]:
        return [state.learner.params, state.own.upper.params, state.own.derived.learner.params]

    def resume_own(self, restored: LearnedState, fresh: LearnedState) -> LearnedState:
        return restored._replace(
            upper_carry=fresh.upper_carry,
            derived=restored.derived._replace(carry=fresh.derived.carry),
        )

    def own_per_env(self, own: LearnedState, per_env: Any) -> LearnedState:
        return own._replace(
            upper_carry=jax.tree.map(lambda _: per_env, own.upper_carry),
            derived=own.derived._replace(carry=jax.tree.map(lambda _: per_env, own.derived.carry)),
        )

    def history(self, run_dir: Path) -> History:
        from b2mapo.upper.history import DagRecorder  # it plays π: kept off the round's import

        return DagRecorder(self, run_dir)

    def policies(self, state: RunnerState) -> Policies:
        own = state.own
        return Policies(state.learner.params, own.upper.params, own.derived.learner.params)

    def evaluation_players(self, keys: jax.Array, joint: bool) -> dict[str, tuple[Player, Any]]:
        """π_ind, which executes, and with ``joint`` π on the generator's DAGs (``joint_``)."""
        derived_keys, joint_keys = jnp.moveaxis(jax.vmap(jax.random.split)(keys), 1, 0)
        players = {"": (self.executing_player(), derived_keys)}
        if joint:
            players["joint_"] = (self.joint_player(), joint_keys)
        return players

    def executing_player(self, num_envs: int | None = None) -> Player:
        """π_ind acting on its own histories."""
        num_envs = num_envs or self.cfg.eval_episodes

        def start(policies: Policies, key: jax.Array) -> tuple[jax.Array, jax.Array]:
            return self.networks.initial_carry((num_envs,)), key

        def act(policies, carry, ts, first, step, key, greedy):
            return self.derived.act(policies.derived, carry, ts.obs, first, ts.avail, key, greedy)

        return Player(start, act)

    def joint_player(self, num_envs: int | None = None) -> Player:
        """π acting batch by batch on a DAG the generator samples every ``dag_period`` steps.
        Its carry is (actor carry, generator carry, batch index)."""
        episodes, n = num_envs or self.cfg.eval_episodes, self.env.spec.num_agents

        def start(policies: Policies, key: jax.Array) -> tuple[tuple, jax.Array]:
            partition_key, key = jax.random.split(key)
            fixed = self.partitioner.partition(partition_key, jnp.zeros((n,)))
            batch_index = jnp.broadcast_to(fixed, (episodes, n))
            upper_carry = self.upper.initial_carry(episodes)
            return (self.networks.initial_carry((episodes,)), upper_carry, batch_index), key

        def act(policies, carry, ts, first, step, key, greedy):
            actor_carry, upper_carry, batch_index = carry
            dag_key, action_key = jax.random.split(key)
            upper_carry = upper_carry._replace(reset=upper_carry.reset | first)

            def new_dag(upper_carry: UpperCarry, _: jax.Array) -> tuple:
                stepped, _, _, sampled = self.upper.act(
                    policies.upper, upper_carry, ts.obs, ts.state, dag_key, greedy
                )
                return stepped, sampled

            # The step index is the same for every seed (the evaluation loop runs outside the
            # seed vmap), so this stays a branch: the generator runs at period boundaries only.
            upper_carry, batch_index = jax.lax.cond(
                step % self.cfg.dag_period == 0,
                new_dag,
                lambda upper_carry, batch_index: (upper_carry, batch_index),
                upper_carry,
                batch_index,
            )
            actor_carry, action = self.act_joint(
                policies, actor_carry, ts, first, batch_index, action_key, greedy
            )
            return (actor_carry, upper_carry, batch_index), action

        return Player(start, act)

    def executing_params(self, policies: Policies) -> dict[str, Params]:
        return policies.derived

    def execute(self, params, carry, obs, first, avail, batch_index, key, greedy):
        return self.derived.act(params, carry, obs, first, avail, key, greedy)
