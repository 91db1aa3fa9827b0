"""Throughput benchmark: raw environment speed vs MAPPO training speed, and where the time goes.

For every map, at the same number of parallel envs and all in one process (so that the ratios
are comparable even on a noisy shared machine), it measures

1. **raw env steps/s**: ``jit(scan(vmap(env.step)))`` with uniformly random *valid* actions
   (sampled from the availability mask), ``num_envs`` envs x ``--raw-steps`` steps;
2. **training env steps/s**: the compiled training chunk of the default MAPPO config
   (``resolve({"env": map, "num_envs": N})``) in steady state, plus the chunk's compile time
   (``trainer.chunk.lower(state).compile()``), reported separately;
3. **rollout/update split** of one round: ``rollout(...)`` and ``batch_sequential_update(...)``
   each jitted and compiled on their own (the calls of ``FixedRound.collect`` and
   ``update_joint``, one seed), their shares of the sum, and training-steps/s divided by
   raw-env-steps/s;
4. **achieved FLOP/s of the update**: analytic FLOPs of one MAPPO update round (see
   :func:`update_flops`) divided by its time, against a large dense float32 matmul timed in
   the same run (the machine's practical ceiling). XLA's ``cost_analysis()`` cross-checks the
   per-sample count on a loop-free forward (and forward + backward) of actor and critic; its
   count for the whole update is recorded too, but it counts each ``while`` (scan) body once,
   so it is far below the real figure.

Every measurement is compiled first (compile time excluded) and warmed up once; then the
measurements of a map are taken in interleaved rounds (raw, rollout, update, chunk, matmul,
raw, ...) and the best time of each is kept, so that a burst of load from other processes
hits all of them alike rather than one of them.

Run it from the repository root::

    .venv/bin/python benchmarks/throughput.py                   # 4 maps, ~5 min on 2 cores
    .venv/bin/python benchmarks/throughput.py --quick           # smax:3m only, ~1 min
    .venv/bin/python benchmarks/throughput.py --maps smax:3m mpe:simple_spread --num-envs 128

It prints two tables and writes every figure, plus machine information, to ``--out``
(default ``benchmarks/results/throughput.json``; the directory is git-ignored).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from rich.console import Console
from rich.table import Table

from b2mapo.config import TrainConfig, resolve
from b2mapo.engine import batch_sequential_update
from b2mapo.envs import Env, EnvSpec, TimeStep
from b2mapo.learner import EngineSettings, LearnerState
from b2mapo.networks import Networks
from b2mapo.reproduce.timing import Timed, compile_timed, interleaved, machine_info
from b2mapo.rollout import Trajectory, rollout
from b2mapo.state import RunnerState
from b2mapo.train import Trainer

DEFAULT_MAPS = ("smax:3m", "smax:2s3z", "smax:5m_vs_6m", "mpe:simple_spread")
DEFAULT_OUT = Path(__file__).parent / "results" / "throughput.json"


# ---------------------------------------------------------------------------------------------
# Timing helpers
# ---------------------------------------------------------------------------------------------


def interleaved_best(timers: dict[str, Timed], rounds: int) -> dict[str, list[float]]:
    """Warm every timer up once, then time them round-robin ``rounds`` times."""
    for fn in timers.values():
        jax.block_until_ready(fn())
    return interleaved(timers, rounds)


def xla_flops(compiled: Any) -> float | None:
    """XLA's own FLOP count of a compiled program, if the backend reports one."""
    try:
        analysis = compiled.cost_analysis()
    except Exception:  # not every backend/version implements it
        return None
    if isinstance(analysis, list | tuple):
        analysis = analysis[0] if analysis else None
    if not analysis or "flops" not in analysis:
        return None
    return float(analysis["flops"])


# ---------------------------------------------------------------------------------------------
# The measured programs
# ---------------------------------------------------------------------------------------------


