"""Execution-time benchmark: what a decision costs B2MAPO's executed policies against MAPPO's
actor, per decision (one env) and in throughput (many envs), on one 8+ agent map.

B2MAPO trains a joint policy π that acts batch by batch (the agents of batch k see the actions
just chosen by batches < k: the GRU runs once and the policy head once per batch, K passes in
sequence) and executes with a derived decentralised policy π_ind that acts on each agent's
own history alone, in one pass like MAPPO's actor. This benchmark checks its targets:
π_ind's per-decision latency within 1.1x of MAPPO's, and π's latency growing with K.

What is timed is one jitted, AOT-compiled call that chooses every agent's action for one
step and returns the new GRU carry with the actions; its inputs (parameters, carry,
observations, availability masks, key) are already on the device, and the clock stops at
``block_until_ready``. No environment step is timed. The rows, all with the same env and
hidden size:

* ``MAPPO actor``: ``networks.policy_step`` of ``Trainer(resolve({"algo": "mappo", ...}))``
  with a single-batch partition;
* ``π_ind``: ``trainer.round.execute`` of a ``b2mapo`` config (its default derived policy,
  as ``b2mapo.load_policy`` executes it);
* ``π K=k``: ``networks.policy_step`` of the same ``b2mapo`` config's networks, on a
  ``random_k`` partition into k batches, for k in 1, 2, 4, n (k <= n, no duplicates): one
  compiled program for every k, since K is data (``batch_index``), not a shape;
* ``DAG generator`` (reference): ``trainer.round.upper.act``, which samples π's batches when π
  executes on learned DAGs. It runs once every ``dag_period`` steps, so π's per-step cost on
  learned DAGs is π's at the DAG's K plus this row's divided by ``dag_period``.

Parameters are each trainer's fresh initial ones (``trainer.policies(trainer.init())``, seed
0): a call's cost does not depend on their values. Observations and masks come from env
resets; actions are sampled (with ``--greedy``, the most likely ones). A2PO is not timed:
its actor is unconditioned (``condition_on_actions=False`` in the ``a2po`` preset), so at
execution all its agents act at once with exactly MAPPO's actor. Instead of timing a
duplicate, the benchmark checks that A2PO's lowered program is the MAPPO actor's, and does
the same for π_ind, whose ratio to MAPPO is then 1 by construction (its spread is noise).

Two batch sizes are measured: 1 env (per-decision latency; on CPU a call this small is
dominated by dispatch overhead, so this is the latency an agent sees rather than the
arithmetic) and ``--num-envs`` envs in one call (throughput: joint decisions per second, one
decision = one env's n actions for one step). At each size every row is compiled and warmed
up, then all are timed round-robin with ``timing.interleaved``, the order rotated every
round, so that outside load hits them alike; at 1 env each time is the mean of
``--latency-calls`` back-to-back blocked calls. The table gives each row's best and median
time, its best over MAPPO's best, and the median over rounds of its time over MAPPO's in the
same round ("paired"). The verdicts use paired medians (see ``add_verdicts``).

Run it from the repository root::

    .venv/bin/python benchmarks/exec_time.py            # 8m_vs_9m, 256 envs: ~1 min
    .venv/bin/python benchmarks/exec_time.py --quick    # 64 envs, fewer rounds: ~40 s
    .venv/bin/python benchmarks/exec_time.py --env smax:10m_vs_11m --hidden-size 128

It prints a table and writes every figure, plus machine information and the load average
before and after, to ``--out`` (default ``benchmarks/results/exec_time.json``; git-ignored).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from rich.console import Console
from rich.table import Table

from b2mapo.config import TrainConfig, resolve
from b2mapo.networks import Networks, Params
from b2mapo.partition import random_k
from b2mapo.reproduce.timing import Timed, compile_timed, interleaved, machine_info
from b2mapo.state import Policies
from b2mapo.train import Trainer
from b2mapo.upper.generator import UpperCarry, UpperLayer

DEFAULT_OUT = Path(__file__).parent / "results" / "exec_time.json"
TARGET_IND = 1.1  # the budget: π_ind's per-decision latency within 1.1x of MAPPO's
JOINT_BATCHES = (1, 2, 4)  # plus n

Decision = Callable[..., tuple[Any, jax.Array]]


# ---------------------------------------------------------------------------------------------
# The timed calls
# ---------------------------------------------------------------------------------------------


def actor_decision(networks: Networks, greedy: bool) -> Decision:
    """One step of ``networks``' actor for all agents: (new carry, actions)."""

    def decide(
        params: Params,
        carry: jax.Array,
        obs: jax.Array,
        first: jax.Array,
        avail: jax.Array,
        batch_index: jax.Array,
        key: jax.Array,
    ) -> tuple[jax.Array, jax.Array]:
        carry, actions, _ = networks.policy_step(
            params, carry, obs, first, avail, batch_index, key, greedy
        )
        return carry, actions

    return decide


