"""The learned DAG over training, without keeping checkpoints: at every evaluation of a B2MAPO
run, the generator's most likely DAG at a fixed start state (the run's first seed) is
appended to ``dag_history.jsonl``; ``b2mapo plot --history`` draws it as a strip and a GIF."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import numpy as np

from b2mapo import rundir
from b2mapo.state import Policies
from b2mapo.upper.dag import DagAction, edges, layering

if TYPE_CHECKING:
    from b2mapo.upper.round import LearnedRound

# Key of the environment resets the DAG figures and the history are drawn at: figures of
# different checkpoints and seeds of a run show the generator at the same states.
PLOT_RESET_KEY = 7


def generator_at(
    learned: LearnedRound, policies: Policies, key: jax.Array, periods: int, greedy: bool
) -> tuple[jax.Array, DagAction, jax.Array]:
    """Reset one environment with ``key``, let π play ``periods`` periods batch by batch on
    the generator's DAGs (one per period, carries and restarts as in training), then run the
    generator once more. ``policies`` are one seed's. Returns that last call's G ``[n, n]``,
    its DAG action and the episode step it saw; ``greedy`` picks the most likely DAGs and
    actions instead of samples."""
    env, upper, networks = learned.env, learned.upper, learned.networks
    reset_key, dag_key, key = jax.random.split(key, 3)
    env_state, ts = jax.vmap(env.reset)(reset_key[None])
    first = jnp.ones((1,), bool)

    def play_period(loop: tuple, key: jax.Array) -> tuple[tuple, None]:
        actor_carry, upper_carry, env_state, ts, first = loop
        dag_key, key = jax.random.split(key)
        upper_carry, _, _, batch_index = upper.act(
            policies.upper, upper_carry, ts.obs, ts.state, dag_key, greedy
        )

        def play_step(inner: tuple, key: jax.Array) -> tuple[tuple, None]:
            actor_carry, env_state, ts, first, ended = inner
            action_key, env_key = jax.random.split(key)
            actor_carry, action = learned.act_joint(
                policies, actor_carry, ts, first, batch_index, action_key, greedy
            )
            env_state, ts = jax.vmap(env.step)(env_key[None], env_state, action)
            return (actor_carry, env_state, ts, ts.done, ended | ts.done), None

        inner = (actor_carry, env_state, ts, first, jnp.zeros_like(first))
        steps = jax.random.split(key, learned.cfg.dag_period)
        (actor_carry, env_state, ts, first, ended), _ = jax.lax.scan(play_step, inner, steps)
        return (actor_carry, upper_carry._replace(reset=ended), env_state, ts, first), None

    loop = (networks.initial_carry((1,)), upper.initial_carry(1), env_state, ts, first)
    (_, upper_carry, _, ts, first), _ = jax.lax.scan(
        play_period, loop, jax.random.split(key, periods)
    )
    _, action, out, _ = upper.act(policies.upper, upper_carry, ts.obs, ts.state, dag_key, greedy)
    episode_step = jnp.where(first[0], 0, ts.episode_length[0])
    return out.g[0], jax.tree.map(lambda x: x[0], action), episode_step


class DagRecorder:
    """Appends the generator's greedy DAG at the fixed start state (seed index 0, env 0) to a
    run's ``dag_history.jsonl``: one record per evaluation."""

    def __init__(self, learned: LearnedRound, run_dir: Path) -> None:
        self.path = Path(run_dir) / rundir.HISTORY_FILE
        self._steps_per_update = learned.cfg.steps_per_update
        key = jax.random.PRNGKey(PLOT_RESET_KEY)
        self._probe = jax.jit(lambda policies: generator_at(learned, policies, key, 0, True))

    def record(self, policies: Policies, update: int) -> None:
        """Append the DAG of ``policies`` (one seed's) after ``update`` updates."""
        g, action, _ = self._probe(policies)
        adjacency = edges(action)
        record = {
            "update": update,
            "env_steps": update * self._steps_per_update,
            "g": np.asarray(g).round(4).tolist(),
            "order": np.asarray(action.order).tolist(),
            "adjacency": np.asarray(adjacency).astype(int).tolist(),
            "batch_index": np.asarray(layering(adjacency)).tolist(),
        }
        rundir.append_records(self.path, [record])
