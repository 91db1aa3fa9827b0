"""Round-pieces benchmark: what each piece of a MAPPO and a B2MAPO round costs, so that the
gap between their rounds can be attributed (``docs/algorithms.md``).

``round_time.py`` times the real training chunk; this script splits a round into the pieces
``Trainer`` composes it of and times each compiled on its own, on the same data, with the
seeds vmapped as in the chunk: MAPPO's rollout and engine update; B2MAPO's rollout (π batch
by batch on the generator's DAGs, π_ind following), π's engine update, the generator's PPO,
the teacher pass (the updated π's logits over the rollout) and π_ind's update; and each
algorithm's whole round. Pieces compiled apart overlap less than inside one program, so
their sum exceeds the round a little. Best of ``--repeats`` calls after a warm-up::

    .venv/bin/python benchmarks/round_pieces.py                   # smax:3m, 3 seeds
    .venv/bin/python benchmarks/round_pieces.py --env smax:8m_vs_9m --seeds 2

It prints a table and writes the figures and machine information to ``--out`` (default
``benchmarks/results/round_pieces.json``; git-ignored).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
from rich.console import Console
from rich.table import Table
from timing import machine_info

from b2mapo.config import resolve
from b2mapo.rollout import Distillation
from b2mapo.train import Collected, RunnerState, Trainer

DEFAULT_OUT = Path(__file__).parent / "results" / "round_pieces.json"


def best_seconds(fn: Callable[..., Any], *args: Any, repeats: int) -> tuple[float, Any]:
    """Best wall seconds of ``fn(*args)`` over ``repeats`` calls after one warm-up call."""
    out = jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return min(times), out


def over_seeds(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` compiled and mapped over the leading seed axis of every argument."""
    return jax.jit(jax.vmap(fn))


def mappo_pieces(trainer: Trainer, state: RunnerState, repeats: int) -> dict[str, float]:
    """MAPPO's rollout, engine update and whole round."""
    seconds = {}
    collect = over_seeds(lambda s: trainer.collect(s, s.key))
    seconds["rollout"], collected = best_seconds(collect, state, repeats=repeats)
    update = over_seeds(lambda s, c: trainer.update_joint(s, c, s.key))
    seconds["pi_update"], _ = best_seconds(update, state, collected, repeats=repeats)
    round_fn = over_seeds(lambda s: trainer._round(s, None))
    seconds["round"], _ = best_seconds(round_fn, state, repeats=repeats)
    return seconds


def b2mapo_pieces(trainer: Trainer, state: RunnerState, repeats: int) -> dict[str, float]:
    """B2MAPO's rollout, π's update, the generator's, the teacher pass, π_ind's, the round."""
    seconds = {}
    collect = over_seeds(lambda s: trainer.collect(s, s.key))
    seconds["rollout"], collected = best_seconds(collect, state, repeats=repeats)
    update = over_seeds(lambda s, c: trainer.update_joint(s, c, s.key))
    seconds["pi_update"], (learner, _) = best_seconds(update, state, collected, repeats=repeats)
    generator = over_seeds(lambda s, c: trainer.update_generator(s, c, s.key))
    seconds["generator_update"], _ = best_seconds(generator, state, collected, repeats=repeats)
    teacher = over_seeds(lambda actor, c: trainer.teacher_logits(actor, c.trajectory))
    seconds["teacher_pass"], logits = best_seconds(
        teacher, learner.params["actor"], collected, repeats=repeats
    )

    def derived_update(s: RunnerState, c: Collected, logits: jax.Array) -> Any:
        teacher = Distillation(logits, jnp.ones_like(c.trajectory.transitions.reward))
        return trainer.update_derived(s, c, teacher, s.key)

    seconds["ind_update"], _ = best_seconds(
        over_seeds(derived_update), state, collected, logits, repeats=repeats
    )
    round_fn = over_seeds(lambda s: trainer._round(s, None))
    seconds["round"], _ = best_seconds(round_fn, state, repeats=repeats)
    return seconds


PIECES = {
    "rollout": "rollout",
    "pi_update": "π's engine update",
    "generator_update": "generator's PPO",
    "teacher_pass": "teacher pass",
    "ind_update": "π_ind's update",
    "round": "whole round",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="smax:3m")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    figures: dict[str, dict[str, float]] = {}
    for algo, pieces in (("mappo", mappo_pieces), ("b2mapo", b2mapo_pieces)):
        cfg = resolve({"env": args.env, "algo": algo, "seeds": args.seeds, "eval_every": 0})
        trainer = Trainer(cfg)
        figures[algo] = pieces(trainer, trainer.init(), args.repeats)
    table = Table(
        title=f"Seconds per round piece, {args.env}, {args.seeds} seeds, best of {args.repeats}"
    )
    for column in ("piece", "MAPPO s", "B2MAPO s"):
        table.add_column(column, justify="left" if column == "piece" else "right")
    for key, label in PIECES.items():
        mappo = figures["mappo"].get(key)
        table.add_row(
            label, "" if mappo is None else f"{mappo:.3f}", f"{figures['b2mapo'][key]:.3f}"
        )
    ratio = figures["b2mapo"]["round"] / figures["mappo"]["round"]
    table.caption = f"B2MAPO's round {ratio:.2f} x MAPPO's"
    Console().print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "settings": vars(args) | {"out": str(args.out)},
        "machine": machine_info(),
        "seconds": figures,
        "round_ratio": ratio,
    }
    args.out.write_text(json.dumps(record, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
