"""Figures of B2MAPO's learned DAG: at one state of a checkpoint, and over training.

``plot_dag`` restores a B2MAPO checkpoint, resets one environment with a fixed key (and
optionally lets the joint policy π play a few periods, drawing DAGs as in training), runs the
DAG generator there and draws what it produced: the dependency matrix G, the DAG with the
agents placed in columns by batch, and the batches. ``plot_dag_history`` draws the DAGs
recorded at every evaluation (``dag_history.jsonl``) as a strip and a GIF. Both write through
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
from matplotlib.patches import Rectangle

from b2mapo import checkpoint, rundir
from b2mapo.errors import ConfigError
from b2mapo.policy import load_state
from b2mapo.state import RunnerState
from b2mapo.train import Trainer
from b2mapo.upper.dag import DagAction, candidate_pairs, edges, layering
from b2mapo.upper.history import PLOT_RESET_KEY, generator_at

BATCH_COLOURS = matplotlib.colormaps["tab10"]
# Above this many agents the heatmap drops its per-cell numbers, which would overlap.
MAX_ANNOTATED_AGENTS = 12
MAX_LISTED_EDGES = 12


class DagSnapshot(NamedTuple):
    """One environment's DAG as ``plot_dag`` draws it (numpy arrays)."""

    g: np.ndarray  # [n, n] dependency matrix the DAG was sampled on
    order: np.ndarray  # [n] priority order, position -> agent
    adjacency: np.ndarray  # [n, n] bool, i -> j: j acts after i, seeing i's action
    batch_index: np.ndarray  # [n] batch (layer) of each agent, 0..K-1


def dag_snapshot(g: jax.Array, action: DagAction) -> DagSnapshot:
    """The directed edges and batch layering of one environment's DAG action, derived the way
    training derives them (``dag.edges``, then ``dag.layering``), so the figure shows the
    batches the lower layer acted and updated in."""
    adjacency = edges(action)
    return DagSnapshot(
        np.asarray(g),
        np.asarray(action.order),
        np.asarray(adjacency),
        np.asarray(layering(adjacency)),
    )


def layout(batch_index: np.ndarray) -> np.ndarray:
    """Drawing positions ``[n, 2]``: x is the agent's batch, and the agents of a batch are
    spread down their column in index order, centred on y = 0. Edges always point to a later
    batch, so every arrow runs left to right."""
    positions = np.zeros((len(batch_index), 2))
    for batch in np.unique(batch_index):
        members = np.flatnonzero(batch_index == batch)
        positions[members, 0] = batch
        positions[members, 1] = (len(members) - 1) / 2 - np.arange(len(members))
    return positions


def load_checkpoint(run_dir: Path, update: int | None = None) -> tuple[Trainer, int, RunnerState]:
    """A B2MAPO run's trainer and the checkpoint of ``update`` (None: the newest).

    ``ConfigError`` if the directory holds no run, the run learns no DAG, or the checkpoint
    is missing.
    """
    cfg = checkpoint.load_config(run_dir)
    if cfg.partition != "learned":
        raise ConfigError(
            f"{run_dir} is a {cfg.algo} run (partition={cfg.partition}); only B2MAPO runs "
            "(partition=learned) have a DAG generator to draw"
        )
    return load_state(run_dir, update)


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
    environment steps of π (a multiple of ``dag_period``). Panels: G as a heatmap with the
    DAG's edges outlined, the DAG with agents in columns by batch, and the batches. Default
    output: ``RUN_DIR/dag_update_XXXXXXXX.png``.
    """
    run_dir = Path(run_dir)
    trainer, update, state = load_checkpoint(run_dir, update)
    _check_indices(trainer, seed_index, env_index, steps)
    policies = jax.tree.map(lambda x: x[seed_index], trainer.policies(state))
    key = jax.random.fold_in(jax.random.PRNGKey(PLOT_RESET_KEY), env_index)
    periods = steps // trainer.cfg.dag_period
    g, action, episode_step = jax.jit(
        lambda p, k: generator_at(trainer.round, p, k, periods, greedy)
    )(policies, key)
    snapshot = dag_snapshot(g, action)
    cfg = trainer.cfg
    title = (
        f"{cfg.env}, {run_dir.name} update {update} ({update * cfg.steps_per_update:,} env "
        f"steps), seed {cfg.seed + seed_index}, env {env_index}, after {steps} steps of π "
        f"(episode step {int(episode_step)}), {'greedy' if greedy else 'sampled'} DAG"
    )
    out_png = Path(out_png) if out_png else run_dir / f"dag_update_{update:08d}.png"
    figure = draw_dag(snapshot, trainer.round.upper.delta, title)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out_png, dpi=120)
    return out_png


def draw_dag(snapshot: DagSnapshot, delta: float, title: str) -> Figure:
    """The three-panel DAG figure of ``snapshot``; ``delta`` is the run's absolute threshold δ."""
    n = len(snapshot.batch_index)
    height = max(4.5, 0.45 * n + 2.0)
    figure = Figure(figsize=(16, height), layout="constrained")
    heat_ax, graph_ax, table_ax = figure.subplots(1, 3, width_ratios=[1.1, 1.3, 0.9])
    labels = [f"a{i}" for i in range(n)]
    _draw_g(figure, heat_ax, snapshot, labels)
    _draw_graph(graph_ax, snapshot, labels)
    _draw_batches(table_ax, snapshot, labels, delta)
    figure.suptitle(title, fontsize=10)
    return figure


