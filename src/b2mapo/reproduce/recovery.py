"""Does B2MAPO's DAG generator find the dependencies that are really there? Scores the pairs a
run's generator keeps against a planted graph (``probe:coupled``'s ``true_dependencies``).

``learned_dependencies`` reads a checkpoint and runs the generator's most likely DAG at many
start states (different resets, and some periods into the episode, π playing greedily in
between); a pair it keeps in more than ``threshold`` of them is a learned dependency.
``score_dependencies`` gives precision and recall over unordered pairs, and
``recovery_over_training`` does both for every checkpoint of one or more runs.

A kept pair is sufficient, not necessary, for what B2MAPO's reward pays for: two agents in
different batches, the later one seeing the earlier one's action. With at most two batches
any kept edge into an agent moves it to the second batch, so ``separation_frequency`` (how
often two agents are in different batches) is reported next to the kept pairs.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np

from b2mapo import dag_plots, rundir
from b2mapo.config import TrainConfig
from b2mapo.envs.registry import is_host
from b2mapo.errors import ConfigError
from b2mapo.state import Policies
from b2mapo.train import Trainer
from b2mapo.upper.dag import edges, layering
from b2mapo.upper.history import generator_at

# Key of the start states the generator is probed at (other than the figures' key, so that
# the probe does not only see the states ``b2mapo plot`` draws).
RECOVERY_KEY = 11
# Start states are spread over this many period offsets into the episode at most (each
# offset is one more compiled program).
MAX_PERIOD_OFFSETS = 4


def _as_graph(name: str, graph: Any) -> np.ndarray:
    """``graph`` as a square symmetric bool matrix without self-loops, or a ``ValueError``."""
    array = np.asarray(graph)
    if array.ndim != 2 or array.shape[0] != array.shape[1]:
        raise ValueError(f"{name} must be a square [n, n] matrix, got shape {array.shape}")
    if array.dtype != bool:
        if not np.isin(array, (0, 1)).all():
            raise ValueError(f"{name} must be boolean (or 0/1), got values {np.unique(array)}")
        array = array.astype(bool)
    if not np.array_equal(array, array.T):
        i, j = np.argwhere(array != array.T)[0]
        raise ValueError(
            f"{name} must be symmetric (dependencies are unordered pairs): "
            f"[{i}, {j}] is {array[i, j]} but [{j}, {i}] is {array[j, i]}"
        )
    if array.diagonal().any():
        raise ValueError(f"{name} has True on its diagonal: an agent cannot depend on itself")
    return array


def _ratio(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else math.nan


def score_dependencies(kept: np.ndarray, truth: np.ndarray) -> dict[str, Any]:
    """Precision and recall of the kept pairs against the true ones, over unordered pairs
    ``i < j`` (both ``[n, n]``, symmetric, bool or 0/1, False diagonal: else ``ValueError``).

    ``precision`` = kept true pairs / kept pairs (NaN when nothing is kept), ``recall`` =
    kept true pairs / true pairs (NaN when there is no true pair), ``f1`` their harmonic
    mean (NaN if either is); also the counts and the ``spurious`` and ``missing`` pairs.
    """
    kept, truth = _as_graph("kept", kept), _as_graph("truth", truth)
    if kept.shape != truth.shape:
        raise ValueError(f"kept is {kept.shape} but truth is {truth.shape}: not the same agents")
    upper = np.triu(np.ones(kept.shape, dtype=bool), k=1)
    hits = kept & truth & upper
    spurious, missing = kept & ~truth & upper, truth & ~kept & upper
    tp, fp, fn = int(hits.sum()), int(spurious.sum()), int(missing.sum())
    precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    both = precision + recall
    f1 = 2 * precision * recall / both if both > 0 else (0.0 if both == 0 else math.nan)
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "true_positives": tp,
        "false_positives": fp,
        "false_negatives": fn,
        "kept_pairs": tp + fp,
        "true_pairs": tp + fn,
        "pairs": int(upper.sum()),
        "spurious": [(int(i), int(j)) for i, j in np.argwhere(spurious)],
        "missing": [(int(i), int(j)) for i, j in np.argwhere(missing)],
    }


def format_score(score: dict[str, Any]) -> str:
    """One line for a report: precision and recall with their counts, saying in words when
    either is undefined (nothing kept, nothing to find)."""
    tp, kept, true = score["true_positives"], score["kept_pairs"], score["true_pairs"]
    if kept:
        precision = f"precision {score['precision']:.2f} ({tp}/{kept} kept pairs are true)"
    else:
        precision = "precision undefined (no pair kept)"
    if true:
        recall = f"recall {score['recall']:.2f} ({tp}/{true} true pairs kept)"
    else:
        recall = "recall undefined (no true pair)"
    extra = [f"spurious {score['spurious']}"] if score["spurious"] else []
    extra += [f"missing {score['missing']}"] if score["missing"] else []
    return ", ".join([precision, recall, *extra])


class _Probe:
    """The generator's greedy DAG at many start states of one trainer's environment, one
    compiled ``jit(vmap)`` program per period offset, reused across checkpoints."""

    def __init__(self, trainer: Trainer) -> None:
        self.trainer = trainer
        cfg = trainer.cfg
        per_episode = math.ceil(trainer.env.spec.episode_limit / cfg.dag_period)
        self.offsets = max(1, min(per_episode, MAX_PERIOD_OFFSETS))
        self._programs: dict[int, Callable[[Policies, jax.Array], Any]] = {}

    def _program(self, periods: int) -> Callable[[Policies, jax.Array], Any]:
        if periods not in self._programs:
            trainer = self.trainer

            def dag(policies: Policies, key: jax.Array) -> tuple[jax.Array, jax.Array]:
                action = generator_at(trainer.round, policies, key, periods, True)[1]
                batch = layering(edges(action))
                return action.keep, batch[:, None] != batch[None, :]

            self._programs[periods] = jax.jit(jax.vmap(dag, in_axes=(None, 0)))
        return self._programs[periods]

    def frequencies(self, policies: Policies, states: int) -> tuple[np.ndarray, np.ndarray]:
        """Fractions ``[n, n]`` of the ``states`` greedy DAGs that keep each pair, and that
        put its agents in different batches: state ``s`` is a reset with its own key after
        ``s % offsets`` periods of greedy play."""
        if states < 1:
            raise ValueError(f"states={states} must be >= 1")
        keys = jax.random.split(jax.random.PRNGKey(RECOVERY_KEY), states)
        offset = np.arange(states) % self.offsets
        kept = np.zeros((self.trainer.env.spec.num_agents,) * 2)
        separated = np.zeros_like(kept)
        for periods in np.unique(offset):
            keep, apart = self._program(int(periods))(policies, keys[offset == periods])
            kept += np.asarray(keep).sum(axis=0)
            separated += np.asarray(apart).sum(axis=0)
        return kept / states, separated / states


@functools.lru_cache(maxsize=4)
def _probe(cfg: TrainConfig) -> _Probe:
    """The probe of a run's config: its compiled programs serve every checkpoint and every
    call on runs of that config."""
    if is_host(cfg.env):
        raise ConfigError(
            f"{cfg.env} is stepped in worker processes; the generator can only be probed on "
            "a JAX environment"
        )
    return _Probe(Trainer(cfg))


def _seed_policies(trainer: Trainer, state: Any, seed_index: int) -> Policies:
    seeds = trainer.cfg.seeds
    if not 0 <= seed_index < seeds:
        raise ConfigError(f"seed_index={seed_index} must be in 0..{seeds - 1} (the run's seeds)")
    return jax.tree.map(lambda x: x[seed_index], trainer.policies(state))


def _above(frequency: np.ndarray, threshold: float) -> np.ndarray:
    learned = frequency > threshold
    np.fill_diagonal(learned, False)
    return learned


def _frequencies(
    run_dir: Path, update: int | None, states: int, seed_index: int
) -> tuple[np.ndarray, np.ndarray]:
    trainer, _, state = dag_plots.load_checkpoint(Path(run_dir), update)
    return _probe(trainer.cfg).frequencies(_seed_policies(trainer, state, seed_index), states)


def keep_frequency(
    run_dir: Path, update: int | None = None, states: int = 64, seed_index: int = 0
) -> np.ndarray:
    """How often ``[n, n]`` (in [0, 1], symmetric, zero diagonal) the greedy DAG of a B2MAPO
    checkpoint (None: the newest) keeps each pair over ``states`` start states."""
    return _frequencies(run_dir, update, states, seed_index)[0]


def separation_frequency(
    run_dir: Path, update: int | None = None, states: int = 64, seed_index: int = 0
) -> np.ndarray:
    """How often ``[n, n]`` the same greedy DAGs put two agents in different batches (the
    later one acting on the earlier one's action), kept pair between them or not."""
    return _frequencies(run_dir, update, states, seed_index)[1]


def learned_dependencies(
    run_dir: Path,
    update: int | None = None,
    states: int = 64,
    threshold: float = 0.5,
    seed_index: int = 0,
) -> np.ndarray:
    """The pairs ``[n, n]`` (bool, symmetric, False diagonal) a B2MAPO checkpoint's generator
    keeps in more than ``threshold`` of its most likely DAGs over ``states`` start states
    (different resets, spread over the first periods of the episode; ``keep_frequency``)."""
    return _above(keep_frequency(run_dir, update, states, seed_index), threshold)


def _truth_of(trainer: Trainer, truth: np.ndarray | None) -> np.ndarray:
    if truth is not None:
        return np.asarray(truth)
    planted = getattr(trainer.env, "true_dependencies", None)
    if planted is None:
        raise ConfigError(
            f"{trainer.cfg.env} has no planted dependency graph (true_dependencies); "
            "pass truth= explicitly"
        )
    return planted()


def _mean_over(frequency: np.ndarray, pairs: np.ndarray) -> float:
    return float(frequency[pairs].mean()) if pairs.any() else math.nan


def recovery_over_training(
    run_dirs: Path | Sequence[Path],
    states: int = 64,
    threshold: float = 0.5,
    seed_index: int = 0,
    truth: np.ndarray | None = None,
) -> list[dict[str, Any]]:
    """Score every checkpoint the runs kept against ``truth`` (None: the environment's
    ``true_dependencies()``), oldest first per run: ``score_dependencies``'s dict plus
    ``run_dir``, ``update``, ``env_steps`` and ``separated_true`` / ``separated_other``, the
    mean ``separation_frequency`` of the true pairs and of the other pairs.

    A run keeps only its newest two checkpoints (``checkpoint.KEEP_LAST``) and there is no
    option to keep more, so for a curve over training pass several runs of one config with
    growing ``--total-steps`` (each one point per checkpoint), or copy ``RUN_DIR/checkpoints``
    aside while a run trains (it saves one after every chunk of ``--updates-per-chunk``).
    """
    if isinstance(run_dirs, str | Path):
        run_dirs = [run_dirs]
    rows: list[dict[str, Any]] = []
    for run_dir in map(Path, run_dirs):
        saved = rundir.checkpoints(run_dir)
        if not saved:
            raise ConfigError(f"{run_dir} has no checkpoint")
        for update, _ in saved:
            trainer, _, state = dag_plots.load_checkpoint(run_dir, update)
            policies = _seed_policies(trainer, state, seed_index)
            kept, separated = _probe(trainer.cfg).frequencies(policies, states)
            planted = _truth_of(trainer, truth)
            score = score_dependencies(_above(kept, threshold), planted)
            true_pairs = np.triu(_as_graph("truth", planted), k=1)
            other_pairs = np.triu(~true_pairs & ~true_pairs.T, k=1)
            rows.append(
                {
                    "run_dir": str(run_dir),
                    "update": update,
                    "env_steps": update * trainer.cfg.steps_per_update,
                    **score,
                    "separated_true": _mean_over(separated, true_pairs),
                    "separated_other": _mean_over(separated, other_pairs),
                }
            )
    return rows
