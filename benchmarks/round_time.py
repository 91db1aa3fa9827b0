"""Round-time benchmark: update-phase seconds per round of MAPPO, HAPPO, A2PO, the B2MAPO
scheme at K = 1, 2, 4 and n fixed batches, and full B2MAPO (learned DAG generator, joint policy
π and derived policy π_ind), all on one map and timed in one interleaved run.

Targets (from the issue): the B2MAPO scheme at K batches costs at most K x 1.15 of MAPPO's
round, A2PO at n agents at most n x 1.15; and B2MAPO's update round on an 8+ agent map costs at
most 0.5 x A2PO's (the paper reports 0.396).

For MAPPO, HAPPO, A2PO and the fixed-K rows, what is timed is exactly the update call of
``Trainer._round``::

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
  for k in 1, 2, 4, n (values above n dropped, duplicates merged);
* ``B2MAPO (learned)``: preset ``b2mapo`` (``partition="learned"``), timed as training runs
  its update phase: ``Trainer.update_learned(state, collected, key)``, i.e. π by the engine
  on the DAGs' batches, the generator's PPO update on the periods and π_ind's update with
  distillation from the updated π;
* ``B2MAPO π only (learned DAGs)``: the first part of that alone, ``batch_sequential_update``
  with the ``b2mapo`` trainer's networks, partitioner and config on the same trajectory and
  with the key ``update_learned`` hands the engine, so that the difference to the row above
  is what the generator and π_ind add.

The learned rows cannot use MAPPO's trajectory: they need the DAG periods and the batch index
the DAGs set per step. Their state is seed 0 of ``Trainer.init()``; ``Trainer.collect_learned``
runs once from reset and is thrown away (its env loop and generator state are kept), then the
kept rollout is collected, so that it too starts mid-episode. Their K is not fixed: the engine
runs as many stages as the largest K of the round (``num_batches`` in the metrics, the K
column's "max"), while the "/ MAPPO / K" column divides by the mean K of the sampled DAGs
(``dag_num_batches``); the K x 1.15 verdict is not given for them, the 0.5 x A2PO verdict is
(for the full row). These rows measure the initial generator, whose K depends on
``dag_keep_init``: the default 0.2 keeps a fifth of the candidate dependencies, i.e. sparse
DAGs at the start, but with near-uniform initial attention every pair of agents is a
candidate, so on 8 agents a fifth of the 28 pairs already layers into several batches (the
setup line prints how many DAGs had each K). K during training is in a run's metrics
(``dag_num_batches``, and ``num_batches`` for the largest); ``--b2mapo-set
dag_keep_init=0.5`` shows a denser DAG (lower values a sparser one).

Every setting is warmed up once, then all are timed round-robin ``--repeats`` times and the
best time of each is kept, so that a burst of outside load hits all settings alike. The
table gives each setting's update seconds per round, the ratio to MAPPO, that ratio over K
(the per-batch target: ratio / K <= 1.15), the ratio to A2PO and the A2PO target's verdict.
The engine's reported ``num_batches`` is checked against the expected K for every fixed
setting, and for the learned rows against the largest K of the sampled DAGs.

Run it from the repository root::

    .venv/bin/python benchmarks/round_time.py            # 8m_vs_9m, 32 envs, 5 repeats: ~3-3.5 min
    .venv/bin/python benchmarks/round_time.py --quick    # 16 envs, 2 repeats: ~2.5 min
    .venv/bin/python benchmarks/round_time.py --env smax:10m_vs_11m --num-envs 64
    .venv/bin/python benchmarks/round_time.py --b2mapo-set ratio=per_agent  # a B2MAPO variant
    .venv/bin/python benchmarks/round_time.py --b2mapo-set dag_keep_init=0.5  # denser DAGs

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
from b2mapo.train import LearnedRollout, RunnerState, Trainer

DEFAULT_OUT = Path(__file__).parent / "results" / "round_time.json"
TARGET_PER_BATCH = 1.15  # the budget: K batches cost at most K x 1.15 of MAPPO's round
TARGET_TO_A2PO = 0.5  # the budget: B2MAPO's update round at most 0.5 x A2PO's (8+ agents)
PAPER_TO_A2PO = 0.396  # the ratio the B2MAPO paper reports
B2MAPO_BATCHES = (1, 2, 4)  # plus n
LEARNED = "b2mapo_learned"  # family of the full B2MAPO row
LEARNED_JOINT = "b2mapo_learned_pi"  # family of its π-only row


# ---------------------------------------------------------------------------------------------
# Settings
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Setting:
    """One measured configuration: a label, the config overrides and the expected K."""

    name: str
    family: str  # mappo, happo, a2po, b2mapo (fixed K) or b2mapo_learned
    overrides: dict[str, Any]
    num_batches: int | None  # None: the learned generator chooses K


def settings_for(num_agents: int, b2mapo_extra: dict[str, Any]) -> list[Setting]:
    """MAPPO, HAPPO, A2PO, the B2MAPO scheme at K = 1, 2, 4, n (K <= n, no duplicates) and
    full B2MAPO; ``b2mapo_extra`` overrides further fields of the B2MAPO settings only."""
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
    learned = {**b2mapo_extra, "algo": "b2mapo", "partition": "learned"}
    out.append(Setting("B2MAPO (learned)", LEARNED, learned, None))
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
    """Compile a fixed-K setting's update on its view of the trajectory; a timer and a
    record."""
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


def collect_learned(trainer: Trainer, key: jax.Array) -> tuple[RunnerState, LearnedRollout]:
    """Seed 0 of a fresh B2MAPO runner state and one ``collect_learned`` rollout of it.

    A first rollout from reset is thrown away and its env loop and generator state taken
    over, so the kept one starts mid-episode (as ``collect_trajectory``'s)."""
    state = jax.tree.map(lambda x: x[0], trainer.init())
    warm_key, key = jax.random.split(key)
    collect = jax.jit(trainer.collect_learned)
    thrown = collect(state, warm_key)
    state = state._replace(loop=thrown.loop, upper_carry=thrown.upper_carry)
    return state, jax.block_until_ready(collect(state, key))


def prepare_learned(
    setting: Setting, shared: dict[str, Any], key: jax.Array
) -> list[tuple[Timed, dict[str, Any]]]:
    """Compile full B2MAPO's update phase and π's engine update alone, both on one learned
    rollout; a timer and a record for each (the full row first)."""
    cfg = resolve({**shared, **setting.overrides})
    trainer = Trainer(cfg)
    collect_key, update_key = jax.random.split(key)
    start = time.perf_counter()
    state, collected = collect_learned(trainer, collect_key)
    collect_s = time.perf_counter() - start
    dag_batches = collected.periods.num_batches
    mean_k, max_k = float(dag_batches.mean()), int(dag_batches.max())
    values, counts = jnp.unique(dag_batches, return_counts=True)
    k_counts = {int(v): int(c) for v, c in zip(values, counts, strict=True)}

    full, full_compile_s = compile_timed(
        jax.jit(trainer.update_learned), state, collected, update_key
    )
    # π's part of the update, with the key update_learned hands the engine.
    engine_key = jax.random.split(update_key, 3)[0]

    def joint_update(
        learner: LearnerState, trajectory: Trajectory, key: jax.Array
    ) -> tuple[LearnerState, dict[str, jax.Array]]:
        return batch_sequential_update(
            learner, trajectory, key, trainer.networks, trainer.partitioner, cfg
        )

    joint, joint_compile_s = compile_timed(
        jax.jit(joint_update), state.learner, collected.trajectory, engine_key
    )
    # Warm-up calls, which also check K: the engine runs the largest K of the sampled DAGs.
    out: list[tuple[Timed, dict[str, Any]]] = []
    runs = (
        (setting.name, setting.family, full_compile_s, lambda: full(state, collected, update_key)),
        (
            "B2MAPO π only (learned DAGs)",
            LEARNED_JOINT,
            joint_compile_s,
            lambda: joint(state.learner, collected.trajectory, engine_key),
        ),
    )
    for name, family, compile_s, timer in runs:
        start = time.perf_counter()
        _, metrics = jax.block_until_ready(timer())
        warmup_s = time.perf_counter() - start
        engine_batches = int(metrics["num_batches"])
        if engine_batches != max_k:
            raise AssertionError(
                f"{name}: engine ran {engine_batches} batches, the largest DAG has {max_k}"
            )
        if family == LEARNED and abs(float(metrics["dag_num_batches"]) - mean_k) > 1e-5:
            raise AssertionError(
                f"{name}: dag_num_batches {float(metrics['dag_num_batches'])} != mean K {mean_k}"
            )
        record = {
            "setting": name,
            "family": family,
            "num_batches": mean_k,
            "max_num_batches": max_k,
            "engine_num_batches": engine_batches,
            "dag_num_batches_counts": k_counts,
            "overrides": setting.overrides,
            "config": cfg.to_dict(),
            "collect_s": collect_s,
            "compile_s": compile_s,
            "warmup_s": warmup_s,
        }
        out.append((timer, record))
    return out


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------


def family_record(records: list[dict[str, Any]], family: str) -> dict[str, Any]:
    """The record of a family that has a single row (mappo, a2po, the learned ones)."""
    (record,) = (r for r in records if r["family"] == family)
    return record


def add_ratios(records: list[dict[str, Any]]) -> None:
    """Ratios to MAPPO and A2PO, per batch (the mean K for the learned rows), the target
    verdicts and the learned round's split into π and the rest, in place."""
    mappo, a2po = family_record(records, "mappo"), family_record(records, "a2po")
    mappo_s, a2po_s, mappo_times = mappo["best_s"], a2po["best_s"], mappo["times_s"]
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
        in_a2po_target = r["family"] == LEARNED
        r["target_ratio_to_a2po"] = TARGET_TO_A2PO if in_a2po_target else None
        r["meets_a2po_target"] = r["ratio_to_a2po"] <= TARGET_TO_A2PO if in_a2po_target else None
    learned, joint = family_record(records, LEARNED), family_record(records, LEARNED_JOINT)
    learned["joint_share"] = joint["best_s"] / learned["best_s"]
    learned["generator_and_derived_s"] = learned["best_s"] - joint["best_s"]


def verdict(meets: bool | None, bound: float | None) -> str:
    """A table cell: ``-`` without a target, else yes/NO and the bound."""
    if meets is None:
        return "-"
    return f"{'[green]yes[/]' if meets else '[red]NO[/]'} (<= {bound:.2f})"


def batches_cell(r: dict[str, Any]) -> str:
    """K of a fixed setting; the mean and largest K of the sampled DAGs for a learned one."""
    if "max_num_batches" in r:
        return f"{r['num_batches']:.2f} (max {r['max_num_batches']})"
    return str(r["num_batches"])


def results_table(records: list[dict[str, Any]], title: str) -> Table:
    """One row per setting: times, ratios and both target verdicts."""
    table = Table(title=title)
    cols = (
        "setting",
        "K",
        "update s",
        "median s",
        "/ MAPPO",
        "/ MAPPO / K",
        f"/ MAPPO / K <= {TARGET_PER_BATCH}",
        "paired / K",
        "/ A2PO",
        f"/ A2PO <= {TARGET_TO_A2PO}",
    )
    for col in cols:
        table.add_column(col, justify="left" if col == "setting" else "right")
    for r in records:
        table.add_row(
            r["setting"],
            batches_cell(r),
            f"{r['best_s']:.3f}",
            f"{r['median_s']:.3f}",
            f"{r['ratio_to_mappo']:.2f}",
            f"{r['ratio_per_batch']:.3f}",
            verdict(r["meets_target"], r["target_ratio"]),
            f"{r['paired_ratio_per_batch_median']:.3f}",
            f"{r['ratio_to_a2po']:.2f}",
            verdict(r["meets_a2po_target"], r["target_ratio_to_a2po"]),
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
    parser.add_argument("--quick", action="store_true", help="16 envs, 2 repeats (a smoke run)")
    args = parser.parse_args(argv)
    if args.quick:
        args.num_envs, args.repeats = 16, 2
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    console = Console(width=max(Console().width, 160))
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
        if setting.num_batches is None:
            prepared = prepare_learned(setting, shared, update_key)
        else:
            prepared = [prepare_setting(setting, shared, trajectory, update_key, param_key)]
        for timer, record in prepared:
            if "partition" in record:
                layout = f"partition {record['partition']}"
            else:
                layout = (
                    f"own rollout collected in {record['collect_s']:.1f} s, K of its "
                    f"{sum(record['dag_num_batches_counts'].values())} DAGs (count per K): "
                    f"{record['dag_num_batches_counts']}"
                )
            console.print(
                f"[dim]{record['setting']}: compiled in {record['compile_s']:.1f} s, "
                f"warm-up call {record['warmup_s']:.2f} s, {layout}[/]"
            )
            timers[record["setting"]] = timer
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
    title += (
        f"; target: B2MAPO (learned) / A2PO <= {TARGET_TO_A2PO} on 8+ agents "
        f"(paper: {PAPER_TO_A2PO})"
    )
    console.print(results_table(records, title))
    learned = family_record(records, LEARNED)
    console.print(
        f"B2MAPO (learned): π's engine update {learned['joint_share']:.0%} of its round; the "
        f"generator and π_ind add {learned['generator_and_derived_s']:.3f} s. Target: B2MAPO's "
        f"round at most {TARGET_TO_A2PO} x A2PO's (paper: {PAPER_TO_A2PO}); here "
        f"{learned['ratio_to_a2po']:.3f}."
    )
    console.print(
        f"[dim]/ MAPPO / K: the round's cost per batch in MAPPO rounds (best over best); target: "
        f"B2MAPO and A2PO at K batches within K x {TARGET_PER_BATCH} of MAPPO; paired / K: "
        f"median over repeats of the same ratio within each repeat (a noise check). Learned "
        f"rows: K is the mean over the sampled DAGs (the engine runs the largest, 'max'); these "
        f"are the initial generator's DAGs (dag_keep_init "
        f"{learned['config']['dag_keep_init']}); full row: π's engine update, the generator's "
        f"update and π_ind's with distillation (Trainer.update_learned). "
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
            "target_ratio_to_a2po": TARGET_TO_A2PO,
            "paper_ratio_to_a2po": PAPER_TO_A2PO,
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
