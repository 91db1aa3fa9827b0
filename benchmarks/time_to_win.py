"""Time to a target evaluation win rate from a cold start, compile included.

Trains one seed chunk by chunk, evaluates the greedy policy after every chunk, and records
the env steps, wall time and process CPU time at which the win rate first reaches the
target. Prints a table and writes a JSON file.

    python benchmarks/time_to_win.py --env smax:3m --target 0.8 --max-steps 1500000
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import jax
import numpy as np
from rich.console import Console
from rich.table import Table

from b2mapo.config import resolve
from b2mapo.runner import evaluate
from b2mapo.train import Trainer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="smax:3m")
    parser.add_argument("--algo", default="mappo")
    parser.add_argument("--target", type=float, default=0.8)
    parser.add_argument("--max-steps", type=int, default=1_500_000)
    parser.add_argument("--eval-episodes", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--set", nargs="*", default=[], metavar="FIELD=VALUE", help="config overrides (JSON values)"
    )
    parser.add_argument("--out", default="benchmarks/results/time_to_win.json")
    args = parser.parse_args()

    wall0, cpu0 = time.perf_counter(), time.process_time()
    cfg = resolve(
        {
            "env": args.env,
            "algo": args.algo,
            "seed": args.seed,
            "total_steps": args.max_steps,
            "eval_episodes": args.eval_episodes,
            **{k: json.loads(v) for k, v in (item.split("=", 1) for item in args.set)},
        }
    )
    trainer = Trainer(cfg)
    state = trainer.init()
    chunk = trainer.chunk.lower(state).compile()
    compile_wall = time.perf_counter() - wall0

    curve, reached = [], None
    for _ in range(cfg.num_updates // cfg.updates_per_chunk):
        state, metrics = chunk(state)
        jax.block_until_ready(metrics)
        greedy, _ = evaluate(trainer, state)
        point = {
            "env_steps": int(np.asarray(state.update)[0]) * cfg.steps_per_update,
            "win_rate": float(greedy["win_rate"].mean()),
            "wall_s": time.perf_counter() - wall0,
            "cpu_s": time.process_time() - cpu0,
        }
        curve.append(point)
        if point["win_rate"] >= args.target:
            reached = point
            break

    table = Table(title=f"time to {args.target:.0%} greedy win rate: {args.algo} on {args.env}")
    for column in ("env steps", "wall s", "CPU s", "compile s (wall)"):
        table.add_column(column, justify="right")
    if reached:
        table.add_row(
            f"{reached['env_steps']:,}",
            f"{reached['wall_s']:.0f}",
            f"{reached['cpu_s']:.0f}",
            f"{compile_wall:.0f}",
        )
    else:
        table.add_row("not reached", f"{curve[-1]['wall_s']:.0f}", f"{curve[-1]['cpu_s']:.0f}", "")
    Console().print(table)

    result = {
        "env": args.env,
        "algo": args.algo,
        "target": args.target,
        "reached": reached,
        "compile_wall_s": compile_wall,
        "curve": curve,
        "config": cfg.to_dict(),
        "jax": jax.__version__,
        "devices": jax.device_count(),
        "machine": platform.machine(),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
