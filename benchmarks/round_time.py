"""Round-time benchmark: seconds per training round of MAPPO, HAPPO, A2PO, B2MAPO with K = 2
fixed batches (``b2mapo-fixed``) and full B2MAPO (``b2mapo``: learned DAG generator, joint
policy π and derived policy π_ind), as ratios to MAPPO's measured in the same run.

What is timed is the program users run: the compiled training chunk ``Trainer.chunk``, i.e.
``jax.jit(jax.vmap(trainer._chunk_one))`` over ``--seeds`` seeds, each chunk
``--updates-per-chunk`` rounds of rollout + update. Timing the real chunk (seed vmap
included) rather than an isolated update call counts everything a round costs: the rollout
(for B2MAPO with the DAG generator acting), the update and the seed batching. Per algorithm
it reports

* the whole round: best chunk seconds / ``updates_per_chunk``;
* the update phase: the chunk's ``update_seconds`` metric (host clock around the update, mean
  over the chunk's rounds and seeds of the best call); for B2MAPO also ``joint_update_seconds``
  (π's engine update, the rest being the generator's and π_ind's updates);
* K: ``num_batches`` (the largest K of a round; max over the best call) and for B2MAPO
  ``dag_num_batches`` (mean K of the sampled DAGs).

Every algorithm's chunk is built, AOT-compiled (compile seconds reported, not timed) and
warmed up by one call with ``b2mapo.reproduce.timing.chunk_timer``, the timer that
``b2mapo reproduce`` times Table 1 with; then all are timed round-robin ``--repeats`` times
and the best call of each is kept, so that a burst of outside load hits all algorithms
alike. Each algorithm's state is carried from call to call, so timed chunks start
mid-training (mid-episode, trained params).

Targets: on smax:8m_vs_9m, b2mapo-fixed's round <= 1.3 x MAPPO's, HAPPO's,
A2PO's and B2MAPO's <= 2 x; on smax:27m_vs_30m, A2PO's <= 3 x. Only the verdicts for the
measured map are printed.

``mappo`` is always timed (the baseline). ``--set KEY=VALUE`` (repeatable; JSON values, else
strings) overrides a config field of every algorithm, ``--b2mapo-set`` of ``b2mapo`` only (not
``b2mapo-fixed``). ``--quick`` means 16 envs and 2 repeats unless those are given.

Run it from the repository root::

    .venv/bin/python benchmarks/round_time.py            # 8m_vs_9m, 64 envs x 2 seeds
    .venv/bin/python benchmarks/round_time.py --quick    # 16 envs, 2 repeats
    .venv/bin/python benchmarks/round_time.py --env smax:27m_vs_30m --num-envs 16
    .venv/bin/python benchmarks/round_time.py --algos mappo b2mapo --b2mapo-set dag_max_batches=2

It prints a table and the verdicts and writes every figure, the configs, machine information
and the load average before and after to ``--out`` (default
``benchmarks/results/round_time.json``; git-ignored).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from b2mapo.config import resolve
from b2mapo.reproduce.timing import Timed, chunk_timer, interleaved, machine_info

ALGOS = ("mappo", "happo", "a2po", "b2mapo-fixed", "b2mapo")
DEFAULT_OUT = Path(__file__).parent / "results" / "round_time.json"
# The targets: (env, algo, bound on round seconds / MAPPO's round seconds).
TARGETS = (
    ("smax:8m_vs_9m", "b2mapo-fixed", 1.3),
    ("smax:8m_vs_9m", "happo", 2.0),
    ("smax:8m_vs_9m", "a2po", 2.0),
    ("smax:8m_vs_9m", "b2mapo", 2.0),
    ("smax:27m_vs_30m", "a2po", 3.0),
)


def parse_override(item: str) -> tuple[str, Any]:
    """``KEY=VALUE`` with a JSON value (``true``, ``3``, ...) or else a plain string."""
    key, sep, text = item.partition("=")
    if not sep:
        raise SystemExit(f"overrides take KEY=VALUE, not {item!r}")
    try:
        return key, json.loads(text)
    except json.JSONDecodeError:
        return key, text


def prepare(cfg_values: dict[str, Any]) -> tuple[Timed, dict[str, Any], list[Any]]:
    """Build, compile and warm up one algorithm's chunk; a timer (which carries the state
    forward and keeps each call's metrics in the returned list) and a record."""
    chunk = chunk_timer(resolve(cfg_values))
    record = {
        "algo": chunk.trainer.cfg.algo,
        "config": chunk.trainer.cfg.to_dict(),
        "num_agents": chunk.trainer.env.spec.num_agents,
        "compile_s": chunk.compile_s,
        "warmup_s": chunk.warmup_s,
    }
    return chunk.timer, record, chunk.calls


