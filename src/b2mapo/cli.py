"""``b2mapo`` command line: ``train``, ``eval``, ``plot``, ``curves``, ``envs``, and the
paper's comparison: ``reproduce``, ``report`` and ``suites``."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

# XLA logs an error-level false alarm for every executable read back from the compilation
# cache (tuning flags such as +prefer-no-gather "not supported on the host"): keep the CLI
# quiet unless the user asks for XLA's logs. Must be set before jaxlib logs anything.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import tyro
from rich.console import Console

from b2mapo.errors import ConfigError, HostEnvError, Interrupted

if TYPE_CHECKING:
    from b2mapo.config import TrainConfig

USAGE = """usage: b2mapo COMMAND [options]; COMMAND is one of

  train      train an algorithm on an environment (b2mapo train --help lists every option)
  eval       evaluate the newest checkpoint of a run directory
  plot       draw a B2MAPO checkpoint's dependency matrix G, DAG and batches as a PNG
  lever      measure how much a B2MAPO checkpoint's DAG can change the return it is paid
  curves     draw training curves of one or several runs (win rate, K, losses) as a PNG
  replay     draw one evaluation episode of a SMAX run as a GIF, agents coloured by batch
  envs       list the registered environments
  reproduce  run a suite of the paper's comparison (algorithms x maps x seeds) and report it
  report     build the comparison report from finished run directories
  suites     list the suites: maps, algorithms, seeds, budgets and expected time
"""


@dataclass(frozen=True)
class EvalArgs:
    """Evaluate the newest checkpoint of a run, greedy and sampled."""

    run_dir: Annotated[Path, tyro.conf.Positional]
    """A directory written by ``b2mapo train``."""
    episodes: int | None = None
    """Episodes per seed; default: the run's ``final_eval_episodes``."""


@dataclass(frozen=True)
class PlotArgs:
    """Draw the DAG generator of a B2MAPO checkpoint at one state: G, the DAG, its batches."""

    run_dir: Annotated[Path, tyro.conf.Positional]
    """A directory written by ``b2mapo train --algo b2mapo``."""
    out: Path | None = None
    """Output PNG; default: ``RUN_DIR/dag_update_XXXXXXXX.png``."""
    update: int | None = None
    """Checkpoint to draw, by update number; default: the newest."""
    seed_index: int = 0
    """Which of the run's seeds (0-based index into ``--seeds``)."""
    env_index: int = 0
    """Which start state: each index resets the environment with its own fixed key."""
    step: int = 0
    """Environment steps π plays (on the generator's DAGs) before the drawn DAG; a multiple
    of the run's ``dag_period``."""
    sampled: bool = False
    """During ``--step``, let the generator and π sample instead of taking their most likely
    choices (the drawing itself always summarises many sampled DAGs)."""
    history: bool = False
    """Draw the DAG over training instead (recorded at every evaluation): a strip of six
    moments as a PNG (``--out``, default ``RUN_DIR/dag_history.png``) and a GIF beside it."""


@dataclass(frozen=True)
class LeverArgs:
    """Measure what the DAG can change on a B2MAPO checkpoint (JAX environments): from the
    same states and keys π plays a period under several layerings; prints the share of the
    period return's variance the layering explains and π's KL to its partners' actions."""

    run_dir: Annotated[Path, tyro.conf.Positional]
    """A directory written by ``b2mapo train --algo b2mapo``."""
    update: int | None = None
    """Checkpoint to measure, by update number; default: the newest."""
    resets: int = 8
    """Episodes whose first period boundaries are the measured states."""
    periods: int = 4
    """Period boundaries measured per episode."""
    keys: int = 4
    """Random keys per state (every layering is played with each)."""
    out: Path | None = None
    """JSON of every seed's figures; default: ``RUN_DIR/lever_update_XXXXXXXX.json``."""


@dataclass(frozen=True)
class CurvesArgs:
    """Draw training curves (win rates, returns, K, update time, losses) of one run, or of
    several overlaid (one colour per run)."""

    run_dirs: Annotated[tuple[Path, ...], tyro.conf.Positional]
    """Directories written by ``b2mapo train``."""
    out: Path | None = None
    """Output PNG; default: ``RUN_DIR/training.png`` for one run, ``curves.png`` for several."""
    x: Literal["env_steps", "wall_time"] = "env_steps"
    """The x axis: env steps per seed, or wall time since the run started (over its
    resumptions: compilation, training, evaluation)."""


