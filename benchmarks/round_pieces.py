"""Round-pieces benchmark: what each piece of a MAPPO and a B2MAPO round costs, so that the
gap between their rounds can be attributed (``docs/algorithms.md``).

``round_time.py`` times the real training chunk; this script splits a round into the pieces
its round (``trainer.round``) composes it of and times each compiled on its own, on the same
data, with the seeds vmapped as in the chunk: MAPPO's rollout and engine update; B2MAPO's
rollout (π batch by batch on the generator's DAGs, π_ind following), π's engine update, the
generator's PPO, the teacher pass (the updated π's logits over the rollout) and π_ind's
update; and each algorithm's whole round. Pieces compiled apart overlap less than inside one
program, so their sum exceeds the round a little. Best of ``--repeats`` calls after a warm-up::

    .venv/bin/python benchmarks/round_pieces.py                   # smax:3m, 3 seeds
    .venv/bin/python benchmarks/round_pieces.py --env smax:8m_vs_9m --seeds 2

It prints a table and writes the figures and machine information to ``--out`` (default
``benchmarks/results/round_pieces.json``; git-ignored).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
from rich.console import Console
from rich.table import Table

from b2mapo.config import TrainConfig, resolve
from b2mapo.reproduce.timing import machine_info, run_timed
from b2mapo.rollout import Distillation
from b2mapo.state import Collected, RunnerState
from b2mapo.train import Trainer

DEFAULT_OUT = Path(__file__).parent / "results" / "round_pieces.json"


def best_seconds(fn: Callable[..., Any], *args: Any, repeats: int) -> tuple[float, Any]:
    """Best wall seconds of ``fn(*args)`` over ``repeats`` calls after one warm-up call, and
    the warm-up's outputs."""
    out = jax.block_until_ready(fn(*args))
    return min(run_timed(lambda: fn(*args)) for _ in range(repeats)), out


def over_seeds(trainer: Trainer, fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` compiled and mapped over the leading seed axis of every argument, as the
    trainer maps its chunk."""
    return jax.jit(trainer.over_seeds(fn, (0,) * fn.__code__.co_argcount))


def mappo_pieces(trainer: Trainer, state: RunnerState, repeats: int) -> dict[str, float]:
    """MAPPO's rollout, engine update and whole round."""
    seconds = {}
    collect = over_seeds(trainer, lambda s: trainer.round.collect(s, s.key))
    seconds["rollout"], collected = best_seconds(collect, state, repeats=repeats)
    update = over_seeds(trainer, lambda s, c: trainer.round.update_joint(s, c, s.key))
    seconds["pi_update"], _ = best_seconds(update, state, collected, repeats=repeats)
    round_fn = over_seeds(trainer, lambda s: trainer._round(s, None))
    seconds["round"], _ = best_seconds(round_fn, state, repeats=repeats)
    return seconds


def b2mapo_pieces(trainer: Trainer, state: RunnerState, repeats: int) -> dict[str, float]:
    """B2MAPO's rollout, π's update, the generator's, the teacher pass, π_ind's, the round."""
    seconds = {}
    collect = over_seeds(trainer, lambda s: trainer.round.collect(s, s.key))
    seconds["rollout"], collected = best_seconds(collect, state, repeats=repeats)
    update = over_seeds(trainer, lambda s, c: trainer.round.update_joint(s, c, s.key))
    seconds["pi_update"], (learner, _) = best_seconds(update, state, collected, repeats=repeats)
    generator = over_seeds(trainer, lambda s, c: trainer.round.update_generator(s, c, s.key))
    seconds["generator_update"], _ = best_seconds(generator, state, collected, repeats=repeats)
    teacher = over_seeds(
        trainer, lambda actor, c: trainer.round.teacher_logits(actor, c.trajectory)
    )
    seconds["teacher_pass"], logits = best_seconds(
        teacher, learner.params["actor"], collected, repeats=repeats
    )

    def derived_update(s: RunnerState, c: Collected, logits: jax.Array) -> Any:
        teacher = Distillation(logits, jnp.ones_like(c.trajectory.transitions.reward))
        return trainer.round.update_derived(s, c, teacher, s.key)

    seconds["ind_update"], _ = best_seconds(
        over_seeds(trainer, derived_update), state, collected, logits, repeats=repeats
    )
    round_fn = over_seeds(trainer, lambda s: trainer._round(s, None))
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
    parser.add_argument("--num-envs", type=int, default=TrainConfig.num_envs)
    parser.add_argument("--rollout-len", type=int, default=TrainConfig.rollout_len)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    figures: dict[str, dict[str, float]] = {}
    for algo, pieces in (("mappo", mappo_pieces), ("b2mapo", b2mapo_pieces)):
        cfg = resolve(
            {
                "env": args.env,
                "algo": algo,
                "seeds": args.seeds,
                "num_envs": args.num_envs,
                "rollout_len": args.rollout_len,
                "eval_every": 0,
            }
        )
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