def generator_decision(upper: UpperLayer, greedy: bool) -> Decision:
    """One DAG sample for every env: (new generator carry, batch index ``[E, n]``)."""

    def decide(
        params: Params, carry: UpperCarry, obs: jax.Array, state: jax.Array, key: jax.Array
    ) -> tuple[UpperCarry, jax.Array]:
        carry, _, _, batch_index = upper.act(params, carry, obs, state, key, greedy)
        return carry, batch_index

    return decide


class Inputs(NamedTuple):
    """What the policies see at one step of ``E`` envs, on the device."""

    obs: jax.Array  # [E, n, obs_dim]
    state: jax.Array  # [E, state_dim]
    avail: jax.Array  # [E, n, A]
    first: jax.Array  # [E], all false: mid-episode
    carry: jax.Array  # [E, n, h], the actors' GRU state
    upper_carry: UpperCarry
    key: jax.Array


def make_inputs(b2mapo: Trainer, num_envs: int, key: jax.Array) -> Inputs:
    """Observations, state and masks of ``num_envs`` freshly reset envs, zero carries."""
    reset_key, action_key = jax.random.split(key)
    _, ts = jax.vmap(b2mapo.env.reset)(jax.random.split(reset_key, num_envs))
    inputs = Inputs(
        ts.obs,
        ts.state,
        ts.avail,
        jnp.zeros((num_envs,), bool),
        b2mapo.networks.initial_carry((num_envs,)),
        b2mapo.round.upper.initial_carry(num_envs),
        action_key,
    )
    return jax.block_until_ready(inputs)


ArgsFn = Callable[[Inputs], tuple[Any, ...]]


def actor_args(params: Params, batch_index: jax.Array) -> ArgsFn:
    """The arguments of an actor (or π_ind) decision with ``params`` on a partition."""
    return lambda x: (params, x.carry, x.obs, x.first, x.avail, batch_index, x.key)


@dataclass(frozen=True)
class Row:
    """One timed policy; rows that share ``fn`` share one compiled program (π at every K)."""

    name: str
    family: str  # mappo, pi_ind, pi or generator
    num_batches: int | None
    fn: Decision
    args: ArgsFn


def joint_batch_counts(num_agents: int) -> list[int]:
    """K = 1, 2, 4, n, at most n, without duplicates."""
    return sorted({k for k in (*JOINT_BATCHES, num_agents) if k <= num_agents})


def initial_policies(trainer: Trainer) -> Policies:
    """The acting parameters of seed 0 of a fresh runner state."""
    return trainer.policies(jax.tree.map(lambda x: x[0], trainer.init()))