def raw_env_program(env: Env, num_envs: int, steps: int) -> Callable[..., Any]:
    """``jit(scan(vmap(env.step)))`` with uniformly random valid actions.

    The whole timestep is carried and returned, so XLA cannot drop the observation and state
    computations that training needs.
    """

    def run(env_state: Any, timestep: TimeStep, key: jax.Array) -> tuple[Any, TimeStep]:
        def step(carry: tuple[Any, TimeStep], key: jax.Array) -> tuple[tuple[Any, TimeStep], None]:
            env_state, ts = carry
            action_key, step_key = jax.random.split(key)
            logits = jnp.where(ts.avail, 0.0, -jnp.inf)
            actions = jax.random.categorical(action_key, logits)  # [E, n], uniform over avail
            env_state, ts = jax.vmap(env.step)(
                jax.random.split(step_key, num_envs), env_state, actions
            )
            return (env_state, ts), None

        carry, _ = jax.lax.scan(step, (env_state, timestep), jax.random.split(key, steps))
        return carry

    return jax.jit(run)


def per_sample_xla_flops(networks: Networks, spec: EnvSpec, batch: int = 256) -> dict[str, Any]:
    """XLA's FLOP count per sample (agent-step) of one actor step plus the critic, loop-free.

    ``forward`` should match the analytic ``f_a + f_c`` (plus a few elementwise FLOPs).
    ``grad`` takes gradients w.r.t. the parameters only, so unlike the update it needs no
    input gradients of the first layers nor of the GRU's incoming hidden state: it should
    come out near ``3 (f_a + f_c) - 2 (d_o + d_s) h - 6 h^2``.
    """
    n, h = spec.num_agents, networks.hidden_size
    params = networks.init(jax.random.PRNGKey(0))
    inputs = (
        jnp.zeros((batch, n, h)),
        jnp.ones((batch, n, spec.obs_dim)),
        jnp.zeros((batch,), bool),
        jnp.ones((batch, n, spec.num_actions), bool),
        jnp.ones((batch, spec.state_dim)),
    )

    def forward(params: Any, carry: Any, obs: Any, first: Any, avail: Any, state: Any) -> Any:
        _, logits = networks.act(params["actor"], carry, obs, first, avail)
        return logits.sum() + networks.value(params["critic"], state).sum()

    fwd = xla_flops(jax.jit(forward).lower(params, *inputs).compile())
    grad = xla_flops(jax.jit(jax.grad(forward)).lower(params, *inputs).compile())
    return {
        "forward": None if fwd is None else fwd / (batch * n),
        "grad": None if grad is None else grad / (batch * n),
    }


def matmul_program() -> Callable[[jax.Array, jax.Array], jax.Array]:
    """A plain dense float32 matmul; its operands are arguments, so nothing is constant-folded."""
    return jax.jit(lambda a, b: a @ b)


# ---------------------------------------------------------------------------------------------
# FLOP model
# ---------------------------------------------------------------------------------------------


def update_flops(spec: EnvSpec, cfg: TrainConfig) -> dict[str, float]:
    """Analytic FLOPs of one MAPPO update round (K = 1 stage; dense matmuls only).

    Notation: ``h`` hidden size, ``n`` agents, ``A`` actions, ``d_o = obs_dim + n`` (actor
    input: obs + one-hot agent id), ``d_s = state_dim + n`` (critic input: global state +
    agent id), ``S = rollout_len * num_envs * n`` samples (agent-steps) per rollout.

    A matmul ``[m, k] @ [k, p]`` costs ``2 m k p`` FLOPs forward; per sample (m = 1):

    * actor forward  ``f_a = 2 (d_o h + 6 h^2 + h A)``: obs->h dense, GRU cell (3 gates, each
      an input h->h and a hidden h->h matmul, i.e. 6 h^2), h->A logits dense;
    * critic forward ``f_c = 2 (d_s h + h^2 + h)``: two hidden dense layers and the output.

    Backward ≈ 2 x forward (gradient w.r.t. weights and w.r.t. inputs), so a training pass
    costs ``3 (f_a + f_c)`` per sample. Every epoch passes over all ``S`` samples once
    (minibatches only split them), and after the stage the engine recomputes the actor's
    log-probabilities once (a forward pass, ``S f_a``), hence

        ``F_update = epochs * S * 3 * (f_a + f_c) + S * f_a``

    Values are not recomputed: the rollout stored them (``Transition.value``/``next_value``).
    A round of K stages costs K times this. GAE, normalisation, the
    losses and Adam are elementwise (O(S) and O(#params)) and left out. The count is a slight
    over-estimate, since the first layers need no gradient w.r.t. their inputs
    (``epochs * S * 2 * (d_o + d_s) h`` fewer FLOPs, also reported).
    """
    n, h, a = spec.num_agents, cfg.hidden_size, spec.num_actions
    d_o, d_s = spec.obs_dim + n, spec.state_dim + n
    samples = cfg.rollout_len * cfg.num_envs * n
    actor_forward = 2 * (d_o * h + 6 * h * h + h * a)
    critic_forward = 2 * (d_s * h + h * h + h)
    recompute = samples * actor_forward
    total = cfg.epochs * samples * 3 * (actor_forward + critic_forward) + recompute
    first_layer_input_grads = cfg.epochs * samples * 2 * (d_o + d_s) * h
    return {
        "samples": float(samples),
        "actor_forward_per_sample": float(actor_forward),
        "critic_forward_per_sample": float(critic_forward),
        "log_prob_recompute": float(recompute),
        "total": float(total),
        "total_without_first_layer_input_grads": float(total - first_layer_input_grads),
    }


