"""Round-time benchmark: update-phase seconds per round of MAPPO, HAPPO, A2PO and the B2MAPO
scheme at K = 1, 2, 4 and n batches, all on one map and one trajectory.

What is timed is exactly the update call of ``Trainer._round``::

    batch_sequential_update(learner, trajectory, key, trainer.networks, trainer.partitioner, cfg)

jitted and AOT-compiled once per setting (compile time reported, not timed), on the same
trajectory for every setting. The trajectory is collected once with ``rollout(...)`` by
MAPPO's fresh learner; every setting updates its own fresh learner initialised from the same
key (the same parameters wherever the architectures agree); for each setting the trajectory's
stored ``batch_index`` is replaced by that setting's own partition
(``trainer.partitioner.partition(key, zeros(n))``), as ``Trainer._round`` would have stored
it. A2PO's partitioner ignores the stored index (it orders agents from the round's
advantages); the others use it.

Settings (env, ``num_envs``, ``rollout_len``, epochs, minibatches and hidden size are shared;
everything else is the preset's):

* ``MAPPO``: preset ``mappo`` (K = 1);
* ``HAPPO``: preset ``happo`` (one agent per batch, K = n);
* ``A2PO``: preset ``a2po`` (one agent per batch, K = n);
* ``B2MAPO K=k``: preset ``b2mapo-fixed`` with ``partition="random_k"``, ``num_batches=k``
  for k in 1, 2, 4, n (values above n dropped, duplicates merged).

Every setting is warmed up once, then all are timed round-robin ``--repeats`` times and the
best time of each is kept, so that a burst of outside load hits all settings alike. The
table gives each setting's update seconds per round, the ratio to MAPPO, that ratio over K
(the target: the B2MAPO scheme at K batches costs at most K x 1.15 of MAPPO's round, A2PO
at n agents at most n x 1.15, i.e. ratio / K <= 1.15) and the ratio to A2PO. The engine's
reported ``num_batches`` is checked against the expected K for every setting.

Run it from the repository root::

    .venv/bin/python benchmarks/round_time.py            # 8m_vs_9m, 32 envs, 5 repeats: ~2.5-3 min
    .venv/bin/python benchmarks/round_time.py --quick    # 16 envs, 2 repeats: ~2 min
    .venv/bin/python benchmarks/round_time.py --env smax:10m_vs_11m --num-envs 64
    .venv/bin/python benchmarks/round_time.py --b2mapo-set ratio=per_agent  # a B2MAPO variant

It prints a table and writes every figure, plus machine information and the load average
before and after, to ``--out`` (default ``benchmarks/results/round_time.json``; git-ignored).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
from rich.console import Console
from rich.table import Table
from timing import Timed, compile_timed, interleaved, machine_info

from b2mapo.config import TrainConfig, resolve
from b2mapo.engine import LearnerState, batch_sequential_update, init_learner
from b2mapo.rollout import Trajectory, reset_envs, rollout
from b2mapo.train import Trainer

DEFAULT_OUT = Path(__file__).parent / "results" / "round_time.json"
TARGET_PER_BATCH = 1.15  # the budget: K batches cost at most K x 1.15 of MAPPO's round
B2MAPO_BATCHES = (1, 2, 4)  # plus n


# ---------------------------------------------------------------------------------------------
# Timing helpers
# ---------------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------
# Settings
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Setting:
    """One measured configuration: a label, the config overrides and the expected K."""

    name: str
    family: str  # mappo, happo, a2po or b2mapo
    overrides: dict[str, Any]
    num_batches: int


def settings_for(num_agents: int, b2mapo_extra: dict[str, Any]) -> list[Setting]:
    """MAPPO, HAPPO, A2PO and the B2MAPO scheme at K = 1, 2, 4, n (K <= n, no duplicates);
    ``b2mapo_extra`` overrides further fields of the B2MAPO settings only."""
    n = num_agents
    out = [
        Setting("MAPPO", "mappo", {"algo": "mappo"}, 1),
        Setting("HAPPO", "happo", {"algo": "happo"}, n),
        Setting("A2PO", "a2po", {"algo": "a2po"}, n),
    ]
    for k in sorted({k for k in (*B2MAPO_BATCHES, n) if k <= n}):
        overrides = {
            **b2mapo_extra,
            "algo": "b2mapo-fixed",
            "partition": "random_k",
            "num_batches": k,
        }
        out.append(Setting(f"B2MAPO K={k}", "b2mapo", overrides, k))
    return out


# ---------------------------------------------------------------------------------------------
# Measurement
# ---------------------------------------------------------------------------------------------


def collect_trajectory(cfg: TrainConfig, param_key: jax.Array, key: jax.Array) -> Trajectory:
    """One rollout of a fresh learner initialised from ``param_key`` (as every setting is).

    A first rollout from reset is thrown away, so the kept one starts mid-episode (GRU carry
    and episode boundaries as in steady training)."""
    trainer = Trainer(cfg)
    env_key, key = jax.random.split(key)
    learner = init_learner(trainer.networks, cfg, param_key)
    loop = reset_envs(trainer.env, trainer.networks, env_key, cfg.num_envs)
    no_batches = jnp.zeros((trainer.env.spec.num_agents,), jnp.int32)

    @jax.jit
    def collect(loop: Any, key: jax.Array) -> tuple[Any, Trajectory]:
        loop, trajectory, _ = rollout(
            trainer.env,
            trainer.networks,
            learner.params,
            loop,
            key,
            cfg.rollout_len,
            no_batches,
        )
        return loop, trajectory

    warm_key, key = jax.random.split(key)
    loop, _ = collect(loop, warm_key)
    _, trajectory = collect(loop, key)
    return jax.block_until_ready(trajectory)


def prepare_setting(
    setting: Setting,
    shared: dict[str, Any],
    trajectory: Trajectory,
    key: jax.Array,
    param_key: jax.Array,
) -> tuple[Timed, dict[str, Any]]:
    """Compile the setting's update on its view of the trajectory; a timer and a record."""
    cfg = resolve({**shared, **setting.overrides})
    trainer = Trainer(cfg)
    num_agents = trainer.env.spec.num_agents
    partition_key, update_key = jax.random.split(key)
    # Same key as the rollout's learner: identical parameters, optimiser and value-norm state.
    learner = init_learner(trainer.networks, cfg, param_key)
    transitions = trajectory.transitions
    partition = trainer.partitioner.partition(partition_key, jnp.zeros((num_agents,)))
    batch_index = jnp.broadcast_to(partition, transitions.batch_index.shape).astype(
        transitions.batch_index.dtype
    )
    own = trajectory._replace(transitions=transitions._replace(batch_index=batch_index))

    def update(
        learner: LearnerState, trajectory: Trajectory, key: jax.Array
    ) -> tuple[LearnerState, dict[str, jax.Array]]:
        return batch_sequential_update(
            learner, trajectory, key, trainer.networks, trainer.partitioner, cfg
        )

    compiled, compile_s = compile_timed(jax.jit(update), learner, own, update_key)
    # Warm-up call, which also checks that the engine ran the expected number of stages.
    start = time.perf_counter()
    _, metrics = jax.block_until_ready(compiled(learner, own, update_key))
    warmup_s = time.perf_counter() - start
    engine_batches = int(metrics["num_batches"])
    if engine_batches != setting.num_batches:
        raise AssertionError(
            f"{setting.name}: engine ran {engine_batches} batches, expected {setting.num_batches}"
        )
    record = {
        "setting": setting.name,
        "family": setting.family,
        "num_batches": setting.num_batches,
        "engine_num_batches": engine_batches,
        "partition": [int(x) for x in partition],
        "overrides": setting.overrides,
        "config": cfg.to_dict(),
        "compile_s": compile_s,
        "warmup_s": warmup_s,
    }
    return (lambda: compiled(learner, own, update_key)), record


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------


