"""The compiled part of training: one chunk = N x (collect + update), mapped over seeds.

The ``Trainer`` keeps what is the same for every algorithm: the seeds, the devices' layout
and the compiled programs. What a round does is the round's (``b2mapo.rounds``), built with
the environments and networks by the parts factory (``b2mapo.parts``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import jax
import jax.numpy as jnp

from b2mapo.config import TrainConfig
from b2mapo.errors import HostEnvError
from b2mapo.evaluation import EvalResult, play
from b2mapo.parallel import make_layout
from b2mapo.parts import build_parts, init_state
from b2mapo.rollout import EpisodeMetrics
from b2mapo.state import Policies, RunnerState, host_clock

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


class Trainer:
    """Builds a config's parts and exposes compiled, seed-mapped steps.

    ``init``, ``chunk`` and ``evaluate`` all take and return states with a leading seed axis.
    A host environment (``b2mapo.envs.host``) is stepped in two pools of worker processes,
    one for training (``env``) and one for evaluation (``eval_env``): ``close`` stops them.
    """

    def __init__(self, cfg: TrainConfig) -> None:
        self.cfg = cfg
        self.parts = parts = build_parts(cfg)
        self.env, self.eval_env, self.pools = parts.env, parts.eval_env, parts.pools
        self.networks, self.round = parts.networks, parts.round
        devices = 1 if self.pools else cfg.devices
        self.layout = make_layout(devices, cfg.seeds, cfg.num_envs, self.round.own_per_env)
        options = compiler_options()
        self._init = jax.jit(self.over_seeds(self._init_one, (0,)), compiler_options=options)
        # The chunk unjitted too: ``exported`` traces it inside a jit of its own, and XLA
        # options can only be given to the outermost jit.
        self.unjitted_chunk = self._pinned(self.over_seeds(self._chunk_one, (0,)))
        self.chunk = jax.jit(self.unjitted_chunk, compiler_options=options)
        # ``greedy`` is traced: greedy and sampled evaluation share one compiled program.
        self.evaluate = jax.jit(self._evaluate, static_argnums=(3,), compiler_options=options)

    def over_seeds(self, fn: Callable[..., Any], in_axes: tuple[int | None, ...]) -> Callable:
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
        own = self.round.resume_own(restored.own, fresh.own)
        return restored._replace(loop=fresh.loop, own=own)

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

    def policies(self, state: RunnerState) -> Policies:
        """The parameters of ``state`` that act (evaluation input)."""
        return self.round.policies(state)

    def _init_one(self, key: jax.Array) -> RunnerState:
        return init_state(self.parts, self.cfg, key)

    def _start_clock(self, dependency: jax.Array, update_input: _T) -> tuple[jax.Array | None, _T]:
        """With ``time_updates``, the host clock once ``dependency`` exists, and ``update_input``
        behind a barrier so that the update cannot start before the clock is read."""
        if not self.cfg.time_updates:
            return None, update_input
        return jax.lax.optimization_barrier((host_clock(dependency), update_input))

    def _round(self, state: RunnerState, _: None) -> tuple[RunnerState, dict[str, jax.Array]]:
        """One training round: the round's ``collect``, then its ``update``. With
        ``time_updates`` the host clock brackets the update phase."""
        key, collect_key, update_key = jax.random.split(state.key, 3)
        collected = self.round.collect(state, collect_key)
        update_start, collected = self._start_clock(
            collected.trajectory.transitions.reward, collected
        )
        state, metrics = self.round.update(state, collected, update_key)
        if update_start is not None:
            updated = self.round.updated_params(state)
            update_end = host_clock(
                *(jax.tree.leaves(params)[0] for params in updated), metrics["policy_loss"]
            )
            for name in [k for k in metrics if k.endswith("_update_end")]:
                metrics[name.removesuffix("_end") + "_seconds"] = metrics.pop(name) - update_start
            metrics["update_seconds"] = update_end - update_start
        metrics |= episode_metrics(collected.episodes)
        return state._replace(key=key, update=state.update + 1), metrics

    def _chunk_one(self, state: RunnerState) -> tuple[RunnerState, dict[str, jax.Array]]:
        return jax.lax.scan(self._round, state, None, self.cfg.updates_per_chunk)

    def _evaluate(
        self, policies: Policies, keys: jax.Array, greedy: jax.Array, joint: bool
    ) -> dict[str, EvalResult]:
        """Play ``eval_episodes`` episodes per seed in parallel envs with each of the round's
        evaluation players and score the first episode of each env.

        Key ``""`` is the policy that executes: π, or π_ind for B2MAPO. For B2MAPO with
        ``joint``, key ``"joint_"`` also scores π acting batch by batch on sampled DAGs.
        """
        episodes = self.cfg.eval_episodes
        return {
            prefix: play(player, policies, seeds, greedy, self.eval_env, episodes, self.over_seeds)
            for prefix, (player, seeds) in self.round.evaluation_players(keys, joint).items()
        }


def episode_metrics(episodes: EpisodeMetrics) -> dict[str, jax.Array]:
    """Means over the episodes that ended in a round."""
    count = jnp.maximum(episodes.episodes, 1)
    return {
        "episodes": episodes.episodes,
        "episode_return": episodes.return_sum / count,
        "episode_length": episodes.length_sum / count,
        "win_rate": episodes.wins / count,
    }