# ---------------------------------------------------------------------------------------------
# One map
# ---------------------------------------------------------------------------------------------


def bench_map(
    name: str,
    num_envs: int,
    rollout_len: int,
    raw_steps: int,
    rounds: int,
    matmul_args: tuple[jax.Array, jax.Array],
    console: Console,
) -> dict[str, Any]:
    """All measurements of one map; returns a JSON-able record."""
    cfg = resolve({"env": name, "num_envs": num_envs, "rollout_len": rollout_len})
    trainer = Trainer(cfg)
    env, networks, spec = trainer.env, trainer.networks, trainer.env.spec
    key = jax.random.PRNGKey(0)

    # 1. Raw environment.
    env_state, timestep = jax.jit(jax.vmap(env.reset))(jax.random.split(key, num_envs))
    raw, raw_compile = compile_timed(
        raw_env_program(env, num_envs, raw_steps), env_state, timestep, key
    )

    # 2. The training chunk (leading seed axis, as the runner uses it).
    state: RunnerState = trainer.init()
    chunk, chunk_compile = compile_timed(trainer.chunk, state)

    # 3. Rollout and update of one round, one seed, as the round's collect and update make them.
    one: RunnerState = jax.tree.map(lambda x: x[0], state)

    partition = trainer.round.partitioner.partition(key, jnp.zeros((spec.num_agents,)))

    def rollout_one(params: Any, loop: Any, key: jax.Array) -> Any:
        return rollout(env, networks, params, loop, key, cfg.rollout_len, partition)

    def update_one(
        learner: LearnerState, trajectory: Trajectory, key: jax.Array
    ) -> tuple[LearnerState, dict[str, jax.Array]]:
        return batch_sequential_update(
            learner, trajectory, key, networks, trainer.round.partitioner, EngineSettings.of(cfg)
        )

    rollout_c, rollout_compile = compile_timed(
        jax.jit(rollout_one), one.learner.params, one.loop, key
    )
    _, trajectory, _ = rollout_c(one.learner.params, one.loop, key)
    update_c, update_compile = compile_timed(jax.jit(update_one), one.learner, trajectory, key)
    matmul_c, _ = compile_timed(matmul_program(), *matmul_args)
    console.print(
        f"[dim]{name}: compiled raw env {raw_compile:.1f}s, chunk {chunk_compile:.1f}s, "
        f"rollout {rollout_compile:.1f}s, update {update_compile:.1f}s; timing {rounds} rounds[/]"
    )

    # The chunk carries its state forward (real training); the others replay the same input.
    chunk_state = [state]

    def run_chunk() -> Any:
        chunk_state[0], metrics = chunk(chunk_state[0])
        return chunk_state[0], metrics

    times = interleaved_best(
        {
            "raw_env": lambda: raw(env_state, timestep, key),
            "rollout": lambda: rollout_c(one.learner.params, one.loop, key),
            "update": lambda: update_c(one.learner, trajectory, key),
            "chunk": run_chunk,
            "matmul": lambda: matmul_c(*matmul_args),
        },
        rounds,
    )
    best = {k: min(v) for k, v in times.items()}

    raw_steps_total = num_envs * raw_steps
    chunk_steps = cfg.updates_per_chunk * cfg.steps_per_update * cfg.seeds
    raw_sps = raw_steps_total / best["raw_env"]
    train_sps = chunk_steps / best["chunk"]
    round_sum = best["rollout"] + best["update"]

    flops = update_flops(spec, cfg)
    xla_update_flops = xla_flops(update_c)
    xla_per_sample = per_sample_xla_flops(networks, spec)
    analytic_forward = flops["actor_forward_per_sample"] + flops["critic_forward_per_sample"]
    m = matmul_args[0].shape[0]
    k = matmul_args[0].shape[1]
    p = matmul_args[1].shape[1]
    matmul_flops = 2.0 * m * k * p
    update_gflops = flops["total"] / best["update"] / 1e9
    matmul_gflops = matmul_flops / best["matmul"] / 1e9

    return {
        "map": name,
        "spec": {
            "num_agents": spec.num_agents,
            "obs_dim": spec.obs_dim,
            "state_dim": spec.state_dim,
            "num_actions": spec.num_actions,
            "episode_limit": spec.episode_limit,
        },
        "config": cfg.to_dict(),
        "raw_env": {
            "steps_per_call": raw_steps_total,
            "compile_s": raw_compile,
            "times_s": times["raw_env"],
            "best_s": best["raw_env"],
            "steps_per_s": raw_sps,
        },
        "training": {
            "steps_per_chunk": chunk_steps,
            "updates_per_chunk": cfg.updates_per_chunk,
            "chunk_compile_s": chunk_compile,
            "times_s": times["chunk"],
            "best_s": best["chunk"],
            "steps_per_s": train_sps,
            "train_over_raw": train_sps / raw_sps,
        },
        "split": {
            "rollout_compile_s": rollout_compile,
            "update_compile_s": update_compile,
            "rollout_times_s": times["rollout"],
            "update_times_s": times["update"],
            "rollout_s": best["rollout"],
            "update_s": best["update"],
            "rollout_share": best["rollout"] / round_sum,
            "update_share": best["update"] / round_sum,
            "rollout_steps_per_s": cfg.steps_per_update / best["rollout"],
            "rollout_over_raw": cfg.steps_per_update / best["rollout"] / raw_sps,
            # One round of the chunk vs the separately jitted rollout + update.
            "chunk_round_s": best["chunk"] / cfg.updates_per_chunk,
            "chunk_round_over_sum": best["chunk"] / cfg.updates_per_chunk / round_sum,
        },
        "update_flops": {
            "analytic": flops,
            # XLA counts every scan (while) body once: epochs, minibatches and time steps
            # are not multiplied in, so this is roughly one minibatch with one actor step.
            "xla_cost_analysis_whole_update": xla_update_flops,
            "xla_whole_update_over_analytic": (
                None if xla_update_flops is None else xla_update_flops / flops["total"]
            ),
            "xla_per_sample": xla_per_sample,
            "xla_forward_over_analytic": (
                None
                if xla_per_sample["forward"] is None
                else xla_per_sample["forward"] / analytic_forward
            ),
            "update_gflops_per_s": update_gflops,
            "matmul_shape": [m, k, p],
            "matmul_times_s": times["matmul"],
            "matmul_gflops_per_s": matmul_gflops,
            "update_over_matmul": update_gflops / matmul_gflops,
        },
    }


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------