def add_ratios(records: list[dict[str, Any]]) -> None:
    """Ratios to MAPPO and A2PO, per batch, and the target verdicts, in place."""
    by_family = {r["family"]: r for r in records if r["family"] != "b2mapo"}
    mappo_s = by_family["mappo"]["best_s"]
    a2po_s = by_family["a2po"]["best_s"]
    mappo_times = by_family["mappo"]["times_s"]
    for r in records:
        r["ratio_to_mappo"] = r["best_s"] / mappo_s
        r["ratio_per_batch"] = r["ratio_to_mappo"] / r["num_batches"]
        # Paired within each repeat (a noise check on the best-of ratio, not the verdict).
        paired = [t / m / r["num_batches"] for t, m in zip(r["times_s"], mappo_times, strict=True)]
        r["paired_ratio_per_batch_median"] = statistics.median(paired)
        r["ratio_to_a2po"] = r["best_s"] / a2po_s
        in_target = r["family"] in ("b2mapo", "a2po")
        r["target_ratio"] = TARGET_PER_BATCH * r["num_batches"] if in_target else None
        r["meets_target"] = r["ratio_per_batch"] <= TARGET_PER_BATCH if in_target else None


def results_table(records: list[dict[str, Any]], title: str) -> Table:
    table = Table(title=title)
    cols = (
        "setting",
        "K",
        "update s",
        "median s",
        "/ MAPPO",
        "/ MAPPO / K",
        "target",
        "paired / K",
        "/ A2PO",
    )
    for col in cols:
        table.add_column(col, justify="left" if col == "setting" else "right")
    for r in records:
        if r["meets_target"] is None:
            verdict = "-"
        elif r["meets_target"]:
            verdict = f"[green]yes[/] (<= {r['target_ratio']:.2f})"
        else:
            verdict = f"[red]NO[/] (<= {r['target_ratio']:.2f})"
        table.add_row(
            r["setting"],
            str(r["num_batches"]),
            f"{r['best_s']:.3f}",
            f"{r['median_s']:.3f}",
            f"{r['ratio_to_mappo']:.2f}",
            f"{r['ratio_per_batch']:.3f}",
            verdict,
            f"{r['paired_ratio_per_batch_median']:.3f}",
            f"{r['ratio_to_a2po']:.2f}",
        )
    return table


