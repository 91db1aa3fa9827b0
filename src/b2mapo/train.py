"""The compiled part of training: one chunk = N x (rollout + update), mapped over seeds."""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple, TypeVar

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import io_callback

from b2mapo.config import ConfigError, TrainConfig
from b2mapo.dag import log_prob
from b2mapo.derived import DerivedState, make_derived
from b2mapo.engine import EngineSettings, LearnerState, batch_sequential_update, init_learner
from b2mapo.envs.core import TimeStep, reset_batch, step_batch
from b2mapo.envs.host.pool import HostPool
from b2mapo.envs.registry import is_host, make_env, make_host_env
from b2mapo.errors import HostEnvError
from b2mapo.networks import Networks, Params
from b2mapo.parallel import make_layout
from b2mapo.partition import Partitioner, make_partitioner, single
from b2mapo.rollout import (
    Distillation,
    EnvLoopState,
    EpisodeMetrics,
    Followed,
    Trajectory,
    reset_envs,
    rollout,
)
from b2mapo.upper import Period, UpperCarry, UpperLayer, UpperLearner


def _host_clock(*dependencies: jax.Array) -> jax.Array:
    """Seconds on the host clock, read once ``dependencies`` have been computed."""
    return io_callback(
        lambda *_: np.float32(time.perf_counter() - _CLOCK_ORIGIN),
        jax.ShapeDtypeStruct((), jnp.float32),
        *dependencies,
    )


_CLOCK_ORIGIN = time.perf_counter()
_T = TypeVar("_T")


def compiler_options() -> dict[str, Any]:
    """XLA options for the trainer's programs on CPU (other backends keep XLA's defaults).

    Users' programs take LLVM's optimisation level 1 instead of XLA's default 2: the chunk
    compiles 20-30% faster and runs as fast or up to 8% faster (``docs/algorithms.md``).
    Where compile speed is asked for over run speed (``jax_disable_most_optimizations``, as
    in the quick tests, which already compiles at level 0), XLA's loop emitters instead of
    its fusion emitters: they compile faster still but run a chunk about 10% slower.
    """
    if jax.default_backend() != "cpu":
        return {}
    if jax.config.read("jax_disable_most_optimizations"):
        return {"xla_cpu_use_fusion_emitters": False}
    return {"xla_backend_optimization_level": 1}


class RunnerState(NamedTuple):
    """Everything a seed's training carries between chunks; a checkpoint saves exactly this.

    ``upper``, ``upper_carry`` and ``derived`` are B2MAPO's DAG generator and derived policy
    π_ind (None for the other algorithms).
    """

    learner: LearnerState
    loop: EnvLoopState
    key: jax.Array
    update: jax.Array  # updates done so far
    upper: UpperLearner | None = None
    upper_carry: UpperCarry | None = None
    derived: DerivedState | None = None


class Collected(NamedTuple):
    """What a round's rollout hands to its update (every round is ``collect``, then
    ``update``). ``periods`` and ``upper_carry`` are B2MAPO's (None otherwise)."""

    trajectory: Trajectory  # leaves [T, E, ...], the batch index per step
    loop: EnvLoopState  # env loop state after the rollout
    episodes: EpisodeMetrics
    periods: Period | None = None  # leaves [T / dag_period, E, ...], the generator's experience
    upper_carry: UpperCarry | None = None  # generator state after the rollout


class Policies(NamedTuple):
    """The parameters evaluation needs: π, and for B2MAPO the generator and π_ind."""

    joint: dict[str, Params]
    upper: Params | None = None
    derived: dict[str, Params] | None = None


class EvalResult(NamedTuple):
    """Outcome of the first episode in each of ``eval_episodes`` evaluation envs, ``[episodes]``
    per seed: the caller averages (and pools several calls for a longer evaluation)."""

    won: jax.Array
    episode_return: jax.Array
    episode_length: jax.Array


