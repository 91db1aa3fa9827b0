"""Score the generator of a probe:coupled run per seed: how often its greedy DAGs separate the
true pairs, and how often its sampled DAGs keep true and other pairs (issue 33's targets).

    python benchmarks/dag_learning.py RUN_DIR [--label NAME] [--out FILE.json]

Greedy separation is ``recovery.separation_frequency``; the sampled keep rate plays the
generator at the same kind of start states with sampled DAGs and actions, as in training.
"""

from __future__ import annotations

import argparse
import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np

from b2mapo import dag_plots
from b2mapo.reproduce import recovery
from b2mapo.upper.history import generator_at

STATES = 128


def sampled_keep(trainer: Any, policies: Any, states: int = STATES) -> np.ndarray:
    """Fraction ``[n, n]`` of one seed's sampled DAGs keeping each pair, over ``states``
    start states spread over the first periods of an episode."""
    keys = jax.random.split(jax.random.PRNGKey(recovery.RECOVERY_KEY + 1), states)
    kept = []
    for periods in range(recovery.MAX_PERIOD_OFFSETS):
        chunk = keys[periods :: recovery.MAX_PERIOD_OFFSETS]
        kept.append(np.asarray(_program(trainer.round, periods)(policies, chunk)))
    return np.concatenate(kept).mean(axis=0)


@functools.cache
def _program(learned: Any, periods: int) -> Callable[[Any, jax.Array], jax.Array]:
    def keep(policies: Any, key: jax.Array) -> jax.Array:
        return generator_at(learned, policies, key, periods, False)[1].keep

    return jax.jit(jax.vmap(keep, in_axes=(None, 0)))


def score(run_dir: Path) -> list[dict[str, Any]]:
    """Per seed: true_separated (greedy), true_kept and other_kept (sampled), and the
    per-pair numbers of the true pairs."""
    trainer, _, state = dag_plots.load_checkpoint(run_dir, None)
    truth = np.triu(trainer.env.true_dependencies(), k=1)
    others = np.triu(~truth & ~truth.T, k=1)
    rows = []
    for seed in range(trainer.cfg.seeds):
        apart = recovery.separation_frequency(run_dir, states=STATES, seed_index=seed)
        policies = jax.tree.map(lambda x, seed=seed: x[seed], trainer.policies(state))
        kept = sampled_keep(trainer, policies)
        rows.append(
            {
                "seed_index": seed,
                "true_separated": float(apart[truth].mean()),
                "other_separated": float(apart[others].mean()),
                "true_kept": float(kept[truth].mean()),
                "other_kept": float(kept[others].mean()),
                "true_separated_per_pair": apart[truth].round(3).tolist(),
                "true_kept_per_pair": kept[truth].round(3).tolist(),
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--label", default="")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    rows = score(args.run_dir)
    for row in rows:
        print(
            f"{args.label} seed {row['seed_index']}: true separated {row['true_separated']:.2f}"
            f" (other {row['other_separated']:.2f}), kept true {row['true_kept']:.2f}"
            f" other {row['other_kept']:.2f}"
        )
    if args.out:
        args.out.write_text(json.dumps({"label": args.label, "seeds": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
