"""Figures of B2MAPO's learned DAG: at one state of a checkpoint, and over training.

``plot_dag`` restores a B2MAPO checkpoint, resets one environment with a fixed key (and
optionally lets the joint policy π play a few periods, drawing DAGs as in training), samples
many DAGs there and draws what the reward can see of them: the dependency matrix G, each
pair's keep rate, and the most frequent layering (the agents in columns by batch).
``plot_dag_history`` draws the same at every evaluation (``dag_history.jsonl``) as a strip
and a GIF. Both write through
matplotlib's ``Figure`` (Agg canvas), so they need no display and leave pyplot's global state
alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure

from b2mapo import checkpoint, rundir
from b2mapo.errors import ConfigError
from b2mapo.policy import load_learned_state
from b2mapo.train import Trainer
from b2mapo.upper.dag import candidate_pairs
from b2mapo.upper.history import (
    DAG_SAMPLES,
    PLOT_RESET_KEY,
    boundaries,
    most_frequent_layering,
)

BATCH_COLOURS = matplotlib.colormaps["tab10"]
# Above this many agents the heatmap drops its per-cell numbers, which would overlap.
MAX_ANNOTATED_AGENTS = 12


class DagSnapshot(NamedTuple):
    """What the figures draw of the generator at one state (numpy arrays)."""

    g: np.ndarray  # [n, n] dependency matrix
    batch_index: np.ndarray  # [n] the most frequent layering of the sampled DAGs
    share: float  # that layering's share of the samples
    keep: np.ndarray  # [n, n] fraction of the sampled DAGs keeping each pair
    samples: int


def dag_snapshot(g: jax.Array, batch_index: jax.Array, keep: jax.Array) -> DagSnapshot:
    """The snapshot of ``S`` DAGs sampled at one state: ``batch_index [S, n]`` (their
    layerings, as training derives them) and ``keep [S, n, n]`` (their kept pairs)."""
    layering, share = most_frequent_layering(np.asarray(batch_index))
    keep = np.asarray(keep)
    return DagSnapshot(np.asarray(g), layering, share, keep.mean(axis=0), keep.shape[0])


def layout(batch_index: np.ndarray) -> np.ndarray:
    """Drawing positions ``[n, 2]``: x is the agent's batch, and the agents of a batch are
    spread down their column in index order, centred on y = 0."""
    positions = np.zeros((len(batch_index), 2))
    for batch in np.unique(batch_index):
        members = np.flatnonzero(batch_index == batch)
        positions[members, 0] = batch
        positions[members, 1] = (len(members) - 1) / 2 - np.arange(len(members))
    return positions


def _check_indices(trainer: Trainer, seed_index: int, env_index: int, steps: int) -> None:
    cfg = trainer.cfg
    if trainer.pools:
        raise ConfigError(
            f"b2mapo plot replays a start state of a JAX environment; {cfg.env} is stepped "
            "in worker processes (the run's metrics can be drawn with b2mapo curves)"
        )
    if not 0 <= seed_index < cfg.seeds:
        raise ConfigError(f"seed index {seed_index} must be in [0, {cfg.seeds - 1}]")
    if env_index < 0:
        raise ConfigError(f"env index {env_index} must be >= 0")
    if steps < 0 or steps % cfg.dag_period:
        raise ConfigError(
            f"step {steps} must be a non-negative multiple of dag_period={cfg.dag_period}: "
            "the generator acts at period boundaries"
        )


def plot_dag(
    run_dir: Path,
    out_png: Path | None = None,
    update: int | None = None,
    seed_index: int = 0,
    env_index: int = 0,
    greedy: bool = True,
    steps: int = 0,
) -> Path:
    """Draw the DAG generator of a B2MAPO checkpoint at one state; returns the PNG's path.

    The state is the reset of environment ``env_index`` (fixed keys), after ``steps``
    environment steps of π (a multiple of ``dag_period``) on the generator's DAGs (their most
    likely choices with ``greedy``, else samples). There ``DAG_SAMPLES`` DAGs are sampled;
    panels: G, each pair's keep rate, and the most frequent layering. Default output:
    ``RUN_DIR/dag_update_XXXXXXXX.png``.
    """
    run_dir = Path(run_dir)
    trainer, update, state = load_learned_state(run_dir, update)
    _check_indices(trainer, seed_index, env_index, steps)
    policies = jax.tree.map(lambda x: x[seed_index], trainer.policies(state))
    key = jax.random.fold_in(jax.random.PRNGKey(PLOT_RESET_KEY), env_index)
    periods = steps // trainer.cfg.dag_period
    seen = jax.jit(lambda p, k: boundaries(trainer.round, p, k, periods + 1, greedy, DAG_SAMPLES))(
        policies, key
    )
    last = jax.tree.map(lambda x: np.asarray(x[-1]), seen)
    snapshot = dag_snapshot(last.g, last.batch_index, last.keep)
    cfg = trainer.cfg
    title = (
        f"{cfg.env}, {run_dir.name} update {update} ({update * cfg.steps_per_update:,} env "
        f"steps), seed {cfg.seed + seed_index}, env {env_index}, after {steps} "
        f"{'greedy' if greedy else 'sampled'} steps of π (episode step {int(last.episode_step)})"
    )
    out_png = Path(out_png) if out_png else run_dir / f"dag_update_{update:08d}.png"
    figure = draw_dag(snapshot, trainer.round.upper.delta, title)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out_png, dpi=120)
    return out_png


def draw_dag(snapshot: DagSnapshot, delta: float, title: str) -> Figure:
    """The three-panel figure of ``snapshot``; ``delta`` is the run's absolute threshold δ."""
    n = len(snapshot.batch_index)
    height = max(4.5, 0.45 * n + 2.0)
    figure = Figure(figsize=(16, height), layout="constrained")
    g_ax, keep_ax, graph_ax = figure.subplots(1, 3, width_ratios=[1.1, 1.1, 1.2])
    labels = [f"a{i}" for i in range(n)]
    pairs = int(np.asarray(candidate_pairs(jnp.asarray(snapshot.g), delta)).sum())
    _heatmap(figure, g_ax, snapshot.g, labels, f"dependency matrix G: g_ij ({pairs} pairs ≥ δ)")
    keep_title = f"keep rate of each pair over {snapshot.samples} sampled DAGs"
    _heatmap(figure, keep_ax, snapshot.keep, labels, keep_title)
    _draw_layering(graph_ax, snapshot, labels)
    figure.suptitle(title, fontsize=10)
    return figure