def _fmt_sps(x: float) -> str:
    return f"{x:,.0f}"


def throughput_table(records: list[dict[str, Any]], num_envs: int) -> Table:
    table = Table(title=f"Env steps/s at {num_envs} envs (best of rounds; ratios same run)")
    for col in ("map", "n", "raw env", "training", "train/raw", "chunk compile"):
        table.add_column(col, justify="left" if col == "map" else "right")
    for r in records:
        table.add_row(
            r["map"],
            str(r["spec"]["num_agents"]),
            _fmt_sps(r["raw_env"]["steps_per_s"]),
            _fmt_sps(r["training"]["steps_per_s"]),
            f"{r['training']['train_over_raw']:.3f}",
            f"{r['training']['chunk_compile_s']:.1f} s",
        )
    return table


def split_table(records: list[dict[str, Any]]) -> Table:
    table = Table(title="One round: rollout vs update, and the update's FLOP/s")
    cols = (
        "map",
        "rollout",
        "update",
        "roll %",
        "upd %",
        "rollout/raw",
        "chunk/sum",
        "upd GFLOP",
        "upd GFLOP/s",
        "matmul GFLOP/s",
        "upd/matmul",
        "XLA fwd/analytic",
    )
    for col in cols:
        table.add_column(col, justify="left" if col == "map" else "right")
    for r in records:
        s, f = r["split"], r["update_flops"]
        xla = f["xla_forward_over_analytic"]
        table.add_row(
            r["map"],
            f"{s['rollout_s'] * 1e3:.0f} ms",
            f"{s['update_s'] * 1e3:.0f} ms",
            f"{100 * s['rollout_share']:.0f}%",
            f"{100 * s['update_share']:.0f}%",
            f"{s['rollout_over_raw']:.3f}",
            f"{s['chunk_round_over_sum']:.2f}",
            f"{f['analytic']['total'] / 1e9:.2f}",
            f"{f['update_gflops_per_s']:.2f}",
            f"{f['matmul_gflops_per_s']:.1f}",
            f"{100 * f['update_over_matmul']:.1f}%",
            "n/a" if xla is None else f"{xla:.2f}",
        )
    return table


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--maps", nargs="+", default=list(DEFAULT_MAPS), help="env names")
    parser.add_argument("--num-envs", type=int, default=64, help="parallel envs, every map")
    parser.add_argument(
        "--rollout-len", type=int, default=TrainConfig.rollout_len, help="steps per round"
    )
    parser.add_argument("--raw-steps", type=int, default=128, help="steps per raw-env call")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds")
    parser.add_argument("--matmul-size", type=int, default=2048, help="square matmul size")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results file")
    parser.add_argument(
        "--quick", action="store_true", help="smax:3m only, 2 rounds (a ~1 min smoke run)"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.maps, args.rounds = ["smax:3m"], 2
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    console = Console(width=max(Console().width, 160))
    start = time.perf_counter()
    load_before = os.getloadavg()

    size = args.matmul_size
    ka, kb = jax.random.split(jax.random.PRNGKey(1))
    matmul_args = (
        jax.random.normal(ka, (size, size), jnp.float32),
        jax.random.normal(kb, (size, size), jnp.float32),
    )

    records = []
    for name in args.maps:
        records.append(
            bench_map(
                name,
                args.num_envs,
                args.rollout_len,
                args.raw_steps,
                args.rounds,
                matmul_args,
                console,
            )
        )

    total = time.perf_counter() - start
    console.print(throughput_table(records, args.num_envs))
    console.print(split_table(records))
    console.print(
        "[dim]rollout/raw: env steps/s of the rollout alone over raw env steps/s; chunk/sum: one"
        " round inside the training chunk over rollout + update jitted separately; upd GFLOP:"
        " analytic FLOPs of one update (see update_flops); XLA fwd/analytic: cost_analysis()"
        " of a loop-free actor+critic forward per sample over the analytic count.[/]"
    )
    matmul_best = max(r["update_flops"]["matmul_gflops_per_s"] for r in records)
    console.print(
        f"matmul {size}x{size} f32: best {matmul_best:.1f} GFLOP/s over the run; "
        f"load average before/after {load_before[0]:.2f}/{os.getloadavg()[0]:.2f}; "
        f"total {total:.0f} s"
    )

    result = {
        "machine": machine_info(),
        "settings": {
            "maps": args.maps,
            "num_envs": args.num_envs,
            "rollout_len": args.rollout_len,
            "raw_steps": args.raw_steps,
            "rounds": args.rounds,
            "matmul_size": size,
            "quick": args.quick,
        },
        "load_average_before": list(load_before),
        "load_average_after": list(os.getloadavg()),
        "matmul_best_gflops_per_s": matmul_best,
        "total_runtime_s": total,
        "maps": records,
        "flop_model": update_flops.__doc__,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=_json_default) + "\n")
    console.print(f"wrote {args.out}")


def _json_default(x: Any) -> Any:
    if isinstance(x, np.generic):
        return x.item()
    raise TypeError(f"not JSON-serialisable: {type(x).__name__}")


if __name__ == "__main__":
    main()