def summarise(record: dict[str, Any], times: list[float], calls: list[Any]) -> None:
    """Best call's round and update seconds, K and throughput, in place."""
    cfg = record["config"]
    best = int(np.argmin(times))
    metrics = {k: np.asarray(v) for k, v in calls[best].items()}  # leaves [seeds, rounds]
    record["times_s"] = times
    record["best_chunk_s"] = times[best]
    record["round_s"] = times[best] / cfg["updates_per_chunk"]
    record["update_s"] = float(metrics["update_seconds"].mean())
    record["joint_update_s"] = (
        float(metrics["joint_update_seconds"].mean()) if "joint_update_seconds" in metrics else None
    )
    record["num_batches"] = int(metrics["num_batches"].max())
    record["dag_num_batches"] = (
        float(metrics["dag_num_batches"].mean()) if "dag_num_batches" in metrics else None
    )
    steps = cfg["seeds"] * cfg["num_envs"] * cfg["rollout_len"] * cfg["updates_per_chunk"]
    record["env_steps_per_s"] = steps / times[best]
    record["best_call_metrics_mean"] = {k: float(v.mean()) for k, v in metrics.items()}


def add_ratios(records: dict[str, dict[str, Any]]) -> None:
    """Round, update and π-update seconds as ratios to MAPPO's, in place."""
    mappo = records["mappo"]
    for r in records.values():
        r["round_x_mappo"] = r["round_s"] / mappo["round_s"]
        r["update_x_mappo"] = r["update_s"] / mappo["update_s"]
        joint = r["joint_update_s"]
        r["joint_update_x_mappo"] = None if joint is None else joint / mappo["update_s"]


