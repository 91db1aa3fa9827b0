"""The thin Python loop around the compiled chunk: progress, metrics, evaluation, checkpoints."""

from __future__ import annotations

import contextlib
import hashlib
import math
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from b2mapo import checkpoint, rundir
from b2mapo.config import ConfigError, TrainConfig
from b2mapo.errors import HostEnvError, Interrupted
from b2mapo.evaluation import evaluate
from b2mapo.exported import compile_chunk
from b2mapo.parallel import is_writer
from b2mapo.policy import load_state
from b2mapo.summary import Summary
from b2mapo.train import Trainer

LOSS_KEYS = ("policy_loss", "value_loss", "entropy")


class TrainingDiverged(RuntimeError):
    """A loss became NaN or infinite; training stopped without saving the bad state."""


@dataclass
class MetricsLog:
    """Append-only JSON-lines log of per-update, per-seed metrics and evaluations, mirrored
    to TensorBoard when ``tensorboardX`` is installed (the ``tensorboard`` extra) and to
    Weights & Biases when the config names a ``wandb_project`` (the ``wandb`` extra)."""

    path: Path
    cfg: TrainConfig | None = None
    _tensorboard: Any = field(default=None, init=False)
    _wandb: Any = field(default=None, init=False)

    def __post_init__(self) -> None:
        try:
            from tensorboardX import SummaryWriter  # optional dependency

            self._tensorboard = SummaryWriter(str(self.path.parent / rundir.TENSORBOARD_DIR))
        except ImportError:
            self._tensorboard = None
        if self.cfg is not None and self.cfg.wandb_project:
            self._wandb = _start_wandb(self.cfg, self.path.parent)

    def write(self, records: list[dict[str, Any]]) -> None:
        rundir.append_records(self.path, records)
        for record in records:
            tag = f"{record['kind']}/seed{record['seed']}"
            scalars = {f"{tag}/{k}": v for k, v in record.items() if isinstance(v, float)}
            if self._tensorboard is not None:
                for name, value in scalars.items():
                    self._tensorboard.add_scalar(name, value, record["env_steps"])
            if self._wandb is not None:
                self._wandb.log(scalars, step=record["env_steps"])

    def close(self) -> None:
        """Flush and close the mirrors (the JSON-lines file is closed after every write)."""
        if self._tensorboard is not None:
            self._tensorboard.close()
        if self._wandb is not None:
            self._wandb.finish()


def _import_wandb(cfg: TrainConfig) -> Any:
    """The ``wandb`` module; ``ConfigError`` if the extra is missing."""
    try:
        import wandb  # optional dependency
    except ImportError:
        raise ConfigError(
            f"wandb_project={cfg.wandb_project!r} needs Weights & Biases: pip install -e '.[wandb]'"
        ) from None
    return wandb


def _start_wandb(cfg: TrainConfig, run_dir: Path) -> Any:
    """A Weights & Biases run for ``run_dir``, resumed when the directory is resumed (its id
    is derived from the directory's absolute path)."""
    wandb = _import_wandb(cfg)
    run_id = hashlib.sha256(str(run_dir.resolve()).encode()).hexdigest()[:16]
    return wandb.init(
        project=cfg.wandb_project,
        name=run_dir.name,
        id=run_id,
        resume="allow",
        config=cfg.to_dict(),
        dir=str(run_dir),
    )


@dataclass
class Clock:
    """A run's times in seconds, cumulative over its resumptions: every checkpoint saves
    them, and a run resumed from it continues from there."""

    wall: float = 0.0  # since the run started: compilation, training, evaluation, saving
    compile: float = 0.0
    train: float = 0.0  # in compiled chunks
    steady: float = 0.0  # in chunks after the first of each start, which pays one-off costs
    steady_updates: float = 0.0


def _records(
    metrics: dict[str, np.ndarray], first_update: int, cfg: TrainConfig, wall_times: list[float]
) -> list[dict]:
    """Per-update, per-seed training records from a chunk's metrics ``[seeds, updates]``;
    ``wall_times`` are the updates' own (the chunk's time spread evenly over its updates)."""
    seeds, updates = next(iter(metrics.values())).shape
    return [
        {
            "kind": "train",
            "update": first_update + u + 1,
            "env_steps": (first_update + u + 1) * cfg.steps_per_update,
            "wall_time": wall_times[u],
            "seed": cfg.seed + s,
            **{k: float(v[s, u]) for k, v in metrics.items()},
        }
        for u in range(updates)
        for s in range(seeds)
    ]