@dataclass(frozen=True)
class ReplayArgs:
    """Draw one greedy evaluation episode of a SMAX run as a GIF, each ally coloured by its
    batch (B2MAPO: the generator's DAG of each period)."""

    run_dir: Annotated[Path, tyro.conf.Positional]
    """A directory written by ``b2mapo train`` on a SMAX map."""
    out: Path | None = None
    """Output GIF; default: ``RUN_DIR/episode.gif``."""
    joint: bool = False
    """B2MAPO: let π act batch by batch on the DAGs instead of π_ind, which executes."""
    seed_index: int = 0
    """Which of the run's seeds (0-based index into ``--seeds``)."""
    env_index: int = 0
    """Which start state: each index resets the environment with its own fixed key."""


@dataclass(frozen=True)
class ReproduceArgs:
    """Run a suite of the paper's comparison: every algorithm on every map, the seeds of a run
    vmapped in one program; finished runs are skipped and interrupted ones resumed."""

    suite: str | None = None
    """Which suite (``b2mapo suites`` lists them); required."""
    out: Path = Path("results")
    """Directory of the suite's runs and report (rerun the command to resume)."""


@dataclass(frozen=True)
class ReportArgs:
    """Build the comparison report (curves, tables, aggregate statistics) from run directories
    of any mix of maps, algorithms and seeds."""

    run_dirs: Annotated[tuple[Path, ...], tyro.conf.Positional]
    """Run directories written by ``b2mapo train``, or directories holding some (searched
    below). A directory written by ``b2mapo reproduce`` alone gets its suite's report
    again, rebuilt in place from the runs it holds (``--out`` does not apply)."""
    out: Path = Path("report")
    """Directory for ``report.md``, its PNGs and the JSON."""


def _option(args: list[str], name: str, default: str) -> str:
    """The value of ``--name VALUE`` or ``--name=VALUE`` in ``args`` (the last one given)."""
    value = default
    for i, arg in enumerate(args):
        if arg == f"--{name}" and i + 1 < len(args):
            value = args[i + 1]
        elif arg.startswith(f"--{name}="):
            value = arg.split("=", 1)[1]
    return value


def _check_choices(args: list[str]) -> None:
    """A closed choice (``--algo``, ``--partition``, ...) given a value it does not offer is
    the config's one-line ``ConfigError``, before tyro would answer with a box of lines."""
    from b2mapo.config import TrainConfig, check_choice, field_choices

    for name in field_choices():
        for spelling in (name.replace("_", "-"), name):
            check_choice(name, _option(args, spelling, getattr(TrainConfig, name)))


def _number(name: str, kind: type, value: str) -> str:
    """``value`` of the number option ``name`` as tyro parses it: an integer written as a
    whole float (``1e6``) in digits; any other non-number is the config's one-line error."""
    try:
        number = float(value)
    except ValueError:
        raise ConfigError(f"{name}={value!r} must be a number") from None
    if kind is float or value.lstrip("+-").isdigit():
        return value
    if not number.is_integer():
        raise ConfigError(f"{name}={value} must be a whole number")
    return str(int(number))


def _normalise_numbers(args: list[str]) -> list[str]:
    """Number options as ``--name=VALUE`` (so that ``--lr -inf`` is not read as a flag), their
    values checked and whole floats of integer options (``--total-steps 1e6``) made integers."""
    from b2mapo.config import number_fields

    kinds = {
        f"--{spelling}": (name, kind)
        for kind in (int, float)
        for name in number_fields(kind)
        for spelling in (name, name.replace("_", "-"))
    }
    out: list[str] = []
    rest = iter(args)
    for arg in rest:
        flag, joined, value = arg.partition("=")
        if flag not in kinds:
            out.append(arg)
            continue
        if not joined:
            value = next(rest, None)
            if value is None:
                out.append(arg)
                continue
        out.append(f"{flag}={_number(*kinds[flag], value)}")
    return out


def _preset_defaults(args: list[str]) -> TrainConfig:
    """Defaults for ``train``: the config defaults overlaid with the ``--algo`` preset and
    the ``--env`` family's defaults (football: independent parameters)."""
    from b2mapo.config import TrainConfig, defaults_for

    algo = _option(args, "algo", TrainConfig.algo)
    env = _option(args, "env", TrainConfig.env)
    return TrainConfig(**{**defaults_for(algo, env), "algo": algo, "env": env})


def _train(args: list[str], console: Console) -> None:
    from b2mapo.config import TrainConfig, resolve
    from b2mapo.parallel import is_writer
    from b2mapo.runner import train
    from b2mapo.summary import summary_table

    _check_choices(args)
    args = _normalise_numbers(args)
    parsed = tyro.cli(TrainConfig, args=args, default=_preset_defaults(args), prog="b2mapo train")
    cfg = resolve(parsed.to_dict())
    if not is_writer():
        console = Console(quiet=True)
    summary = train(cfg, console)
    console.print(summary_table(summary, f"{cfg.algo} on {cfg.env}"))


