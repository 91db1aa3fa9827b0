"""The report's aggregate statistics over maps and seeds: rliable's interquartile mean and
probability of improvement, with stratified-bootstrap confidence intervals, on matrices of
final win rates. rliable (the ``report`` extra) is imported only when they are computed."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from b2mapo.errors import ConfigError
from b2mapo.reproduce.runs import RunResult, algos_of, maps_of

# rliable's stratified bootstrap: replications, interval coverage, and the seed of numpy's
# global generator, which rliable draws its resamples from (restored afterwards).
BOOTSTRAP_REPS = 2000
CONFIDENCE = 0.95
BOOTSTRAP_SEED = 0
RLIABLE_MISSING = "the report's statistics need rliable: pip install -e '.[report]'"


class Estimate(NamedTuple):
    """A point estimate and its confidence interval."""

    point: float
    low: float
    high: float


def rliable_modules() -> tuple[Any, Any]:
    """rliable's ``library`` and ``metrics`` modules; ``ConfigError`` if it is not installed."""
    try:
        from rliable import library, metrics
    except ImportError:
        raise ConfigError(RLIABLE_MISSING) from None
    except Exception as error:  # e.g. arch < 8 (which rliable 1.2.0 needs) under pandas 3
        raise ConfigError(
            f"rliable is installed but fails to import ({type(error).__name__}: {error}); "
            "rliable 1.2.0 needs arch<8, which needs pandas<3"
        ) from None
    return library, metrics


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """numpy's global generator seeded for rliable's resamples, and restored after."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def _interval_estimates(
    scores: dict[str, Any], func: Any, reps: int, seed: int
) -> dict[str, Estimate]:
    """rliable's stratified-bootstrap interval estimates of ``func`` for each key."""
    library, _ = rliable_modules()
    with _seeded(seed):
        points, intervals = library.get_interval_estimates(
            scores, func, reps=reps, confidence_interval_size=CONFIDENCE
        )
    return {
        key: Estimate(
            float(np.ravel(points[key])[0]),
            float(np.ravel(intervals[key])[0]),
            float(np.ravel(intervals[key])[1]),
        )
        for key in scores
    }


def iqm_estimates(
    scores: dict[str, np.ndarray], reps: int = BOOTSTRAP_REPS, seed: int = BOOTSTRAP_SEED
) -> dict[str, Estimate]:
    """The interquartile mean of each algorithm's scores ``[runs, tasks]`` (all runs and tasks
    pooled) with its stratified-bootstrap confidence interval."""
    _, metrics = rliable_modules()
    return _interval_estimates(
        scores, lambda x: np.array([metrics.aggregate_iqm(x)]), reps=reps, seed=seed
    )


def improvement_estimates(
    scores: dict[str, np.ndarray],
    reps: int = BOOTSTRAP_REPS,
    seed: int = BOOTSTRAP_SEED,
) -> dict[str, Estimate]:
    """For every pair of algorithms, ``"a > b"`` with ``a`` after ``b`` in ``scores``' order:
    the probability that a run of ``a`` beats one of ``b`` on a task, averaged over tasks
    (scores ``[runs, tasks]``, same tasks), with its confidence interval."""
    _, metrics = rliable_modules()
    names = list(scores)
    pairs = {
        f"{later} > {earlier}": [scores[later], scores[earlier]]
        for i, earlier in enumerate(names)
        for later in names[i + 1 :]
    }
    return _interval_estimates(
        pairs,
        lambda x, y: np.array([metrics.probability_of_improvement(x, y)]),
        reps=reps,
        seed=seed,
    )


@dataclass(frozen=True)
class ScoreMatrices:
    """rliable's inputs: per algorithm, final win rates ``[runs, maps]`` on shared maps."""

    maps: list[str]  # the maps every algorithm has: the aggregates' tasks
    left_out: dict[str, list[str]]  # maps some algorithm lacks -> the algorithms they lack
    scores: dict[str, np.ndarray]
    seed_counts: dict[str, list[int]]  # algorithms whose seed counts differ across the maps


def score_matrices(results: Sequence[RunResult]) -> ScoreMatrices:
    """Each algorithm's final win rates on the maps every algorithm has, cut to its smallest
    seed count over those maps (its lowest-numbered seeds) so that they form a matrix."""
    by_key = {(r.env, r.algo): r for r in results}
    algos = algos_of(results)
    maps = [env for env in maps_of(results) if all((env, a) in by_key for a in algos)]
    left_out = {
        env: [a for a in algos if (env, a) not in by_key]
        for env in maps_of(results)
        if env not in maps
    }
    scores, seed_counts = {}, {}
    for algo in algos if maps else []:
        wins = [by_key[(env, algo)].final_wins() for env in maps]
        runs = min(len(w) for w in wins)
        if any(len(w) != runs for w in wins):
            seed_counts[algo] = [len(w) for w in wins]
        scores[algo] = np.stack([w[:runs] for w in wins], axis=1)
    return ScoreMatrices(maps, left_out, scores, seed_counts)


def aggregate_statistics(
    results: Sequence[RunResult], reps: int = BOOTSTRAP_REPS, seed: int = BOOTSTRAP_SEED
) -> dict[str, Any]:
    """IQM per algorithm and the probability of improvement between every two algorithms
    (the later in the report's order over the earlier), over all shared maps and seeds, as
    JSON-ready data."""
    matrices = score_matrices(results)
    stats: dict[str, Any] = {
        "maps": matrices.maps,
        "left_out_maps": list(matrices.left_out),
        "missing_algos": matrices.left_out,
        "runs": {algo: int(s.shape[0]) for algo, s in matrices.scores.items()},
        "seed_counts_per_map": matrices.seed_counts,
        "reps": reps,
        "confidence": CONFIDENCE,
        "bootstrap_seed": seed,
        "iqm": {},
        "probability_of_improvement": {},
    }
    if not matrices.scores:
        return stats
    iqm = iqm_estimates(matrices.scores, reps, seed)
    stats["iqm"] = {algo: estimate._asdict() for algo, estimate in iqm.items()}
    if len(matrices.scores) > 1:
        poi = improvement_estimates(matrices.scores, reps, seed)
        stats["probability_of_improvement"] = {pair: e._asdict() for pair, e in poi.items()}
    return stats