def build_rows(mappo: Trainer, b2mapo: Trainer, key: jax.Array, greedy: bool) -> list[Row]:
    """MAPPO's actor first (the ratios' reference), π_ind, π at every K, the DAG generator;
    all sampling, or all taking the most likely action (``greedy``)."""
    n = mappo.env.spec.num_agents
    mappo_params, b2mapo_params = initial_policies(mappo), initial_policies(b2mapo)
    single = jnp.zeros((n,), jnp.int32)
    assert b2mapo_params.derived is not None and b2mapo_params.upper is not None
    upper_params = b2mapo_params.upper
    # Only the actor's parameters, as for MAPPO: the critic's would be dropped by ``jit`` but
    # still flattened on every call, a few µs of dispatch at 1 env that acting never needs.
    derived_params = {"actor": b2mapo_params.derived["actor"]}
    rows = [
        Row(
            "MAPPO actor",
            "mappo",
            1,
            actor_decision(mappo.networks, greedy),
            actor_args(mappo_params.joint["actor"], single),
        ),
        Row(
            "π_ind",
            "pi_ind",
            1,
            partial(b2mapo.round.execute, greedy=greedy),
            actor_args(derived_params, single),
        ),
    ]
    joint = actor_decision(b2mapo.networks, greedy)
    for k in joint_batch_counts(n):
        batch_index = random_k(n, k)(key, jnp.zeros((n,)))
        rows.append(
            Row(f"π K={k}", "pi", k, joint, actor_args(b2mapo_params.joint["actor"], batch_index))
        )
    rows.append(
        Row(
            "DAG generator",
            "generator",
            None,
            generator_decision(b2mapo.round.upper, greedy),
            lambda x: (upper_params, x.upper_carry, x.obs, x.state, x.key),
        )
    )
    return rows


def lowered_text(fn: Decision, args: tuple[Any, ...]) -> str:
    """The StableHLO of ``jit(fn)`` on ``args``, without the module's (function's) name."""
    return re.sub(r"module @\S+", "module", jax.jit(fn).lower(*args).as_text(), count=1)


# ---------------------------------------------------------------------------------------------
# Measurement
# ---------------------------------------------------------------------------------------------


def blocked_calls(program: Any, args: tuple[Any, ...], calls: int) -> Timed:
    """``calls`` back-to-back calls, each waiting for the previous one's outputs (as a control
    loop waits for its decision), the last one left for the caller to wait on."""

    def run() -> Any:
        for _ in range(calls - 1):
            jax.block_until_ready(program(*args))
        return program(*args)

    return run


def rotating(timers: dict[str, Timed], rounds: int) -> dict[str, list[float]]:
    """``timing.interleaved`` one round at a time, the order rotated by one each round, so
    that no row always runs right after the same other row (e.g. π_ind after MAPPO)."""
    names = list(timers)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        shift = r % len(names)
        order = names[shift:] + names[:shift]
        for name, own in interleaved({name: timers[name] for name in order}, 1).items():
            times[name].extend(own)
    return times


def paired_median(times: list[float], reference: list[float]) -> float:
    """Median over rounds of ``times / reference`` within each round."""
    return statistics.median(t / r for t, r in zip(times, reference, strict=True))


def measure(
    rows: list[Row], inputs: Inputs, rounds: int, calls: int, console: Console
) -> list[dict]:
    """Compile and warm up every row on ``inputs``, then time all of them interleaved
    ``rounds`` times, each time ``calls`` blocked calls; one record per row with the seconds
    per call (the mean over each time's calls) and ratios to the first row (MAPPO's actor).

    Averaging a few calls per time smooths the bimodal dispatch latency of tiny calls (a
    worker thread is either awake or not), which makes a best-of of single calls unstable."""
    num_envs, num_agents = inputs.obs.shape[:2]
    compiled: dict[Decision, tuple[Any, float]] = {}
    timers: dict[str, Timed] = {}
    for row in rows:
        args = row.args(inputs)
        if row.fn not in compiled:
            compiled[row.fn] = compile_timed(jax.jit(row.fn), *args)
        program = compiled[row.fn][0]
        timers[row.name] = blocked_calls(program, args, calls)
        jax.block_until_ready(timers[row.name]())  # warm-up
    compile_s = sum(seconds for _, seconds in compiled.values())
    console.print(
        f"[dim]{num_envs} env(s): {len(compiled)} programs compiled in {compile_s:.1f} s; "
        f"timing {rounds} interleaved rounds of {calls} call(s)[/]"
    )
    times = {name: [t / calls for t in own] for name, own in rotating(timers, rounds).items()}
    reference = times[rows[0].name]
    records = []
    for row in rows:
        own = times[row.name]
        best = min(own)
        records.append(
            {
                "policy": row.name,
                "family": row.family,
                "num_batches": row.num_batches,
                "num_envs": num_envs,
                "calls_per_time": calls,
                "compile_s": compiled[row.fn][1],
                "times_s": own,
                "best_s": best,
                "median_s": statistics.median(own),
                "ratio_to_mappo": best / min(reference),
                "paired_ratio_median": paired_median(own, reference),
                "decisions_per_s": num_envs / best,
                "agent_actions_per_s": num_envs * num_agents / best,
            }
        )
    return records