def _eval(args: list[str], console: Console) -> None:
    from b2mapo.runner import evaluate_run
    from b2mapo.summary import summary_table

    parsed = tyro.cli(EvalArgs, args=args, prog="b2mapo eval")
    summary = evaluate_run(parsed.run_dir, parsed.episodes)
    console.print(summary_table(summary, f"evaluation of {parsed.run_dir}"))
    console.print_json(json.dumps(summary.as_dict()))


def _plot(args: list[str], console: Console) -> None:
    from b2mapo.dag_plots import plot_dag, plot_dag_history

    parsed = tyro.cli(PlotArgs, args=args, prog="b2mapo plot")
    if parsed.history:
        gif = None if parsed.out is None else parsed.out.with_suffix(".gif")
        for path in plot_dag_history(parsed.run_dir, parsed.out, gif):
            console.print(f"wrote {path}")
        return
    out = plot_dag(
        parsed.run_dir,
        parsed.out,
        parsed.update,
        parsed.seed_index,
        parsed.env_index,
        greedy=not parsed.sampled,
        steps=parsed.step,
    )
    console.print(f"wrote {out}")


def _lever(args: list[str], console: Console) -> None:
    import jax
    from rich.table import Table

    from b2mapo.envs.registry import is_host
    from b2mapo.policy import load_learned_state
    from b2mapo.rundir import write_json
    from b2mapo.upper.lever import measure

    parsed = tyro.cli(LeverArgs, args=args, prog="b2mapo lever")
    for name in ("resets", "periods", "keys"):
        if getattr(parsed, name) < 1:
            raise ConfigError(f"--{name} {getattr(parsed, name)} must be a positive integer")
    trainer, update, state = load_learned_state(parsed.run_dir, parsed.update)
    cfg = trainer.cfg
    if is_host(cfg.env):
        raise ConfigError(
            f"{cfg.env} is stepped in worker processes: its periods cannot be replayed"
        )
    policies = trainer.policies(state)
    seeds = []
    for index in range(cfg.seeds):
        one = jax.tree.map(lambda x, i=index: x[i], policies)
        key = jax.random.PRNGKey(cfg.seed + index)
        lever = measure(trainer.round, one, key, parsed.resets, parsed.periods, parsed.keys)
        seeds.append({"seed": cfg.seed + index, **lever.to_dict()})
    table = Table(title=f"the DAG's lever, {cfg.env} {cfg.algo} update {update}")
    for column in ("seed", "layering share", "π KL to partners (nats)", "return sd"):
        table.add_column(column, justify="right")
    for row in seeds:
        table.add_row(
            str(row["seed"]),
            f"{row['layering_share']:.4f}",
            f"{row['preceding_kl']:.4f}",
            f"{row['return_sd']:.3f}",
        )
    console.print(table)
    out = parsed.out or parsed.run_dir / f"lever_update_{update:08d}.json"
    write_json(out, {"run_dir": str(parsed.run_dir), "update": update, "seeds": seeds})
    console.print(f"wrote {out}")


def _curves(args: list[str], console: Console) -> None:
    from b2mapo.plots import plot_training

    parsed = tyro.cli(CurvesArgs, args=args, prog="b2mapo curves")
    console.print(f"wrote {plot_training(list(parsed.run_dirs), parsed.out, parsed.x)}")


def _envs(args: list[str], console: Console) -> None:
    from b2mapo.envs import REGISTRY, make_env
    from b2mapo.envs.registry import HOST_FAMILIES

    del args
    for name in REGISTRY:
        spec = make_env(name).spec
        console.print(
            f"{name:24s} agents {spec.num_agents:3d}  obs {spec.obs_dim:4d}  "
            f"state {spec.state_dim:4d}  actions {spec.num_actions:3d}  "
            f"episode limit {spec.episode_limit}",
            soft_wrap=True,  # one line per environment, also when piped
        )
    for description in HOST_FAMILIES.values():
        console.print(f"{description} (stepped in worker processes)", soft_wrap=True)


def _replay(args: list[str], console: Console) -> None:
    from b2mapo.replay import replay

    parsed = tyro.cli(ReplayArgs, args=args, prog="b2mapo replay")
    path = replay(parsed.run_dir, parsed.out, parsed.joint, parsed.seed_index, parsed.env_index)
    console.print(f"wrote {path}")