def batch_colour(batch: int, alpha: float = 1.0) -> tuple[float, float, float, float]:
    return to_rgba(BATCH_COLOURS(batch % BATCH_COLOURS.N), alpha)


def _draw_g(figure: Figure, ax: Axes, snapshot: DagSnapshot, labels: list[str]) -> None:
    """G as a heatmap (rows i attend to columns j), DAG edges i -> j outlined in red."""
    n = len(labels)
    image = ax.imshow(snapshot.g, cmap="Blues", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(n), labels)
    ax.set_yticks(range(n), labels)
    ax.set_xlabel("j")
    ax.set_ylabel("i", rotation=0)
    ax.set_title("dependency matrix G: g_ij (red: DAG edge i→j)", fontsize=10)
    figure.colorbar(image, ax=ax, shrink=0.8)
    for i, j in np.argwhere(snapshot.adjacency):
        ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="red", lw=2))
    if n <= MAX_ANNOTATED_AGENTS:
        size = 8 if n <= MAX_ANNOTATED_AGENTS // 2 else 6
        for i in range(n):
            for j in range(n):
                value = snapshot.g[i, j]
                colour = "white" if value > 0.6 else "black"
                ax.text(j, i, f"{value:.3f}", ha="center", va="center", color=colour, fontsize=size)


def _draw_graph(ax: Axes, snapshot: DagSnapshot, labels: list[str]) -> None:
    """The DAG: agents in columns by batch, arrows from each agent to those that see its
    action; arrows that skip a batch are curved so they pass beside its agents."""
    positions = layout(snapshot.batch_index)
    k = int(snapshot.batch_index.max()) + 1
    for i, j in np.argwhere(snapshot.adjacency):
        skips = snapshot.batch_index[j] - snapshot.batch_index[i] > 1
        ax.annotate(
            "",
            xy=positions[j],
            xytext=positions[i],
            arrowprops={
                "arrowstyle": "-|>",
                "color": "0.35",
                "shrinkA": 16,
                "shrinkB": 16,
                "connectionstyle": f"arc3,rad={0.25 if skips else 0.0}",
            },
            zorder=1,
        )
    colours = [batch_colour(int(b)) for b in snapshot.batch_index]
    ax.scatter(positions[:, 0], positions[:, 1], s=900, c=colours, edgecolors="black", zorder=2)
    for label, (x, y) in zip(labels, positions, strict=True):
        ax.text(x, y, label, ha="center", va="center", fontsize=9, zorder=3)
    rows = max(1, int(np.bincount(snapshot.batch_index).max()))
    ax.set_xlim(-0.6, k - 0.4)
    ax.set_ylim(-(rows + 1) / 2, (rows + 1) / 2)
    ax.set_xticks(range(k), [f"batch {b}" for b in range(k)])
    ax.set_yticks([])
    for side in ("left", "right", "top"):
        ax.spines[side].set_visible(False)
    count = int(snapshot.adjacency.sum())
    ax.set_title(f"DAG: K = {k} batch(es), {count} edge(s); batches act left to right", fontsize=10)