def batch_colour(batch: int, alpha: float = 1.0) -> tuple[float, float, float, float]:
    return to_rgba(BATCH_COLOURS(batch % BATCH_COLOURS.N), alpha)


def _heatmap(
    figure: Figure, ax: Axes, values: np.ndarray, labels: list[str], title: str, small: bool = False
) -> None:
    """A [0, 1] matrix as a heatmap with its rows i and columns j labelled; each cell carries
    its value while the cells are large enough for the numbers not to overlap."""
    n = len(labels)
    image = ax.imshow(values, cmap="Blues", vmin=0.0, vmax=1.0)
    annotated = n <= (MAX_ANNOTATED_AGENTS // 2 if small else MAX_ANNOTATED_AGENTS)
    ticks = range(n) if annotated or not small else []
    ax.set_xticks(ticks, [labels[i] for i in ticks], fontsize=7 if small else 9)
    ax.set_yticks(ticks, [labels[i] for i in ticks], fontsize=7 if small else 9)
    ax.set_title(title, fontsize=8 if small else 10)
    if not small:
        figure.colorbar(image, ax=ax, shrink=0.8)
    if annotated:
        size = 5 if small else (8 if n <= MAX_ANNOTATED_AGENTS // 2 else 6)
        digits = 1 if small else 2
        for i in range(n):
            for j in range(n):
                if i != j:
                    colour = "white" if values[i, j] > 0.6 else "black"
                    text = f"{values[i, j]:.{digits}f}"
                    ax.text(j, i, text, ha="center", va="center", color=colour, fontsize=size)


def _draw_layering(ax: Axes, snapshot: DagSnapshot, labels: list[str]) -> None:
    """The most frequent layering: agents in columns by batch (batches act left to right),
    each pair kept in at least half of the samples joined by a line as dark as its keep rate
    (curved where it skips a batch or stays in one, so it passes beside the agents)."""
    batch, positions = snapshot.batch_index, layout(snapshot.batch_index)
    k = int(batch.max()) + 1
    rows = max(1, int(np.bincount(batch).max()))
    # Node diameter (points): at most 30, and small enough for a column's nodes not to touch.
    height = ax.get_position().height * ax.figure.get_figheight() * 72
    diameter = min(30.0, 0.75 * height / (rows + 1))
    for i, j in zip(*np.nonzero(np.triu(snapshot.keep >= 0.5, k=1)), strict=True):
        bend = 0.3 if abs(int(batch[j]) - int(batch[i])) != 1 else 0.0
        ax.annotate(
            "",
            xy=positions[j],
            xytext=positions[i],
            arrowprops={
                "arrowstyle": "-",
                "color": to_rgba("0.2", float(snapshot.keep[i, j])),
                "shrinkA": diameter / 2,
                "shrinkB": diameter / 2,
                "connectionstyle": f"arc3,rad={bend}",
            },
            zorder=1,
        )
    colours = [batch_colour(int(b)) for b in batch]
    ax.scatter(
        positions[:, 0], positions[:, 1], s=diameter**2, c=colours, edgecolors="black", zorder=2
    )
    for label, (x, y) in zip(labels, positions, strict=True):
        ax.text(x, y, label, ha="center", va="center", fontsize=min(9, diameter / 3), zorder=3)
    ax.set_xlim(-0.6, k - 0.4)
    ax.set_ylim(-(rows + 1) / 2, (rows + 1) / 2)
    ax.set_xticks(range(k), [f"batch {b}" for b in range(k)], fontsize=8)
    ax.set_yticks([])
    for side in ("left", "right", "top"):
        ax.spines[side].set_visible(False)
    ax.set_title(
        f"most frequent layering: K = {k}, {snapshot.share:.0%} of samples\n"
        "lines: pairs kept in ≥ 50% of samples",
        fontsize=9,
    )


def _history_snapshot(record: dict[str, Any]) -> DagSnapshot:
    return DagSnapshot(
        np.asarray(record["g"]),
        np.asarray(record["batch_index"]),
        float(record["layering_share"]),
        np.asarray(record["keep"]),
        DAG_SAMPLES,
    )


def _draw_history_point(figure: Figure, keep_ax: Axes, dag_ax: Axes, record: dict) -> None:
    """One point of the DAG history: the pairs' keep rates over the most frequent layering."""
    snapshot = _history_snapshot(record)
    labels = [f"a{i}" for i in range(len(snapshot.batch_index))]
    title = f"update {record['update']}, {record['env_steps']:,} env steps\nkeep rate per pair"
    _heatmap(figure, keep_ax, snapshot.keep, labels, title, small=True)
    _draw_layering(dag_ax, snapshot, labels)
    dag_ax.title.set_fontsize(7)


def history_points(records: list[dict[str, Any]], points: int) -> list[dict[str, Any]]:
    """At most ``points`` records spread evenly over training, the first and last included."""
    if len(records) <= points:
        return records
    picks = np.unique(np.linspace(0, len(records) - 1, points).round().astype(int))
    return [records[i] for i in picks]


def plot_dag_history(
    run_dir: Path, out_png: Path | None = None, out_gif: Path | None = None, points: int = 6
) -> tuple[Path, Path]:
    """Draw a B2MAPO run's DAG over training (``dag_history.jsonl``): a strip of ``points``
    moments (keep rates above the most frequent layering) as a PNG, and every recorded moment
    as a GIF frame. Defaults: ``RUN_DIR/dag_history.png`` and ``.gif``. Returns both paths."""
    from PIL import Image

    run_dir = Path(run_dir)
    cfg = checkpoint.load_config(run_dir)
    records = rundir.read_history(run_dir)
    if not records:
        raise ConfigError(
            f"{run_dir} has no DAG history (written at every evaluation of a B2MAPO run "
            "on a JAX environment, from b2mapo 0.1 on)"
        )
    if "keep" not in records[0]:
        raise ConfigError(f"{run_dir}'s DAG history predates sampled keep rates: train again")
    title = f"{cfg.env}, {run_dir.name}: the generator at a fixed state, {DAG_SAMPLES} sampled DAGs"
    shown = history_points(records, points)
    strip = Figure(figsize=(3.2 * len(shown), 6.4), layout="constrained")
    axes = strip.subplots(2, len(shown), squeeze=False, height_ratios=[1, 1.1])
    for column, record in enumerate(shown):
        _draw_history_point(strip, axes[0, column], axes[1, column], record)
    strip.suptitle(title, fontsize=10)
    out_png = Path(out_png) if out_png else run_dir / "dag_history.png"
    out_gif = Path(out_gif) if out_gif else run_dir / "dag_history.gif"
    out_png.parent.mkdir(parents=True, exist_ok=True)
    strip.savefig(out_png, dpi=100)
    frames = []
    for record in records:
        frame = Figure(figsize=(7.0, 3.6), layout="constrained")
        keep_ax, dag_ax = frame.subplots(1, 2, width_ratios=[1, 1.3])
        _draw_history_point(frame, keep_ax, dag_ax, record)
        frame.suptitle(title, fontsize=8)
        canvas = FigureCanvasAgg(frame)
        canvas.draw()
        frames.append(Image.fromarray(np.asarray(canvas.buffer_rgba())).convert("RGB"))
    out_gif.parent.mkdir(parents=True, exist_ok=True)
    frames[0].save(out_gif, save_all=True, append_images=frames[1:], duration=700, loop=0)
    return out_png, out_gif