def _reproduce(args: list[str], console: Console) -> None:
    from b2mapo.reproduce.schedule import run_suite
    from b2mapo.reproduce.suites import get_suite

    parsed = tyro.cli(ReproduceArgs, args=args, prog="b2mapo reproduce")
    if parsed.suite is None:
        from b2mapo.reproduce.suites import SUITES

        raise ConfigError(f"choose a suite with --suite NAME, one of: {', '.join(SUITES)}")
    console.print(f"wrote {run_suite(get_suite(parsed.suite), parsed.out, console)}")


def _report(args: list[str], console: Console) -> None:
    from b2mapo.reproduce.report import build_report
    from b2mapo.reproduce.schedule import SUITE_FILE, report_suite_dir, suite_time_tables
    from b2mapo.rundir import find_run_dirs

    parsed = tyro.cli(ReportArgs, args=args, prog="b2mapo report")
    if len(parsed.run_dirs) == 1 and (parsed.run_dirs[0] / SUITE_FILE).is_file():
        console.print(f"wrote {report_suite_dir(parsed.run_dirs[0])}")
        return
    run_dirs = find_run_dirs(parsed.run_dirs)
    extra = suite_time_tables(run_dirs)
    console.print(f"wrote {build_report(run_dirs, parsed.out, extra_markdown=extra)}")


def _suites(args: list[str], console: Console) -> None:
    from b2mapo.reproduce.suites import SUITES

    del args
    for suite in SUITES.values():
        console.print(f"[bold]{suite.name}[/]: {suite.description}", soft_wrap=True)
        console.print(
            f"  algorithms {', '.join(suite.algos)}; {suite.seeds} seeds; expected "
            f"{suite.expected}",
            soft_wrap=True,
        )
        for setting in suite.maps:
            console.print(f"  {setting.env}: {setting.total_steps:,} env steps", soft_wrap=True)


# Commands that compile nothing; the views among them (curves) import no JAX at all.
NO_COMPILATION = frozenset({"curves", "report", "suites"})

COMMANDS = {
    "train": _train,
    "eval": _eval,
    "plot": _plot,
    "lever": _lever,
    "curves": _curves,
    "envs": _envs,
    "replay": _replay,
    "reproduce": _reproduce,
    "report": _report,
    "suites": _suites,
}


def _cpu_identity() -> str:
    """A short name for this machine's CPU model and features (Linux: /proc/cpuinfo)."""
    cpuinfo = Path("/proc/cpuinfo")
    text = cpuinfo.read_text() if cpuinfo.is_file() else platform.processor()
    lines = sorted({line for line in text.splitlines() if line.startswith(("model name", "flags"))})
    digest = hashlib.sha256("\n".join(lines).encode()).hexdigest()[:12]
    return f"{platform.machine()}-{digest}"


def _use_compilation_cache() -> None:
    """Keep compiled programs between runs (JAX's persistent cache), so that a rerun of a
    config skips compilation; ``JAX_COMPILATION_CACHE_DIR`` chooses another directory.

    The default directory is per CPU kind: a home directory shared by different machines
    must not hand one CPU's machine code to another (XLA warns such code may SIGILL).
    """
    import jax

    if not jax.config.jax_compilation_cache_dir:
        cache_home = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        cache_dir = cache_home / "b2mapo" / "jax" / _cpu_identity()
        jax.config.update("jax_compilation_cache_dir", str(cache_dir))


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``b2mapo`` console script."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        sys.exit(0 if argv else 2)
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(
            f"b2mapo: error: unknown command {command!r}; choose one of: {', '.join(COMMANDS)}",
            file=sys.stderr,
        )
        sys.exit(2)
    console = Console()
    # ``--env mypkg.envs:MyGame`` finds a package in the working directory, as ``python -m``
    # would (last on the path, so that it shadows nothing installed).
    sys.path.append(os.getcwd())
    try:
        if command == "train":  # a multi-process launch (B2MAPO_COORDINATOR, ...), else nothing
            from b2mapo.parallel import initialise_processes

            initialise_processes()  # before anything starts JAX's backend (importing jaxmarl does)
        if command not in NO_COMPILATION:
            _use_compilation_cache()
        COMMANDS[command](rest, console)
    except (ConfigError, OSError) as error:  # OSError: a path that cannot be read or written
        print(f"b2mapo {command}: error: {error}", file=sys.stderr)
        sys.exit(2)
    except HostEnvError as error:  # a host environment's worker failed; checkpoints are kept
        print(f"b2mapo {command}: error: {error}", file=sys.stderr)
        sys.exit(1)
    except Interrupted as error:  # SIGINT or SIGTERM during training; checkpoints are kept
        print(f"b2mapo {command}: {error}", file=sys.stderr)
        sys.exit(130)
    except KeyboardInterrupt:  # Ctrl-C anywhere else
        print(f"b2mapo {command}: interrupted", file=sys.stderr)
        sys.exit(130)