class Trainer:
    """Builds the environment and networks of a config and exposes compiled, seed-mapped steps.

    ``init``, ``chunk`` and ``evaluate`` all take and return states with a leading seed axis.
    A host environment (``b2mapo.envs.host``) is stepped in two pools of worker processes,
    one for training (``env``) and one for evaluation (``eval_env``): ``close`` stops them.
    """

    def __init__(self, cfg: TrainConfig) -> None:
        self.cfg = cfg
        self.pools: tuple[HostPool, ...] = ()
        if is_host(cfg.env):
            if jax.process_count() > 1:
                raise ConfigError(f"env {cfg.env}: host environments train in one process")
            host = make_host_env(
                cfg.env, cfg.episode_limit or None, cfg.env_kwargs_dict(), cfg.worker_timeout
            )
            self.pools = (
                host.pool(cfg.num_envs, cfg.env_workers),
                host.pool(cfg.eval_episodes, cfg.env_workers),
            )
            self.env, self.eval_env = self.pools
        else:
            self.env = self.eval_env = make_env(cfg.env, cfg.episode_limit or None)
        self.networks = Networks(
            self.env.spec, cfg.hidden_size, cfg.share_params, cfg.condition_on_actions
        )
        self.learned = cfg.partition == "learned"
        n = self.env.spec.num_agents
        if self.learned:
            # The batches come from the DAG generator and are stored per step; the engine
            # only reads them from the rollout.
            self.partitioner = Partitioner(single(n))
            self.upper = UpperLayer(self.env.spec, cfg)
            self.derived = make_derived(self.env.spec, cfg)
        else:
            try:
                self.partitioner = make_partitioner(
                    cfg.partition, n, cfg.num_batches, cfg.dependency_graph
                )
            except ValueError as error:
                raise ConfigError(f"{error} (env {cfg.env})") from None
        self.layout = make_layout(1 if self.pools else cfg.devices, cfg.seeds, cfg.num_envs)
        options = compiler_options()
        self._init = jax.jit(self._over_seeds(self._init_one, (0,)), compiler_options=options)
        # The chunk unjitted too: ``exported`` traces it inside a jit of its own, and XLA
        # options can only be given to the outermost jit.
        self.unjitted_chunk = self._pinned(self._over_seeds(self._chunk_one, (0,)))
        self.chunk = jax.jit(self.unjitted_chunk, compiler_options=options)
        # ``greedy`` is traced: greedy and sampled evaluation share one compiled program.
        self.evaluate = jax.jit(self._evaluate, static_argnums=(3,), compiler_options=options)

    def _over_seeds(self, fn: Callable[..., Any], in_axes: tuple[int | None, ...]) -> Callable:
        """``fn`` mapped over the leading seed axis of the arguments marked 0 in ``in_axes``.

        With one seed the axis is dropped and restored around a plain call instead: the same
        program, but without ``vmap``, whose batching of nested loops makes tracing a
        B2MAPO chunk three times slower.
        """
        if self.cfg.seeds > 1:
            return jax.vmap(fn, in_axes=in_axes)

        def one_seed(*args: Any) -> Any:
            args = tuple(
                arg if axis is None else jax.tree.map(lambda x: x[0], arg)
                for arg, axis in zip(args, in_axes, strict=True)
            )
            return jax.tree.map(lambda x: x[None], fn(*args))

        return one_seed

    def _pinned(self, chunk: Callable[[RunnerState], Any]) -> Callable[[RunnerState], Any]:
        """``chunk`` with its input and output states kept on the layout's shardings (and
        its metrics replicated), so that one compiled program serves every call."""

        def pinned(state: RunnerState) -> Any:
            state, _ = self.layout.pin(state)
            new_state, metrics = chunk(state)
            return self.layout.pin(new_state, metrics)

        return pinned

    def seed_keys(self, offset: int = 0) -> jax.Array:
        """One PRNG key per seed: seed i of the run uses ``cfg.seed + i``."""
        seeds = jnp.arange(self.cfg.seeds) + self.cfg.seed + offset
        return jax.vmap(jax.random.PRNGKey)(seeds)

    def init(self) -> RunnerState:
        """Fresh runner states for every seed (leading seed axis), laid out on the devices."""
        return self.layout.place(self._init(self.seed_keys()))

    def resume(self, restored: RunnerState, fresh: RunnerState) -> RunnerState:
        """The state a run continues from: ``restored`` from its checkpoint. A host
        environment's episodes were lost with its workers, so there the learners continue
        on ``fresh`` episodes (the env loop and the recurrent states that follow them)."""
        if not self.pools:
            return restored
        state = restored._replace(loop=fresh.loop)
        if self.learned:
            state = state._replace(
                upper_carry=fresh.upper_carry,
                derived=restored.derived._replace(carry=fresh.derived.carry),
            )
        return state

    def failure(self) -> HostEnvError | None:
        """What stopped a host environment's worker pool, if anything did."""
        return next((pool.failure for pool in self.pools if pool.failure is not None), None)

    def close(self) -> None:
        """Stop a host environment's worker processes (nothing for JAX environments)."""
        for pool in self.pools:
            pool.close()

    def state_shapes(self) -> RunnerState:
        """The shapes and dtypes of ``init()``'s state, without computing it."""
        return jax.eval_shape(self._init, self.seed_keys())

    def _init_one(self, key: jax.Array) -> RunnerState:
        param_key, env_key, upper_key, derived_key, key = jax.random.split(key, 5)
        learner = init_learner(self.networks, EngineSettings.of(self.cfg), param_key)
        loop = reset_envs(self.env, self.networks, env_key, self.cfg.num_envs)
        state = RunnerState(learner, loop, key, jnp.int32(0))
        if self.learned:
            state = state._replace(
                upper=self.upper.init(upper_key),
                upper_carry=self.upper.initial_carry(self.cfg.num_envs),
                derived=self.derived.init(derived_key, self.cfg.num_envs),
            )
        return state

    @staticmethod
    def policies(state: RunnerState) -> Policies:
        """The parameters of ``state`` that act (evaluation input)."""
        return Policies(
            state.learner.params,
            None if state.upper is None else state.upper.params,
            None if state.derived is None else state.derived.learner.params,
        )

    def _start_clock(self, dependency: jax.Array, update_input: _T) -> tuple[jax.Array | None, _T]:
        """With ``time_updates``, the host clock once ``dependency`` exists, and ``update_input``
        behind a barrier so that the update cannot start before the clock is read."""
        if not self.cfg.time_updates:
            return None, update_input
        return jax.lax.optimization_barrier((_host_clock(dependency), update_input))

    def _round(self, state: RunnerState, _: None) -> tuple[RunnerState, dict[str, jax.Array]]:
        """One training round: ``collect`` a rollout, then ``update`` on it. With
        ``time_updates`` the host clock brackets the update phase."""
        key, collect_key, update_key = jax.random.split(state.key, 3)
        collected = self.collect(state, collect_key)
        update_start, collected = self._start_clock(
            collected.trajectory.transitions.reward, collected
        )
        state, metrics = self.update(state, collected, update_key)
        if update_start is not None:
            updated = [state.learner.params]
            if self.learned:
                updated += [state.upper.params, state.derived.learner.params]
            update_end = _host_clock(
                *(jax.tree.leaves(params)[0] for params in updated), metrics["policy_loss"]
            )
            if self.learned:
                joint_end = metrics.pop("joint_update_end")
                metrics["joint_update_seconds"] = joint_end - update_start
            metrics["update_seconds"] = update_end - update_start
        metrics |= _episode_metrics(collected.episodes)
        return state._replace(key=key, update=state.update + 1), metrics

    def collect(self, state: RunnerState, key: jax.Array) -> Collected:
        """A round's rollout of π: on a partition drawn from the partitioner, or for B2MAPO
        on the generator's DAGs (``collect_learned``)."""
        if self.learned:
            return self.collect_learned(state, key)
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
        """A round's update phase on ``collected``: π by the engine, and for B2MAPO the rest
        of ``update_learned``. Returns the state with the rollout's loop state taken over."""
        if self.learned:
            return self.update_learned(state, collected, key)
        learner, metrics = self.update_joint(state, collected, key)
        return state._replace(learner=learner, loop=collected.loop), metrics

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
            EngineSettings.of(self.cfg),
        )

    def collect_learned(self, state: RunnerState, key: jax.Array) -> Collected:
        """B2MAPO's rollout: a scan over periods; at each period's first step the generator
        samples a DAG per env, whose layering drives π's acting for the period's steps."""
        cfg, upper = self.cfg, self.upper
        params = state.learner.params
        derived_params = state.derived.learner.params

        def period(carry: tuple, key: jax.Array) -> tuple[tuple, tuple]:
            loop, upper_carry, derived_carry = carry
            act_key, step_key = jax.random.split(key)
            ts = loop.timestep
            next_carry, action, dist, batch_index = upper.act(
                state.upper.params, upper_carry, ts.obs, ts.state, act_key
            )
            # π_ind watches π's acting, step by step (its GRU over the rollout).
            follower = self.derived.follower(derived_params, derived_carry)
            loop, trajectory, episodes = rollout(
                self.env,
                self.networks,
                params,
                loop,
                step_key,
                cfg.dag_period,
                batch_index,
                follower,
            )
            k = jnp.max(batch_index, axis=-1) + 1
            tr = trajectory.transitions
            end_value = upper.end_value(
                state.upper.params, next_carry, tr.obs, tr.next_state, tr.done
            )
            reward, ended = upper.period_reward(tr.reward, tr.done, tr.terminated, end_value, k)
            all_log_prob = jax.vmap(log_prob, in_axes=(0, 0, 0, 0, None, None, 0))
            record = Period(
                obs=ts.obs,
                state=ts.state,
                reset=upper_carry.reset,
                action=action,
                g=dist.g,
                log_prob=all_log_prob(
                    action,
                    dist.order_scores,
                    dist.edge_logits,
                    dist.g,
                    upper.delta,
                    cfg.dag_max_batches,
                    batch_index,
                ),
                value=dist.value,
                reward=reward,
                done=ended,
                batch_index=batch_index,
            )
            next_carry = next_carry._replace(reset=ended)
            derived_carry = trajectory.followed.carry
            return (loop, next_carry, derived_carry), (trajectory, record, episodes)

        periods_per_round = cfg.rollout_len // cfg.dag_period
        (loop, upper_carry, derived_carry), (pieces, periods, episodes) = jax.lax.scan(
            period,
            (state.loop, state.upper_carry, state.derived.carry),
            jax.random.split(key, periods_per_round),
        )

        def steps(x: jax.Array) -> jax.Array:  # [P, dag_period, ...] -> [T, ...]
            return x.reshape(-1, *x.shape[2:])

        transitions = jax.tree.map(steps, pieces.transitions)
        followed = Followed(jax.tree.map(steps, pieces.followed.records), derived_carry)
        trajectory = Trajectory(transitions, pieces.initial_carry[0], followed=followed)
        episodes = jax.tree.map(jnp.sum, episodes)
        return Collected(trajectory, loop, episodes, periods, upper_carry)

    def update_learned(
        self, state: RunnerState, collected: Collected, key: jax.Array
    ) -> tuple[RunnerState, dict[str, jax.Array]]:
        """B2MAPO's update phase: π by the engine on the DAGs' batches, then the generator
        by PPO on the periods, then π_ind on the same rollout with distillation from the
        updated π. Returns the state with the rollout's loop states taken over."""
        cfg = self.cfg
        update_key, upper_key, derived_key = jax.random.split(key, 3)
        trajectory, transitions = collected.trajectory, collected.trajectory.transitions
        learner, metrics = self.update_joint(state, collected, update_key)
        if cfg.time_updates:
            metrics["joint_update_end"] = _host_clock(
                jax.tree.leaves(learner.params)[0], metrics["policy_loss"]
            )
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
        metrics["dag_num_batches"] = collected.periods.num_batches.mean()
        new_state = state._replace(
            learner=learner,
            loop=collected.loop,
            upper=upper_learner,
            upper_carry=collected.upper_carry,
            derived=derived,
        )
        return new_state, metrics

    def update_generator(
        self, state: RunnerState, collected: Collected, key: jax.Array
    ) -> tuple[UpperLearner, dict[str, jax.Array]]:
        """The DAG generator's PPO on the round's periods, bootstrapped from its value of
        the state the rollout ended in."""
        last = collected.loop.timestep
        last_value = self.upper.value(
            state.upper.params, collected.upper_carry, last.obs, last.state
        )
        return self.upper.update(state.upper, collected.periods, state.upper_carry, last_value, key)

    def update_derived(
        self, state: RunnerState, collected: Collected, teacher: Distillation, key: jax.Array
    ) -> tuple[DerivedState, dict[str, jax.Array]]:
        """π_ind's round on π's rollout, distilling ``teacher``."""
        last_obs = collected.loop.timestep.obs
        return self.derived.update(state.derived, collected.trajectory, last_obs, teacher, key)

    def teacher_logits(self, actor_params: Params, trajectory: Trajectory) -> jax.Array:
        """π's logits (``[T, E, n, A]``) with ``actor_params`` over the rollout, conditioned on
        the earlier batches' actions it took: π_ind's teacher after π's update."""
        t = trajectory.transitions
        preceding = self.networks.preceding(t.action, t.batch_index)
        return self.networks.unroll(
            actor_params, trajectory.initial_carry, t.obs, t.first, t.avail, preceding
        )

    def _chunk_one(self, state: RunnerState) -> tuple[RunnerState, dict[str, jax.Array]]:
        return jax.lax.scan(self._round, state, None, self.cfg.updates_per_chunk)

    def _evaluate(
        self, policies: Policies, keys: jax.Array, greedy: jax.Array, joint: bool
    ) -> dict[str, EvalResult]:
        """Play ``eval_episodes`` episodes per seed in parallel envs and score the first one
        of each.

        Key ``""`` is the policy that executes: π, or π_ind for B2MAPO. For B2MAPO with
        ``joint``, key ``"joint_"`` also scores π acting batch by batch on sampled DAGs.
        """
        if not self.learned:
            return {"": self._play(self.joint_player(), policies, keys, greedy)}
        derived_keys, joint_keys = jnp.moveaxis(jax.vmap(jax.random.split)(keys), 1, 0)
        results = {"": self._play(self.derived_player(), policies, derived_keys, greedy)}
        if joint:
            results["joint_"] = self._play(self.joint_player(), policies, joint_keys, greedy)
        return results

    def derived_player(self, num_envs: int | None = None) -> Player:
        """π_ind acting on its own histories, in ``num_envs`` envs (default: evaluation's)."""
        num_envs = num_envs or self.cfg.eval_episodes

        def start(policies: Policies, key: jax.Array) -> tuple[jax.Array, jax.Array]:
            return self.networks.initial_carry((num_envs,)), key

        def act(policies, carry, ts, first, step, key, greedy):
            return self.derived.act(policies.derived, carry, ts.obs, first, ts.avail, key, greedy)

        return Player(start, act)

    def joint_player(self, num_envs: int | None = None) -> Player:
        """π acting batch by batch: on a fixed partition, or on a DAG every ``dag_period``, in
        ``num_envs`` envs (default: evaluation's). Its carry ends with the batch index."""
        episodes, n = num_envs or self.cfg.eval_episodes, self.env.spec.num_agents

        def start(policies: Policies, key: jax.Array) -> tuple[tuple, jax.Array]:
            partition_key, key = jax.random.split(key)
            fixed = self.partitioner.partition(partition_key, jnp.zeros((n,)))
            batch_index = jnp.broadcast_to(fixed, (episodes, n))
            upper_carry = self.upper.initial_carry(episodes) if self.learned else None
            return (self.networks.initial_carry((episodes,)), upper_carry, batch_index), key

        def act(policies, carry, ts, first, step, key, greedy):
            actor_carry, upper_carry, batch_index = carry
            dag_key, action_key = jax.random.split(key)
            if self.learned:
                upper_carry = upper_carry._replace(reset=upper_carry.reset | first)

                def new_dag(upper_carry: UpperCarry, _: jax.Array) -> tuple:
                    stepped, _, _, sampled = self.upper.act(
                        policies.upper, upper_carry, ts.obs, ts.state, dag_key, greedy
                    )
                    return stepped, sampled

                # The step index is the same for every seed (the evaluation loop runs outside
                # the seed vmap), so this stays a branch: the generator runs at period
                # boundaries only.
                upper_carry, batch_index = jax.lax.cond(
                    step % self.cfg.dag_period == 0,
                    new_dag,
                    lambda upper_carry, batch_index: (upper_carry, batch_index),
                    upper_carry,
                    batch_index,
                )
            actor_carry, action, _ = self.networks.policy_step(
                policies.joint["actor"],
                actor_carry,
                ts.obs,
                first,
                ts.avail,
                batch_index,
                action_key,
                greedy,
            )
            return (actor_carry, upper_carry, batch_index), action

        return Player(start, act)

    def _play(
        self, player: Player, policies: Policies, keys: jax.Array, greedy: jax.Array
    ) -> EvalResult:
        """Run ``player`` in ``eval_episodes`` envs per seed until every env's first episode
        has ended (at most one episode length) and score those episodes.

        The loop over steps runs outside the seed vmap and stops as soon as all seeds'
        episodes are over: evaluation episodes are usually much shorter than the time limit.
        """
        episodes, limit = self.cfg.eval_episodes, self.env.spec.episode_limit

        def begin(policies: Policies, key: jax.Array) -> Playing:
            carry, key = player.start(policies, key)
            reset_key, key = jax.random.split(key)
            env_state, ts = reset_batch(self.eval_env, jax.random.split(reset_key, episodes))
            no = jnp.zeros((episodes,), bool)
            zeros = jnp.zeros((episodes,))
            first = jnp.ones((episodes,), bool)
            scored = EvalResult(no, zeros, zeros)
            return Playing(carry, env_state, ts, first, no, scored, jax.random.split(key, limit))

        def advance(policies: Policies, playing: Playing, index: jax.Array, greedy) -> Playing:
            action_key, env_key = jax.random.split(playing.step_keys[index])
            carry, action = player.act(
                policies, playing.carry, playing.timestep, playing.first, index, action_key, greedy
            )
            env_state, ts = step_batch(
                self.eval_env, jax.random.split(env_key, episodes), playing.env_state, action
            )
            ends_now = ts.done & ~playing.finished
            ended = EvalResult(ts.won, ts.episode_return, ts.episode_length)
            return playing._replace(
                carry=carry,
                env_state=env_state,
                timestep=ts,
                first=ts.done,
                finished=playing.finished | ts.done,
                scored=jax.tree.map(partial(jnp.where, ends_now), ended, playing.scored),
            )

        step_all = self._over_seeds(advance, (0, 0, None, None))

        def running(loop: tuple[jax.Array, Playing]) -> jax.Array:
            index, playing = loop
            return (index < limit) & ~jnp.all(playing.finished)

        def step(loop: tuple[jax.Array, Playing]) -> tuple[jax.Array, Playing]:
            index, playing = loop
            return index + 1, step_all(policies, playing, index, greedy)

        playing = self._over_seeds(begin, (0, 0))(policies, keys)
        _, playing = jax.lax.while_loop(running, step, (jnp.int32(0), playing))
        return playing.scored


class Player(NamedTuple):
    """A policy as evaluation plays it, per seed: ``start(policies, key) -> (carry, key)``
    and ``act(policies, carry, timestep, first, step, key, greedy) -> (carry, actions)``."""

    start: Callable[[Policies, jax.Array], tuple[Any, jax.Array]]
    act: Callable[..., tuple[Any, jax.Array]]


class Playing(NamedTuple):
    """One seed's evaluation in progress (leaves ``[episodes, ...]``): the first episode of
    each env is scored, later ones only keep the envs stepping."""

    carry: Any
    env_state: Any
    timestep: TimeStep
    first: jax.Array
    finished: jax.Array
    scored: EvalResult  # the first episode of each env, once it has ended
    step_keys: jax.Array  # [episode_limit, key], one per step


def _episode_metrics(episodes: EpisodeMetrics) -> dict[str, jax.Array]:
    """Means over the episodes that ended in a round."""
    count = jnp.maximum(episodes.episodes, 1)
    return {
        "episodes": episodes.episodes,
        "episode_return": episodes.return_sum / count,
        "episode_length": episodes.length_sum / count,
        "win_rate": episodes.wins / count,
    }