def _check_finite(metrics: dict[str, np.ndarray], first_update: int, last_good: str) -> None:
    for key in (k for k in metrics if k in LOSS_KEYS or k.endswith("_loss")):
        values = metrics[key]
        bad = ~np.isfinite(values)
        if bad.any():
            seed, update = np.argwhere(bad)[0]
            raise TrainingDiverged(
                f"{key} is {values[seed, update]} at update {first_update + update + 1} "
                f"(seed index {seed}); training stopped; last good checkpoint: {last_good}"
            )


def _eval_records(
    update: int, cfg: TrainConfig, greedy: dict, sampled: dict, wall_time: float
) -> list[dict]:
    return [
        {
            "kind": "eval",
            "update": update,
            "env_steps": update * cfg.steps_per_update,
            "wall_time": wall_time,
            "seed": cfg.seed + s,
            **{f"greedy_{k}": float(v[s]) for k, v in greedy.items()},
            **{f"sampled_{k}": float(v[s]) for k, v in sampled.items()},
        }
        for s in range(cfg.seeds)
    ]


def _check_writable(run_dir: Path) -> None:
    """Fail before compiling if the run directory cannot be created or written."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-probe"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise ConfigError(f"cannot write the run directory {run_dir}: {reason}") from None


class Interrupts:
    """SIGINT and SIGTERM during training: the first stops the run at its next safe point
    (between chunks, after the checkpoint); a second stops it at once, its last checkpoint
    intact (checkpoints are replaced atomically)."""

    def __init__(self) -> None:
        self.requested = False
        self.checkpointed = 0  # the update of the newest checkpoint

    def handle(self, signum: int, frame: object) -> None:
        del signum, frame
        if self.requested:
            raise Interrupted(self.checkpointed)
        self.requested = True

    def check(self) -> None:
        """Stop here (``Interrupted``) if a signal asked to."""
        if self.requested:
            raise Interrupted(self.checkpointed)


@contextlib.contextmanager
def _handled(interrupts: Interrupts) -> Iterator[None]:
    """Route SIGINT and SIGTERM to ``interrupts`` while training: in the main thread of a
    single-process run (the processes of a multi-process run must stop together)."""
    if threading.current_thread() is not threading.main_thread() or jax.process_count() > 1:
        yield
        return
    previous = {s: signal.signal(s, interrupts.handle) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


class Evaluated(NamedTuple):
    """An evaluation during training, as ``train`` hands it to ``on_evaluation`` and ``stop``."""

    update: int
    env_steps: int  # per seed
    wall_seconds: float  # since the run started, over its resumptions (its records' wall_time)
    train_seconds: float  # spent in compiled chunks so far, over resumptions (no compile)
    greedy: dict[str, np.ndarray]  # per-seed means, as ``evaluation.evaluate`` returns them
    sampled: dict[str, np.ndarray]
    metrics: dict[str, np.ndarray]  # the last chunk's training metrics, [seeds, updates]


def header(cfg: TrainConfig) -> str:
    """The line a run starts with, once it is accepted; it says when whole chunks round the
    step budget up by more than 2%."""
    trained = cfg.num_updates * cfg.steps_per_update
    line = (
        f"training [bold]{cfg.algo}[/] on [bold]{cfg.env}[/]: {cfg.seeds} seed(s) x "
        f"{trained:,} env steps -> {cfg.run_dir}"
    )
    if trained > 1.02 * cfg.total_steps:
        chunk = cfg.updates_per_chunk * cfg.steps_per_update
        line += (
            f" (total_steps {cfg.total_steps:,} rounded up to whole chunks of {chunk:,} env "
            f"steps: {cfg.updates_per_chunk} updates x {cfg.num_envs} envs x "
            f"{cfg.rollout_len} steps; a smaller --updates-per-chunk rounds less)"
        )
    return line


def train(
    cfg: TrainConfig,
    console: Console | None = None,
    on_evaluation: Callable[[Evaluated], None] | None = None,
    stop: Callable[[Evaluated], bool] | None = None,
) -> Summary:
    """Train (or resume) the run ``cfg`` describes; returns its final evaluation.

    After every evaluation ``on_evaluation`` sees it, and training ends early (after that
    chunk's checkpoint) once ``stop`` holds for it: ``benchmarks/time_to_win.py`` races
    algorithms to a win rate with this loop.

    In a multi-process run every process calls this; only process 0 writes the run directory
    and prints, and every process reads its checkpoints to resume (a shared filesystem).
    A host environment whose worker fails stops the run with a ``HostEnvError`` that names
    it; its checkpoints stay, and the same call resumes. So does SIGINT or SIGTERM
    (``Interrupted``, see ``Interrupts``).
    """
    trainer = Trainer(cfg)
    interrupts = Interrupts()
    try:
        with _handled(interrupts):
            return _train(trainer, console, on_evaluation, stop, interrupts)
    except jax.errors.JaxRuntimeError:
        failure = trainer.failure()
        if failure is None:
            raise
        saved = rundir.checkpoints(Path(cfg.run_dir))
        kept = f"last checkpoint {saved[-1][1]}" if saved else "no checkpoint yet"
        stopped = f"{failure}; training stopped ({kept}); the same command resumes"
        raise HostEnvError(stopped) from None
    finally:
        trainer.close()


def _train(
    trainer: Trainer,
    console: Console | None,
    on_evaluation: Callable[[Evaluated], None] | None,
    stop: Callable[[Evaluated], bool] | None,
    interrupts: Interrupts,
) -> Summary:
    cfg = trainer.cfg
    writer = is_writer()
    console = console if console is not None and writer else Console(quiet=not writer)
    run_started = time.perf_counter()
    run_dir = Path(cfg.run_dir)
    # Every refusal before anything is written.
    if writer and cfg.wandb_project:
        _import_wandb(cfg)
    if rundir.checkpoints(run_dir):
        checkpoint.check_resumable(checkpoint.load_config(run_dir), cfg)
    elif (run_dir / rundir.CONFIG_FILE).exists():
        console.print(f"{run_dir} holds no checkpoint: starting it again with this config")
    if writer:
        _check_writable(run_dir)
    finished = rundir.read_summary(run_dir)
    if finished is not None:  # nothing to train; its files stay as they are
        console.print(
            f"{run_dir} is finished (update {finished['updates']}); nothing to do "
            f"(b2mapo eval {run_dir} evaluates it again)"
        )
        return Summary.from_dict(run_dir, finished)
    console.print(header(cfg))
    # Before compiling: fails on a missing extra.
    log = MetricsLog(run_dir / rundir.METRICS_FILE, cfg) if writer else None
    state = trainer.layout.to_host(trainer.init())

    restored = checkpoint.restore_latest(run_dir, state)
    last_good = "none yet"
    clock = Clock()
    if restored is not None:
        update, restored_state = restored
        state = trainer.resume(restored_state, state)
        last_good = str(rundir.checkpoints(run_dir)[-1][1])
        clock = Clock(**checkpoint.saved_clock(Path(last_good)))
        console.print(f"resuming {run_dir} from update {update}")
    wall_offset = clock.wall

    def wall_time() -> float:
        return wall_offset + time.perf_counter() - run_started

    done_updates = int(np.asarray(state.update).max())
    interrupts.checkpointed = done_updates
    # What the round records at every evaluation (B2MAPO: its DAG at a fixed state); a host
    # environment has no reset to replay, and other processes hold no first seed.
    history = None
    if writer and not trainer.pools and jax.process_count() == 1:
        history = trainer.round.history(run_dir)
    if history is not None:
        rundir.keep_until(history.path, done_updates)
    if log is not None:
        checkpoint.save_config(run_dir, cfg)
        rundir.keep_until(log.path, done_updates)

    state = trainer.layout.place(state)
    start = time.perf_counter()
    chunk = compile_chunk(trainer, state)
    clock.compile += time.perf_counter() - start

    updates_per_chunk, total_updates = cfg.updates_per_chunk, cfg.num_updates
    eval_chunks = max(1, math.ceil(cfg.eval_every / updates_per_chunk)) if cfg.eval_every else 0

    progress = Progress(
        BarColumn(bar_width=16),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
        TextColumn("{task.fields[status]}"),
        console=console,
    )
    with progress, contextlib.closing(log) if log is not None else contextlib.nullcontext():
        task = progress.add_task(
            cfg.env,
            total=total_updates * cfg.steps_per_update,
            completed=done_updates * cfg.steps_per_update,
            status="",
        )
        chunk_index = 0
        layout = trainer.layout
        devices_note = f" ({layout.describe()})" if layout.num_devices > 1 else ""
        stopped = False
        while done_updates < total_updates and not stopped:
            interrupts.check()
            tic = time.perf_counter()
            state, device_metrics = chunk(state)
            # On the host once: the checks, the log, the progress line and the callbacks read it.
            metrics = {k: np.asarray(v) for k, v in device_metrics.items()}
            seconds = time.perf_counter() - tic
            clock.train += seconds
            if chunk_index > 0:  # the first call still pays one-off costs
                clock.steady += seconds
                clock.steady_updates += updates_per_chunk
            _check_finite(metrics, done_updates, last_good)
            if log is not None:
                started = wall_offset + tic - run_started
                spread = [
                    started + seconds * (u + 1) / updates_per_chunk
                    for u in range(updates_per_chunk)
                ]
                log.write(_records(metrics, done_updates, cfg, spread))
            done_updates += updates_per_chunk
            chunk_index += 1

            k_key = trainer.round.batches_metric
            speed = updates_per_chunk * cfg.steps_per_update * cfg.seeds / seconds
            status = (
                f"win {metrics['win_rate'][:, -1].mean():.2f} "
                f"ret {metrics['episode_return'][:, -1].mean():.2f} "
                f"{speed / 1e3:.1f}k sps{devices_note} "
                f"K {metrics[k_key][:, -1].mean():.1f}"
            )
            if "update_seconds" in metrics:
                status += f" upd {metrics['update_seconds'][:, -1].mean():.2f}s"
            evaluating = eval_chunks and (
                chunk_index % eval_chunks == 0 or done_updates >= total_updates
            )
            if evaluating:
                greedy, sampled = evaluate(trainer, state)
                evaluated_at = wall_time()
                if log is not None:
                    log.write(_eval_records(done_updates, cfg, greedy, sampled, evaluated_at))
                # The executing policy's win rate, then the others the round scores (B2MAPO: π).
                wins = [v.mean() for k, v in greedy.items() if k.endswith("win_rate")]
                status += " eval " + "/".join(f"{win:.2f}" for win in wins)
                evaluated = Evaluated(
                    done_updates,
                    done_updates * cfg.steps_per_update,
                    evaluated_at,
                    clock.train,
                    greedy,
                    sampled,
                    metrics,
                )
                if on_evaluation is not None:
                    on_evaluation(evaluated)
                stopped = stop is not None and stop(evaluated)
            host_state = trainer.layout.to_host(state)  # every process takes part in the gather
            if evaluating and history is not None:
                history.record(trainer.policies(host_state), done_updates)
            if writer:
                clock.wall = wall_time()
                last_good = str(checkpoint.save(run_dir, done_updates, host_state, asdict(clock)))
            interrupts.checkpointed = done_updates
            progress.update(task, completed=done_updates * cfg.steps_per_update, status=status)

    interrupts.check()
    greedy, sampled = evaluate(trainer, state, episodes=cfg.final_eval_episodes)
    interrupts.check()
    steady = (
        clock.steady_updates * cfg.steps_per_update * cfg.seeds / clock.steady
        if clock.steady
        else None
    )
    summary = Summary(
        run_dir=run_dir,
        updates=done_updates,
        env_steps=done_updates * cfg.steps_per_update,
        eval_greedy=greedy,
        eval_sampled=sampled,
        episodes_per_seed=cfg.final_eval_episodes,
        compile_seconds=clock.compile,
        train_seconds=clock.train,
        steady_steps_per_second=steady,
        devices=trainer.layout.num_devices,
        processes=jax.process_count(),
    )
    if writer:
        rundir.write_summary(run_dir, summary.as_dict())
    return summary


def evaluate_run(run_dir: Path, episodes: int | None = None) -> Summary:
    """Evaluate the newest checkpoint of a run directory with its saved config: the policy
    that executes (for B2MAPO π_ind alone, decentralised)."""
    trainer, update, state = load_state(run_dir)
    cfg = trainer.cfg
    episodes = cfg.final_eval_episodes if episodes is None else episodes
    greedy, sampled = evaluate(trainer, state, joint=False, episodes=episodes)
    return Summary(run_dir, update, update * cfg.steps_per_update, greedy, sampled, episodes)