def add_verdicts(records: list[dict]) -> None:
    """In place: π_ind's ratio to MAPPO against the 1.1x budget, and whether each π K row
    costs more than the π row at the next smaller K.

    Both verdicts use ratios paired within rounds (their median over rounds): under outside
    load, tiny calls are fast or slow in streaks, so a best-of can come from a lucky streak
    of one row and not of another; a ratio within a round compares like with like."""
    previous: dict | None = None
    for r in records:
        pi_ind = r["family"] == "pi_ind"
        r["meets_target"] = r["paired_ratio_median"] <= TARGET_IND if pi_ind else None
        r["paired_ratio_to_previous_k"] = None
        r["grows_with_k"] = None
        if r["family"] == "pi":
            if previous is not None:
                ratio = paired_median(r["times_s"], previous["times_s"])
                r["paired_ratio_to_previous_k"] = ratio
                r["grows_with_k"] = ratio > 1.0
            previous = r


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------


def verdict(r: dict) -> str:
    """The row's target verdict, for the table."""
    if r["meets_target"] is not None:
        ok = "[green]yes[/]" if r["meets_target"] else "[red]NO[/]"
        return f"{ok} (<= {TARGET_IND:.2f})"
    if r["grows_with_k"] is not None:
        ratio = r["paired_ratio_to_previous_k"]
        return f"[green]x{ratio:.2f}[/]" if r["grows_with_k"] else f"[red]NO x{ratio:.2f}[/]"
    return "-"


