"""First-compile benchmark: lowering and XLA compile seconds of the training chunk users run
(``Trainer.chunk`` with its XLA options, seed ``vmap`` included, traced with the garbage
collector paused as ``exported.compile_chunk`` does) per algorithm, beside the environment
alone (its step with the auto-reset, scanned over ``num_envs`` envs x ``rollout_len`` steps),
which is the floor of any chunk that steps it; the number of XLA kernels (fusions) of each
program, which compile time follows and which, unlike seconds, does not depend on the
machine's load; then the compiled chunk's run time (best of ``--repeats``), so that a
compile-saving XLA flag can be checked for its runtime cost.

XLA flags apply to the whole process: compare them by running the script once per setting::

    .venv/bin/python benchmarks/compile_time.py                      # smax:3m, mappo and b2mapo
    XLA_FLAGS=--xla_cpu_use_fusion_emitters=false .venv/bin/python benchmarks/compile_time.py \\
        --out benchmarks/results/compile_time_loop_emitters.json

Compile seconds vary by a third from one run to the next on a shared machine: compare
versions or settings by alternating runs, and by their kernels.

Nothing comes from the persistent compilation cache (this script never enables it). It
prints a table and writes the figures, the flags and machine information to ``--out``
(default ``benchmarks/results/compile_time.json``; git-ignored).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
from rich.console import Console
from rich.table import Table

from b2mapo.config import resolve
from b2mapo.envs.registry import make_env
from b2mapo.exported import gc_paused
from b2mapo.reproduce.timing import lower_and_compile, machine_info, run_timed
from b2mapo.train import Trainer, compiler_options

DEFAULT_OUT = Path(__file__).parent / "results" / "compile_time.json"


def kernels(compiled: Any) -> int:
    """XLA kernels (fusions) of a compiled program: what its compile time follows."""
    return compiled.as_text().count(" fusion(")


def environment_alone(env_name: str, num_envs: int, steps: int) -> dict[str, float]:
    """Compile seconds and kernels of the env's step (with auto-reset) scanned like a
    rollout, with the trainer's XLA options."""
    env = make_env(env_name)
    keys = jax.random.split(jax.random.PRNGKey(0), num_envs)
    states, _ = jax.vmap(env.reset)(keys)
    actions = jnp.zeros((num_envs, env.spec.num_agents), jnp.int32)

    def play(states: Any, key: jax.Array) -> Any:
        def step(states: Any, key: jax.Array) -> tuple[Any, jax.Array]:
            states, timestep = jax.vmap(env.step)(jax.random.split(key, num_envs), states, actions)
            return states, timestep.reward

        return jax.lax.scan(step, states, jax.random.split(key, steps))

    with gc_paused():
        play_jit = jax.jit(play, compiler_options=compiler_options())
        compiled, lower_s, compile_s = lower_and_compile(play_jit, states, keys[0])
    return {"lower_s": lower_s, "compile_s": compile_s, "kernels": kernels(compiled)}


def chunk(cfg_values: dict[str, Any], repeats: int) -> dict[str, float]:
    """Compile seconds and kernels of one algorithm's chunk, and its best run time after a
    warm-up."""
    trainer = Trainer(resolve(cfg_values))
    state = trainer.init()
    with gc_paused():
        compiled, lower_s, compile_s = lower_and_compile(trainer.chunk, state)
    state, _ = compiled(state)
    best = min(run_timed(lambda: compiled(state)) for _ in range(repeats))
    return {
        "lower_s": lower_s,
        "compile_s": compile_s,
        "chunk_s": best,
        "kernels": kernels(compiled),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", default="smax:3m")
    parser.add_argument("--algos", nargs="+", default=["mappo", "b2mapo"])
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--num-envs", type=int, help="parallel envs (default: the config's)")
    parser.add_argument("--rollout-len", type=int, help="steps per round (default: the config's)")
    parser.add_argument("--repeats", type=int, default=2, help="timed chunk calls (best kept)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    sizes = {"num_envs": args.num_envs, "rollout_len": args.rollout_len}
    shared = {
        "env": args.env,
        "seeds": args.seeds,
        "total_steps": 10**9,
        "eval_every": 0,
        **{key: value for key, value in sizes.items() if value is not None},
    }
    defaults = resolve(shared)
    rows = {
        "environment alone": environment_alone(args.env, defaults.num_envs, defaults.rollout_len)
    }
    for algo in args.algos:
        rows[algo] = chunk({**shared, "algo": algo}, args.repeats)
    flags = os.environ.get("XLA_FLAGS", "")
    table = Table(title=f"First compile, {args.env}, {args.seeds} seed(s), XLA_FLAGS={flags!r}")
    for column in ("program", "kernels", "lowering s", "XLA compile s", "total s", "chunk run s"):
        table.add_column(column, justify="left" if column == "program" else "right")
    for name, row in rows.items():
        run = f"{row['chunk_s']:.3f}" if "chunk_s" in row else "-"
        total = row["lower_s"] + row["compile_s"]
        table.add_row(
            name,
            str(row["kernels"]),
            f"{row['lower_s']:.1f}",
            f"{row['compile_s']:.1f}",
            f"{total:.1f}",
            run,
        )
    Console(width=100).print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "args": {k: str(v) for k, v in vars(args).items()},
        "xla_flags": flags,
        "results": rows,
        "machine": machine_info(),
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