def results_table(records: dict[str, dict[str, Any]], title: str) -> Table:
    table = Table(title=title)
    cols = ("algo", "K", "round s", "round x MAPPO", "update s", "update x MAPPO")
    for col in (*cols, "π update s", "π x MAPPO", "env steps/s"):
        table.add_column(col, justify="left" if col == "algo" else "right")
    for r in records.values():
        mean_k = r["dag_num_batches"]
        joint = r["joint_update_s"]
        table.add_row(
            r["algo"],
            str(r["num_batches"]) + ("" if mean_k is None else f" (mean {mean_k:.2f})"),
            f"{r['round_s']:.3f}",
            f"{r['round_x_mappo']:.2f}",
            f"{r['update_s']:.3f}",
            f"{r['update_x_mappo']:.2f}",
            "-" if joint is None else f"{joint:.3f}",
            "-" if joint is None else f"{r['joint_update_x_mappo']:.2f}",
            f"{r['env_steps_per_s']:,.0f}",
        )
    return table


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--env", default="smax:8m_vs_9m", help="map, e.g. smax:27m_vs_30m (with --num-envs 16)")
    add("--algos", nargs="+", choices=ALGOS, default=list(ALGOS), help="mappo is always timed")
    add("--num-envs", type=int, help="parallel envs per seed (default 64; 16 with --quick)")
    add("--rollout-len", type=int, default=64, help="steps per env per round")
    add("--seeds", type=int, default=2, help="seeds vmapped in the chunk")
    add("--updates-per-chunk", type=int, default=2, help="rounds per compiled chunk")
    add("--repeats", type=int, help="interleaved timing repeats (default 3; 2 with --quick)")
    add("--set", action="append", default=[], metavar="KEY=VALUE", help="all configs")
    add("--b2mapo-set", action="append", default=[], metavar="KEY=VALUE", help="b2mapo only")
    add("--out", type=Path, default=DEFAULT_OUT, help="JSON results file")
    add("--quick", action="store_true", help="16 envs, 2 repeats unless given")
    args = parser.parse_args(argv)
    args.num_envs = args.num_envs or (16 if args.quick else 64)
    args.repeats = args.repeats or (2 if args.quick else 3)
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    console = Console(width=max(Console().width, 140))
    start, load_before = time.perf_counter(), os.getloadavg()
    shared = {
        "env": args.env,
        "seeds": args.seeds,
        "num_envs": args.num_envs,
        "rollout_len": args.rollout_len,
        "updates_per_chunk": args.updates_per_chunk,
        "total_steps": 10**9,  # long run: the learning rate stays near its initial value
        "eval_every": 0,
        **dict(parse_override(item) for item in args.set),
    }
    b2mapo_extra = dict(parse_override(item) for item in args.b2mapo_set)
    algos = [a for a in ALGOS if a == "mappo" or a in args.algos]
    timers: dict[str, Timed] = {}
    records: dict[str, dict[str, Any]] = {}
    calls: dict[str, list[Any]] = {}
    for algo in algos:
        extra = b2mapo_extra if algo == "b2mapo" else {}
        timers[algo], records[algo], calls[algo] = prepare({**shared, "algo": algo, **extra})
        r = records[algo]
        console.print(
            f"[dim]{algo}: compiled in {r['compile_s']:.1f} s, "
            f"warm-up chunk {r['warmup_s']:.2f} s[/]"
        )
    setup_s = time.perf_counter() - start
    times = interleaved(timers, args.repeats)
    for algo, r in records.items():
        summarise(r, times[algo], calls[algo])
    add_ratios(records)
    load_after, total = os.getloadavg(), time.perf_counter() - start

    n = records["mappo"]["num_agents"]
    title = (
        f"Seconds per round, {args.env} (n={n}), {args.seeds} seeds x {args.num_envs} envs x "
        f"{args.rollout_len} steps, {args.updates_per_chunk} rounds per chunk; best of "
        f"{args.repeats}" + (f"; b2mapo with {b2mapo_extra}" if b2mapo_extra else "")
    )
    console.print(results_table(records, title))
    verdicts = []
    for env, algo, bound in TARGETS:
        if env == args.env and algo in records:
            ratio = records[algo]["round_x_mappo"]
            verdicts.append({"algo": algo, "bound": bound, "ratio": ratio, "meets": ratio <= bound})
            mark = "[green]yes[/]" if ratio <= bound else "[red]NO[/]"
            console.print(f"target {algo} round <= {bound} x MAPPO: {ratio:.2f} -> {mark}")
    console.print(
        f"[dim]round: best chunk / {args.updates_per_chunk}; update: the chunk's "
        f"update_seconds (π: joint_update_seconds), mean over rounds and seeds of that call. "
        f"Load average before/after {load_before[0]:.2f}/{load_after[0]:.2f} on "
        f"{os.cpu_count()} CPUs; total {total:.0f} s (setup {setup_s:.0f} s).[/]"
    )
    result = {
        "machine": machine_info(),
        "settings": {
            **vars(args),
            "out": str(args.out),
            "shared": shared,
            "b2mapo_only": b2mapo_extra,
        },
        "load_average_before": list(load_before),
        "load_average_after": list(load_after),
        "setup_s": setup_s,
        "total_runtime_s": total,
        "targets": verdicts,
        "results": list(records.values()),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
