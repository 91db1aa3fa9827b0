"""``b2mapo replay RUN --out episode.gif``: one greedy evaluation episode of a SMAX run drawn
frame by frame, each ally coloured by its batch.

For B2MAPO the batches are the generator's most likely DAG of each period: π acts on them
(``--joint``); π_ind, which executes, acts without them, so they show what the generator
proposes at those states. Other algorithms show their fixed partition (one batch for MAPPO).
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from b2mapo.config import ConfigError
from b2mapo.dag_plots import batch_colour
from b2mapo.policy import load_state
from b2mapo.state import Policies
from b2mapo.train import Trainer
from b2mapo.upper.history import PLOT_RESET_KEY


class Frames(NamedTuple):
    """An episode, per step ``[T, ...]``: unit positions, health and life, the allies'
    batches, and whether the episode had already ended before the step."""

    positions: np.ndarray  # [T, units, 2]
    health: np.ndarray  # [T, units]
    alive: np.ndarray  # [T, units]
    batch_index: np.ndarray  # [T, allies]
    ended: np.ndarray  # [T]
    won: bool


def _units(env_state: object) -> tuple[jax.Array, jax.Array, jax.Array]:
    smax = env_state.inner.state  # b2mapo's wrapper -> the heuristic-enemy env -> SMAX
    return smax.unit_positions, smax.unit_health, smax.unit_alive


def play_episode(trainer: Trainer, policies: Policies, joint: bool, env_index: int) -> Frames:
    """Play one greedy episode of the run's environment from a fixed reset key with the
    policy evaluation plays (π_ind for B2MAPO, or π with ``joint``); ``policies`` are the
    seed's. The batches shown are π's: for π_ind, π's player steps beside it for them."""
    shown = trainer.round.joint_player(1)
    learned = trainer.cfg.partition == "learned"
    player = trainer.round.executing_player(1) if learned and not joint else shown
    key = jax.random.fold_in(jax.random.PRNGKey(PLOT_RESET_KEY), env_index)
    env, limit = trainer.env, trainer.env.spec.episode_limit

    def episode(key: jax.Array) -> tuple:
        reset_key, key = jax.random.split(key)
        env_state, ts = jax.vmap(env.reset)(reset_key[None])
        acting, key = player.start(policies, key)
        showing = shown.start(policies, key)[0] if player is not shown else None

        def step(carry: tuple, inputs: tuple) -> tuple:
            env_state, ts, acting, showing, ended = carry
            t, key = inputs
            act_key, env_key = jax.random.split(key)
            first = jnp.broadcast_to(t == 0, (1,))
            acting, action = player.act(policies, acting, ts, first, t, act_key, True)
            if showing is not None:
                showing, _ = shown.act(policies, showing, ts, first, t, act_key, True)
            batch_index = (acting if showing is None else showing)[-1]
            frame = (*_units(env_state), batch_index[0], ended)
            env_state, ts = jax.vmap(env.step)(env_key[None], env_state, action)
            won = ~ended & ts.done[0] & ts.won[0]  # the first episode's end only
            next_carry = (env_state, ts, acting, showing, ended | ts.done[0])
            return next_carry, (frame, won)

        start = (env_state, ts, acting, showing, jnp.bool_(False))
        steps = (jnp.arange(limit), jax.random.split(key, limit))
        _, (frames, won) = jax.lax.scan(step, start, steps)
        return frames, won

    (positions, health, alive, batch_index, ended), won = jax.jit(episode)(key)
    positions, health, alive = (np.asarray(x)[:, 0] for x in (positions, health, alive))
    return Frames(
        positions,
        health,
        alive,
        np.asarray(batch_index),
        np.asarray(ended),
        bool(np.asarray(won).any()),
    )


def view_box(frames: Frames, played: int, margin: float = 2.0) -> tuple[float, float, float]:
    """A square (x, y, side) around every position a living unit took during the episode."""
    alive = frames.alive[:played]
    points = frames.positions[:played][alive]
    low, high = points.min(axis=0) - margin, points.max(axis=0) + margin
    side = float((high - low).max())
    centre = (low + high) / 2
    return float(centre[0] - side / 2), float(centre[1] - side / 2), side


def draw_frame(
    frames: Frames, t: int, num_allies: int, box: tuple[float, float, float], title: str
) -> np.ndarray:
    """Step ``t`` as an RGB image: allies as discs in their batch's colour, enemies as grey
    squares, marker area by health, dead units left out; ``box`` is the view (x, y, side)."""
    figure = Figure(figsize=(4.8, 5.0), layout="constrained")
    ax = figure.subplots()
    alive, positions = frames.alive[t], frames.positions[t]
    health = frames.health[t] / max(float(frames.health[0].max()), 1e-6)
    allies = np.arange(len(alive)) < num_allies
    colours = [batch_colour(int(b)) for b in frames.batch_index[t]]
    for unit in np.flatnonzero(alive):
        area = 40 + 160 * float(health[unit])
        if allies[unit]:
            ax.scatter(*positions[unit], s=area, color=colours[unit], edgecolors="black")
        else:
            ax.scatter(*positions[unit], s=area, color="0.55", marker="s", edgecolors="black")
    x, y, side = box
    ax.set_xlim(x, x + side)
    ax.set_ylim(y, y + side)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    k = int(frames.batch_index[t].max()) + 1
    ax.set_title(f"{title}\nstep {t}, K = {k} (colour: batch; grey squares: enemies)", fontsize=8)
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def replay(
    run_dir: Path,
    out_gif: Path | None = None,
    joint: bool = False,
    seed_index: int = 0,
    env_index: int = 0,
) -> Path:
    """Write the GIF of one greedy episode of a SMAX run (default ``RUN_DIR/episode.gif``)
    and return its path; one frame per step until the episode ends."""
    from PIL import Image

    run_dir = Path(run_dir)
    trainer, _, state = load_state(run_dir)
    cfg = trainer.cfg
    if not cfg.env.startswith("smax:"):
        raise ConfigError(f"b2mapo replay draws SMAX episodes; {run_dir} trained on {cfg.env}")
    learned = cfg.partition == "learned"
    if joint and not learned:
        raise ConfigError(f"--joint replays B2MAPO's π; {run_dir} is a {cfg.algo} run")
    if not 0 <= seed_index < cfg.seeds:
        raise ConfigError(f"seed_index={seed_index} must be in 0..{cfg.seeds - 1}")
    policies = jax.tree.map(lambda x: x[seed_index], trainer.policies(state))
    frames = play_episode(trainer, policies, joint, env_index)
    smax = trainer.env._env
    played = int(np.sum(~frames.ended))
    who = "π (batch by batch)" if joint else ("π_ind" if learned else "policy")
    outcome = "won" if frames.won else "not won"
    title = f"{cfg.env} {cfg.algo}, {who}: {outcome} in {played} steps"
    box = view_box(frames, played)
    images = [
        Image.fromarray(draw_frame(frames, t, smax.num_allies, box, title)) for t in range(played)
    ]
    out_gif = Path(out_gif) if out_gif else run_dir / "episode.gif"
    out_gif.parent.mkdir(parents=True, exist_ok=True)
    images[0].save(out_gif, save_all=True, append_images=images[1:], duration=150, loop=0)
    return out_gif
