"""Scaling benchmark: env steps per second of the real training chunk on 1, 2, ... devices.

For each device count a fresh process builds the chunk of ``resolve({... "devices": d})``
(seeds over as many devices as divide them, each seed's environments over the rest: the
layout ``b2mapo train --devices d`` uses) with ``b2mapo.reproduce.timing.chunk_timer``
(AOT-compiled, seed ``vmap`` included, warmed up by one call) and keeps the best of
``--repeats`` timed calls. The same total
batch (``--seeds`` x ``--num-envs``) is trained on every device count, so the rows compare
the same program spread differently.

On a machine with only a CPU, each process gets ``d`` forced host devices
(``--xla_force_host_platform_device_count``): they share the same cores, so expect no
speed-up here, only a check that the layout works and what the cross-device sums cost. On
a GPU machine the real devices are used (``--no-force-cpu``)::

    .venv/bin/python benchmarks/scaling.py                          # smax:3m, 1 and 2 devices
    .venv/bin/python benchmarks/scaling.py --devices 1 2 4 8 --no-force-cpu --num-envs 512

It prints a table and writes every figure with machine facts to ``--out`` (default
``benchmarks/results/scaling.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from b2mapo.config import TrainConfig

DEFAULT_OUT = Path(__file__).parent / "results" / "scaling.json"

# Runs in the child process: one device count, one algorithm.
CHILD = """
import json, sys
from b2mapo.config import resolve
from b2mapo.reproduce.timing import chunk_timer, interleaved, machine_info

settings = json.loads(sys.argv[1])
chunk = chunk_timer(resolve(settings["config"]))
best = min(interleaved({"chunk": chunk.timer}, settings["repeats"])["chunk"])
trainer, cfg, compile_s = chunk.trainer, chunk.trainer.cfg, chunk.compile_s
steps = cfg.seeds * cfg.num_envs * cfg.rollout_len * cfg.updates_per_chunk
print(json.dumps({
    "layout": trainer.layout.describe(),
    "devices": trainer.layout.num_devices,
    "compile_s": compile_s,
    "best_chunk_s": best,
    "env_steps_per_s": steps / best,
    "env_steps_per_s_per_device": steps / best / trainer.layout.num_devices,
    "machine": machine_info(),
}))
"""


def run_one(config: dict[str, Any], devices: int, repeats: int, force_cpu: bool) -> dict:
    """Time one device count in a fresh process (the device count is fixed when JAX starts)."""
    env = dict(os.environ)
    if force_cpu:
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    settings = {"config": {**config, "devices": devices}, "repeats": repeats}
    result = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(settings)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode:
        raise SystemExit(f"{devices} device(s) failed:\n{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", default="smax:3m")
    parser.add_argument("--algos", nargs="+", default=["mappo", "b2mapo"])
    parser.add_argument("--devices", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--num-envs", type=int, default=64)
    parser.add_argument("--rollout-len", type=int, default=TrainConfig.rollout_len)
    parser.add_argument("--updates-per-chunk", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--force-cpu",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="give each process that many forced CPU devices (off on a GPU machine)",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    console = Console()

    rows = []
    for algo in args.algos:
        config = {
            "env": args.env,
            "algo": algo,
            "seeds": args.seeds,
            "num_envs": args.num_envs,
            "rollout_len": args.rollout_len,
            "updates_per_chunk": args.updates_per_chunk,
        }
        for devices in args.devices:
            row = {"algo": algo, **run_one(config, devices, args.repeats, args.force_cpu)}
            rows.append(row)
            layout, compile_s = row["layout"], row["compile_s"]
            console.print(f"[dim]{algo} on {layout}: compiled in {compile_s:.1f} s[/]")

    table = Table(
        title=f"Env steps/s, {args.env}, {args.seeds} seed(s) x {args.num_envs} envs, best of "
        f"{args.repeats} chunks of {args.updates_per_chunk} rounds"
        + (" (forced CPU devices share the same cores)" if args.force_cpu else "")
    )
    for name in ("algo", "layout", "env steps/s", "per device", f"x {args.devices[0]} device(s)"):
        table.add_column(name, justify="left" if name in ("algo", "layout") else "right")
    for row in rows:
        base = next(r for r in rows if r["algo"] == row["algo"])["env_steps_per_s"]
        row["speedup_vs_first"] = row["env_steps_per_s"] / base
        table.add_row(
            row["algo"],
            row["layout"],
            f"{row['env_steps_per_s']:,.0f}",
            f"{row['env_steps_per_s_per_device']:,.0f}",
            f"{row['speedup_vs_first']:.2f}",
        )
    console.print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    result = {"settings": {**vars(args), "out": str(args.out)}, "results": rows}
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