def _draw_batches(ax: Axes, snapshot: DagSnapshot, labels: list[str], delta: float) -> None:
    """A table of the batches and a few facts: priority order, edges, candidate pairs."""
    ax.set_axis_off()
    k = int(snapshot.batch_index.max()) + 1
    cells = [
        [str(b), ", ".join(labels[i] for i in np.flatnonzero(snapshot.batch_index == b))]
        for b in range(k)
    ]
    colours = [[batch_colour(b, 0.4), batch_colour(b, 0.15)] for b in range(k)]
    table = ax.table(
        cellText=cells,
        cellColours=colours,
        colLabels=["batch", "agents"],
        colWidths=[0.2, 0.8],
        cellLoc="center",
        loc="upper center",
    )
    table.auto_set_font_size(False)
    table.set_fontsize(9)
    pairs = int(np.asarray(candidate_pairs(jnp.asarray(snapshot.g), delta)).sum())
    edge_list = [f"{labels[i]}→{labels[j]}" for i, j in np.argwhere(snapshot.adjacency)]
    if len(edge_list) > MAX_LISTED_EDGES:
        extra = len(edge_list) - MAX_LISTED_EDGES
        edge_list = [*edge_list[:MAX_LISTED_EDGES], f"… (+{extra})"]
    facts = [
        f"priority order: {' > '.join(labels[i] for i in snapshot.order)}",
        f"candidate pairs (g_ij + g_ji ≥ δ = {delta}): {pairs}",
        f"edges: {', '.join(edge_list) or 'none (one batch)'}",
    ]
    ax.text(0.0, 0.0, "\n".join(facts), transform=ax.transAxes, fontsize=9, va="bottom", wrap=True)
    ax.set_title("batches", fontsize=10)


def _history_snapshot(record: dict[str, Any]) -> DagSnapshot:
    return DagSnapshot(
        np.asarray(record["g"]),
        np.asarray(record["order"]),
        np.asarray(record["adjacency"], bool),
        np.asarray(record["batch_index"]),
    )


def _draw_history_point(figure: Figure, g_ax: Axes, dag_ax: Axes, record: dict[str, Any]) -> None:
    """One point of the DAG history: G as a heatmap (DAG edges outlined) over the DAG."""
    snapshot = _history_snapshot(record)
    n = len(snapshot.batch_index)
    g_ax.imshow(snapshot.g, cmap="Blues", vmin=0.0, vmax=1.0)
    for i, j in np.argwhere(snapshot.adjacency):
        g_ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="red", lw=1.5))
    ticks = range(n) if n <= MAX_ANNOTATED_AGENTS else []
    g_ax.set_xticks(ticks)
    g_ax.set_yticks(ticks)
    g_ax.set_title(f"update {record['update']}\n{record['env_steps']:,} env steps", fontsize=9)
    _draw_graph(dag_ax, snapshot, [f"a{i}" for i in range(n)])
    dag_ax.title.set_fontsize(8)


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
    moments (G above its DAG) as a PNG, and every recorded moment as a GIF frame. Defaults:
    ``RUN_DIR/dag_history.png`` and ``.gif``. Returns both paths."""
    from PIL import Image

    run_dir = Path(run_dir)
    cfg = checkpoint.load_config(run_dir)
    records = rundir.read_history(run_dir)
    if not records:
        raise ConfigError(
            f"{run_dir} has no DAG history (written at every evaluation of a B2MAPO run "
            "on a JAX environment, from b2mapo 0.1 on)"
        )
    title = f"{cfg.env}, {run_dir.name}: the generator's most likely DAG at a fixed state"
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
        g_ax, dag_ax = frame.subplots(1, 2, width_ratios=[1, 1.3])
        _draw_history_point(frame, g_ax, dag_ax, record)
        frame.suptitle(title, fontsize=8)
        canvas = FigureCanvasAgg(frame)
        canvas.draw()
        frames.append(Image.fromarray(np.asarray(canvas.buffer_rgba())).convert("RGB"))
    out_gif.parent.mkdir(parents=True, exist_ok=True)
    frames[0].save(out_gif, save_all=True, append_images=frames[1:], duration=700, loop=0)
    return out_png, out_gif
