"""Time to a target greedy win rate, several algorithms x several seeds in one run.

Each algorithm trains ``--seeds`` seeds side by side in one compiled program (the seed
``vmap`` users run with ``--seeds``), from a cold start, compile included, in the loop
``b2mapo train`` runs (``runner.train``: its metrics and checkpoints go to a temporary
directory, its stop predicate ends the race). After every chunk
(or every ``--eval-every-chunks`` chunks) every seed's executing policy is evaluated as the
runner evaluates it (``b2mapo.evaluation.evaluate``: greedy and sampled, ``--eval-episodes``
episodes; for B2MAPO π_ind, and π acting batch by batch on DAGs beside it); the greedy win
rate decides. For each seed the env steps and the wall time at which its win rate first
reaches ``--target`` are recorded; an algorithm stops when all its seeds have reached it (or
at ``--max-steps``; ``--full`` always trains to ``--max-steps``, for final win rates).
Algorithms run one after another, so their wall times are comparable (same machine, same
load) and ratios to the first are printed.

Per algorithm the table gives env steps and wall seconds to the target (median and range
over seeds; a seed that never reached it counts as not reached), the training seconds to it
(the same wall time without the evaluations, which cost B2MAPO two policies' worth), the
final greedy win of the executing policy and, for B2MAPO, π's own env steps to the target
and final greedy win, and the diagnostics of the last chunk (B2MAPO: mean K of the DAGs,
generator entropy, π_ind's clipped fraction and KL(π || π_ind)). The JSON holds every
evaluation of every seed and the per-chunk means of those diagnostics.

An algorithm is a preset name, optionally with overrides: ``NAME=PRESET:FIELD=VALUE,...``
(values are JSON, else strings), e.g. ``b2-lr5e-4=b2mapo:lr=0.0005``.

    python benchmarks/time_to_win.py --algos mappo b2mapo --seeds 3            # smax:3m
    python benchmarks/time_to_win.py --env smax:8m_vs_9m --algos mappo b2mapo --seeds 3 \\
        --max-steps 3000000 --full --eval-every-chunks 4 --eval-episodes 64 \\
        --out benchmarks/results/8m_vs_9m.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from b2mapo.config import resolve
from b2mapo.reproduce.timing import machine_info
from b2mapo.rundir import write_json
from b2mapo.runner import Evaluated, train

DIAGNOSTICS = (
    "win_rate",
    "num_batches",
    "dag_num_batches",
    "dag_entropy",
    "ind_clipfrac",
    "ind_teacher_kl",
    "clipfrac",
    "approx_kl",
    "entropy",
    "ind_entropy",
)


def parse_algo(text: str) -> tuple[str, dict[str, Any]]:
    """``NAME=PRESET:FIELD=VALUE,...`` or a bare preset -> (name, config overrides)."""
    head, _, fields = text.partition(":")
    name, _, preset = head.partition("=") if "=" in head else (head, "", head)
    overrides: dict[str, Any] = {"algo": preset}
    for item in filter(None, fields.split(",")):
        key, value = item.split("=", 1)
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value
    return name, overrides


def race(name: str, overrides: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """Train one algorithm's seeds with the runner's loop until all reach the target (or the
    budget ends), evaluating every ``--eval-every-chunks`` chunks."""
    sizes = {
        "num_envs": args.num_envs,
        "rollout_len": args.rollout_len,
        "updates_per_chunk": args.updates_per_chunk,
    }
    values = {
        "env": args.env,
        "seeds": args.seeds,
        "seed": args.seed,
        "total_steps": args.max_steps,
        "eval_episodes": args.eval_episodes,
        "final_eval_episodes": args.eval_episodes,
        **{k: v for k, v in sizes.items() if v is not None},
        **overrides,
    }
    chunk_updates = resolve(values).updates_per_chunk
    reached: list[dict[str, float] | None] = [None] * args.seeds
    joint_reached: list[int | None] = [None] * args.seeds  # B2MAPO's π: env steps only
    evals: list[dict[str, Any]] = []
    diagnostics: list[dict[str, float]] = []

    def record(evaluated: Evaluated) -> None:
        steps = evaluated.env_steps
        point: dict[str, Any] = {
            "env_steps": steps,
            "wall_s": evaluated.wall_seconds,
            "train_s": evaluated.train_seconds,
        }
        for key in (k for k in evaluated.greedy if k.endswith("win_rate")):
            point[key] = evaluated.greedy[key].tolist()
            point[f"sampled_{key}"] = evaluated.sampled[key].tolist()
        evals.append(point)
        diagnostics.append(
            {k: float(v.mean()) for k, v in evaluated.metrics.items() if k in DIAGNOSTICS}
        )
        if args.verbose:
            wins = " ".join(
                f"{k}={np.mean(v):.2f}" for k, v in point.items() if k.endswith("win_rate")
            )
            print(f"  {name} {steps:,} steps {evaluated.wall_seconds:.0f} s: {wins}", flush=True)
        for seed, win in enumerate(point["win_rate"]):
            if reached[seed] is None and win >= args.target:
                reached[seed] = {k: point[k] for k in ("env_steps", "wall_s", "train_s")}
        for seed, win in enumerate(point.get("joint_win_rate", [])):
            if joint_reached[seed] is None and win >= args.target:
                joint_reached[seed] = steps

    with tempfile.TemporaryDirectory() as out:
        cfg = resolve({**values, "eval_every": args.eval_every_chunks * chunk_updates, "out": out})
        summary = train(
            cfg,
            Console(quiet=True),
            on_evaluation=record,
            stop=lambda _: not args.full and all(reached),
        )
    # Times count from the start of training, compilation included (as in earlier results).
    for point in [*evals, *filter(None, reached)]:
        point["train_s"] += summary.compile_seconds
    last = evals[-1]
    return {
        "name": name,
        "overrides": overrides,
        "compile_s": summary.compile_seconds,
        "reached": reached,
        "joint_reached_env_steps": joint_reached if "joint_win_rate" in last else None,
        "final_win_rate": last["win_rate"],
        "final_joint_win_rate": last.get("joint_win_rate"),
        "final_env_steps": last["env_steps"],
        "evals": evals,
        "diagnostics": diagnostics,
        "config": cfg.to_dict(),
    }


def spread(values: list[float | None]) -> tuple[float | None, str]:
    """Median over seeds (None if any seed did not get there) and the range as text."""
    got = [v for v in values if v is not None]
    if not got:
        return None, "never"
    text = f"{min(got):,.0f}-{max(got):,.0f}" + ("" if len(got) == len(values) else " (some never)")
    return (statistics.median(got) if len(got) == len(values) else None), text


def ratio(value: float | None, reference: float | None) -> str:
    return f"{value / reference:.2f}" if value is not None and reference else "-"


def mean_std(values: list[float] | None) -> str:
    if values is None:
        return "-"
    return f"{np.mean(values):.3f} ± {np.std(values):.3f}"


def joint_steps(reached: list[int | None] | None) -> str:
    """B2MAPO's π: median env steps to the target (and range), "-" for other algorithms."""
    if reached is None:
        return "-"
    median, text = spread(list(reached))
    return f"{text}" if median is None else f"{median:,.0f} ({text})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="smax:3m")
    parser.add_argument("--algos", nargs="+", default=["mappo", "b2mapo"])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--target", type=float, default=0.8)
    parser.add_argument("--max-steps", type=int, default=1_500_000)
    parser.add_argument("--eval-episodes", type=int, default=128)
    parser.add_argument("--num-envs", type=int, help="parallel envs (default: the preset's)")
    parser.add_argument("--rollout-len", type=int, help="steps per round (default: the preset's)")
    parser.add_argument("--updates-per-chunk", type=int, help="rounds per chunk (the preset's)")
    parser.add_argument(
        "--eval-every-chunks",
        type=int,
        default=1,
        help="evaluate after every this many chunks (and after the last); the steps to the"
        " target are then only as fine as this",
    )
    parser.add_argument("--full", action="store_true", help="always train to --max-steps")
    parser.add_argument("--verbose", action="store_true", help="print every evaluation")
    parser.add_argument("--out", default="benchmarks/results/time_to_win.json")
    args = parser.parse_args()
    if args.eval_every_chunks < 1:
        parser.error(f"--eval-every-chunks must be at least 1, got {args.eval_every_chunks}")

    console = Console(width=180)  # a wide table, also when piped
    results = []
    for text in args.algos:
        name, overrides = parse_algo(text)
        result = race(name, overrides, args)
        results.append(result)
        write_results(args, results)  # a long run cut short keeps the algorithms it finished
        steps = spread([r and r["env_steps"] for r in result["reached"]])
        console.print(
            f"{name}: steps to target {steps[1]}, final π {mean_std(result['final_win_rate'])}"
            f" at {result['final_env_steps']:,} steps, {result['evals'][-1]['wall_s']:.0f} s"
        )

    table = Table(
        title=f"{args.env}: to {args.target:.0%} greedy win, {args.seeds} seeds "
        f"({args.eval_episodes} eval episodes)"
    )
    for column in (
        "algo",
        "env steps (median)",
        "range",
        "× first",
        "wall s (median)",
        "range",
        "× first",
        "train s (median)",
        "× first",
        "final win (exec)",
        "π: env steps (median)",
        "final win π",
        "last diagnostics",
    ):
        table.add_column(column, justify="right")
    first_steps = first_wall = first_train = None
    for result in results:
        steps, steps_text = spread([r and r["env_steps"] for r in result["reached"]])
        wall, wall_text = spread([r and r["wall_s"] for r in result["reached"]])
        train, _ = spread([r and r["train_s"] for r in result["reached"]])
        first_steps = first_steps if first_steps is not None else steps
        first_wall = first_wall if first_wall is not None else wall
        first_train = first_train if first_train is not None else train
        result["median_env_steps"], result["median_wall_s"] = steps, wall
        result["median_train_s"] = train
        last = result["diagnostics"][-1]
        table.add_row(
            result["name"],
            "-" if steps is None else f"{steps:,.0f}",
            steps_text,
            ratio(steps, first_steps),
            "-" if wall is None else f"{wall:.0f}",
            wall_text,
            ratio(wall, first_wall),
            "-" if train is None else f"{train:.0f}",
            ratio(train, first_train),
            mean_std(result["final_win_rate"]),
            joint_steps(result["joint_reached_env_steps"]),
            mean_std(result["final_joint_win_rate"]),
            " ".join(f"{k}={v:.3g}" for k, v in last.items() if k != "win_rate"),
        )
    console.print(table)
    console.print(f"wrote {write_results(args, results)}")


def write_results(args: argparse.Namespace, results: list[dict[str, Any]]) -> Path:
    """Write the arguments, the results so far and the machine to ``--out`` atomically."""
    out = Path(args.out)
    payload = {"args": vars(args), "results": results, "machine": machine_info()}
    write_json(out, payload, allow_nan=True)
    return out


if __name__ == "__main__":
    main()