def parse_override(item: str) -> tuple[str, Any]:
    """``FIELD=VALUE`` with a JSON value (``true``, ``3``, ...) or else a plain string."""
    field, sep, text = item.partition("=")
    if not sep:
        raise SystemExit(f"--b2mapo-set takes FIELD=VALUE, not {item!r}")
    try:
        return field, json.loads(text)
    except json.JSONDecodeError:
        return field, text


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", default="smax:8m_vs_9m", help="map (8+ agents intended)")
    parser.add_argument("--num-envs", type=int, default=32, help="parallel envs")
    parser.add_argument("--rollout-len", type=int, default=64, help="steps per env per round")
    parser.add_argument("--epochs", type=int, default=TrainConfig.epochs, help="PPO epochs")
    parser.add_argument(
        "--minibatches", type=int, default=TrainConfig.minibatches, help="minibatches per epoch"
    )
    parser.add_argument(
        "--hidden-size", type=int, default=TrainConfig.hidden_size, help="MLP/GRU width"
    )
    parser.add_argument("--repeats", type=int, default=5, help="interleaved timing repeats")
    parser.add_argument(
        "--b2mapo-set",
        nargs="*",
        default=[],
        metavar="FIELD=VALUE",
        help="extra config overrides for the B2MAPO settings only (JSON values, else strings)",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results file")
    parser.add_argument(
        "--quick", action="store_true", help="16 envs, 2 repeats (a ~2 min smoke run)"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.num_envs, args.repeats = 16, 2
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    console = Console(width=max(Console().width, 120))
    start = time.perf_counter()
    load_before = os.getloadavg()

    shared = {
        "env": args.env,
        "num_envs": args.num_envs,
        "rollout_len": args.rollout_len,
        "epochs": args.epochs,
        "minibatches": args.minibatches,
        "hidden_size": args.hidden_size,
    }
    key = jax.random.PRNGKey(0)
    param_key, rollout_key, update_key = jax.random.split(key, 3)
    base_cfg = resolve({**shared, "algo": "mappo"})
    b2mapo_extra = dict(parse_override(item) for item in args.b2mapo_set)
    trajectory = collect_trajectory(base_cfg, param_key, rollout_key)
    rollout_s = time.perf_counter() - start
    console.print(f"[dim]trajectory: rollout compiled and run twice in {rollout_s:.1f} s[/]")
    num_agents = int(trajectory.transitions.action.shape[-1])
    if num_agents < 8:
        console.print(f"[yellow]{args.env} has {num_agents} agents; the target is for 8+[/]")

    settings = settings_for(num_agents, b2mapo_extra)
    timers: dict[str, Timed] = {}
    records: list[dict[str, Any]] = []
    for setting in settings:
        timer, record = prepare_setting(setting, shared, trajectory, update_key, param_key)
        console.print(
            f"[dim]{setting.name}: compiled in {record['compile_s']:.1f} s, "
            f"warm-up call {record['warmup_s']:.2f} s, partition {record['partition']}[/]"
        )
        timers[setting.name] = timer
        records.append(record)
    setup_s = time.perf_counter() - start
    console.print(f"[dim]setup {setup_s:.0f} s; timing {args.repeats} interleaved repeats[/]")

    times = interleaved(timers, args.repeats)
    for r in records:
        r["times_s"] = times[r["setting"]]
        r["best_s"] = min(r["times_s"])
        r["median_s"] = statistics.median(r["times_s"])
    add_ratios(records)

    total = time.perf_counter() - start
    load_after = os.getloadavg()
    title = (
        f"Update seconds per round, {args.env} (n={num_agents}), {args.num_envs} envs x "
        f"{args.rollout_len} steps, {args.epochs} epochs x {args.minibatches} minibatches, "
        f"hidden {args.hidden_size}; best of {args.repeats}"
    )
    if b2mapo_extra:
        title += f"; B2MAPO with {b2mapo_extra}"
    console.print(results_table(records, title))
    console.print(
        f"[dim]/ MAPPO / K: the round's cost per batch in MAPPO rounds (best over best); target: "
        f"B2MAPO and A2PO at K batches within K x {TARGET_PER_BATCH} of MAPPO; paired / K: "
        f"median over repeats of the same ratio within each repeat (a noise check). "
        f"Load average before/after "
        f"{load_before[0]:.2f}/{load_after[0]:.2f} on {os.cpu_count()} CPUs; "
        f"total {total:.0f} s (setup {setup_s:.0f} s).[/]"
    )

    result = {
        "machine": machine_info(),
        "settings": {
            **shared,
            "repeats": args.repeats,
            "b2mapo_extra_overrides": b2mapo_extra,
            "quick": args.quick,
            "num_agents": num_agents,
            "target_per_batch": TARGET_PER_BATCH,
        },
        "load_average_before": list(load_before),
        "load_average_after": list(load_after),
        "trajectory_s": rollout_s,
        "setup_s": setup_s,
        "total_runtime_s": total,
        "results": records,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