def results_table(latency: list[dict], throughput: list[dict], title: str) -> Table:
    """One line per policy: its 1-env latency figures, then its throughput figures."""
    table = Table(title=title)
    num_envs = throughput[0]["num_envs"]
    cols = (
        "policy",
        "K",
        "1 env µs",
        "median µs",
        "/ MAPPO",
        "paired",
        "target",
        f"{num_envs} envs ms",
        "decisions/s",
        "/ MAPPO",
        "paired",
        "grows",
    )
    for col in cols:
        table.add_column(col, justify="left" if col == "policy" else "right")
    for one, many in zip(latency, throughput, strict=True):
        table.add_row(
            one["policy"],
            "-" if one["num_batches"] is None else str(one["num_batches"]),
            f"{one['best_s'] * 1e6:.1f}",
            f"{one['median_s'] * 1e6:.1f}",
            f"{one['ratio_to_mappo']:.3f}",
            f"{one['paired_ratio_median']:.3f}",
            verdict(one),
            f"{many['best_s'] * 1e3:.2f}",
            f"{many['decisions_per_s']:,.0f}",
            f"{many['ratio_to_mappo']:.3f}",
            f"{many['paired_ratio_median']:.3f}",
            verdict(many) if many["grows_with_k"] is not None else "-",
        )
    return table


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", default="smax:8m_vs_9m", help="map (8+ agents intended)")
    parser.add_argument(
        "--hidden-size", type=int, default=TrainConfig.hidden_size, help="MLP/GRU width"
    )
    parser.add_argument("--num-envs", type=int, default=256, help="envs per throughput call")
    parser.add_argument(
        "--latency-rounds", type=int, default=1000, help="interleaved rounds at 1 env"
    )
    parser.add_argument(
        "--latency-calls", type=int, default=20, help="blocked calls per time at 1 env"
    )
    parser.add_argument(
        "--throughput-rounds", type=int, default=200, help="interleaved rounds at --num-envs"
    )
    parser.add_argument(
        "--greedy", action="store_true", help="take the most likely actions instead of sampling"
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results file")
    parser.add_argument(
        "--quick", action="store_true", help="64 envs, 60 and 30 rounds (a ~40 s smoke run)"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.num_envs, args.latency_rounds, args.throughput_rounds = 64, 60, 30
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    console = Console(width=max(Console().width, 140))
    start = time.perf_counter()
    load_before = os.getloadavg()

    shared = {"env": args.env, "hidden_size": args.hidden_size}
    mappo = Trainer(resolve({**shared, "algo": "mappo"}))
    b2mapo = Trainer(resolve({**shared, "algo": "b2mapo"}))
    a2po_cfg = resolve({**shared, "algo": "a2po"})
    num_agents = mappo.env.spec.num_agents
    if num_agents < 8:
        console.print(f"[yellow]{args.env} has {num_agents} agents; the target is for 8+[/]")
    rows = build_rows(mappo, b2mapo, jax.random.PRNGKey(0), args.greedy)
    one = make_inputs(b2mapo, 1, jax.random.PRNGKey(1))
    many = make_inputs(b2mapo, args.num_envs, jax.random.PRNGKey(1))
    setup_s = time.perf_counter() - start
    console.print(f"[dim]trainers built and initialised in {setup_s:.1f} s[/]")

    # A2PO's actor and π_ind against MAPPO's actor, as programs (parameters have equal shapes).
    mappo_row, ind_row = rows[0], rows[1]
    mappo_text = lowered_text(mappo_row.fn, mappo_row.args(one))
    same_program = {
        "pi_ind": lowered_text(ind_row.fn, ind_row.args(one)) == mappo_text,
        "a2po": not a2po_cfg.condition_on_actions
        and lowered_text(
            actor_decision(Trainer(a2po_cfg).networks, args.greedy), mappo_row.args(one)
        )
        == mappo_text,
    }

    latency = measure(rows, one, args.latency_rounds, args.latency_calls, console)
    throughput = measure(rows, many, args.throughput_rounds, 1, console)
    add_verdicts(latency)
    add_verdicts(throughput)

    total = time.perf_counter() - start
    load_after = os.getloadavg()
    title = (
        f"Policy call time per step, {args.env} (n={num_agents}), hidden {args.hidden_size}: "
        f"1 env (best of {args.latency_rounds} means of {args.latency_calls} calls) and "
        f"{args.num_envs} envs (best of {args.throughput_rounds}); "
        f"{'greedy' if args.greedy else 'sampled'} actions"
    )
    console.print(results_table(latency, throughput, title))
    generator = latency[-1]
    console.print(
        f"[dim]/ MAPPO: best time over MAPPO actor's best; paired: median over rounds of the "
        f"time over MAPPO's in the same round; decisions/s: envs x steps per second (x "
        f"{num_agents} agent actions). Targets, on paired medians: π_ind within {TARGET_IND}x "
        f"of MAPPO at 1 env; π costs more at each larger K (x: paired median of its time over "
        f"π's at the previous K). The DAG generator runs once per dag_period="
        f"{b2mapo.cfg.dag_period} steps: {generator['best_s'] * 1e6 / b2mapo.cfg.dag_period:.1f}"
        f" µs per step at 1 env. Same lowered program as the MAPPO actor: π_ind "
        f"{same_program['pi_ind']}, A2PO's actor {same_program['a2po']} (A2PO is not timed). "
        f"Load average before/after {load_before[0]:.2f}/{load_after[0]:.2f} on "
        f"{os.cpu_count()} CPUs; total {total:.0f} s.[/]"
    )

    result = {
        "machine": machine_info(),
        "settings": {
            **shared,
            "num_agents": num_agents,
            "num_envs": args.num_envs,
            "latency_rounds": args.latency_rounds,
            "latency_calls": args.latency_calls,
            "throughput_rounds": args.throughput_rounds,
            "quick": args.quick,
            "greedy": args.greedy,
            "target_ind_ratio": TARGET_IND,
            "dag_period": b2mapo.cfg.dag_period,
            "b2mapo_config": b2mapo.cfg.to_dict(),
        },
        "same_program_as_mappo_actor": same_program,
        "load_average_before": list(load_before),
        "load_average_after": list(load_after),
        "setup_s": setup_s,
        "total_runtime_s": total,
        "latency": latency,
        "throughput": throughput,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
