"""Mutation check of the update's formulas: each mutant changes one formula of the source, in
a copy of ``src/``, and the quick tests that guard it run on that copy; a mutant is killed
when they fail. Every mutant listed must be killed: a survivor is a formula no test guards.

    python benchmarks/mutations.py                 # all mutants (a few minutes on 2 cores)
    python benchmarks/mutations.py --only happo    # the mutants whose name contains "happo"

It prints a table, ends with ``killed K of N`` and writes the results to ``--out`` (default
``benchmarks/results/mutations.json``; git-ignored). Exit status 1 if a mutant survives.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = Path(__file__).parent / "results" / "mutations.json"


class Mutant(NamedTuple):
    """One formula changed: ``old`` (which must occur once in ``path``) becomes ``new``."""

    name: str
    path: str  # relative to src/b2mapo
    old: str
    new: str
    tests: tuple[str, ...]  # quick test files (or node ids) that must kill it


ENGINE, NETWORKS = "engine.py", "networks.py"
FORMULAS = ("tests/test_formulas.py",)

MUTANTS = (
    Mutant(
        "earlier factor clipped to 1 ± ε, not 1 ± ε/2",
        ENGINE,
        "half = settings.clip_eps / 2",
        "half = settings.clip_eps",
        FORMULAS,
    ),
    Mutant(
        "earlier factor applied outside the clip",
        ENGINE,
        "ratio * jnp.clip(preceding, 1 - half, 1 + half), advantages, settings.clip_eps",
        "ratio, advantages, settings.clip_eps) * jnp.clip(preceding, 1 - half, 1 + half",
        FORMULAS,
    ),
    Mutant(
        "happo's M inside the clip",
        ENGINE,
        "return preceding * clipped_surrogate(ratio, advantages, settings.clip_eps)",
        "return clipped_surrogate(ratio * preceding, advantages, settings.clip_eps)",
        FORMULAS,
    ),
    Mutant(
        "happo's M clipped",
        ENGINE,
        "return preceding * clipped_surrogate(ratio, advantages, settings.clip_eps)",
        "return jnp.clip(preceding, 0.8, 1.2) * clipped_surrogate("
        "ratio, advantages, settings.clip_eps)",
        FORMULAS,
    ),
    Mutant(
        "earlier-batch actions visible to the same batch",
        NETWORKS,
        "earlier = batch_index[..., None, :] < batch_index[..., :, None]",
        "earlier = batch_index[..., None, :] <= batch_index[..., :, None]",
        FORMULAS,
    ),
    Mutant(
        "agent id one-hot zeroed",
        NETWORKS,
        "return jnp.concatenate([x, agent_ids(x.shape[-2], x.shape[:-2])], axis=-1)",
        "return jnp.concatenate([x, 0 * agent_ids(x.shape[-2], x.shape[:-2])], axis=-1)",
        ("tests/test_networks.py",),
    ),
)


def run_tests(tests: tuple[str, ...], workdir: Path, mutant: Mutant | None) -> tuple[int, float]:
    """pytest's exit status on ``tests`` against a copy of the source carrying ``mutant``
    (None: the source as it is), and the seconds they took."""
    src = workdir / "src"
    if src.exists():
        shutil.rmtree(src)
    shutil.copytree(ROOT / "src", src, ignore=shutil.ignore_patterns("__pycache__"))
    if mutant is not None:
        path = src / "b2mapo" / mutant.path
        text = path.read_text()
        if text.count(mutant.old) != 1:
            raise SystemExit(f"mutant {mutant.name!r}: its formula is not once in {mutant.path}")
        path.write_text(text.replace(mutant.old, mutant.new))
    env = {**os.environ, "PYTHONPATH": str(src)}
    started = time.perf_counter()
    command = [sys.executable, "-m", "pytest", "-q", "-x", "-m", "not slow", "-p"]
    result = subprocess.run(
        [*command, "no:cacheprovider", *tests], cwd=ROOT, env=env, capture_output=True
    )
    return result.returncode, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="run the mutants whose name contains this")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    mutants = [m for m in MUTANTS if args.only in m.name]
    console = Console()
    table = Table(title="formula mutants")
    for column in ("mutant", "file", "killed", "seconds"):
        table.add_column(column)
    results = []
    with tempfile.TemporaryDirectory() as workdir:
        guarding = tuple(dict.fromkeys(t for m in mutants for t in m.tests))
        if run_tests(guarding, Path(workdir), None)[0] != 0:
            raise SystemExit(f"the tests fail on the unchanged source: {' '.join(guarding)}")
        for mutant in mutants:
            status, seconds = run_tests(mutant.tests, Path(workdir), mutant)
            # pytest exits 1 when tests fail; anything else (2: collection) is not a kill.
            killed = status == 1
            verdict = "yes" if killed else ("SURVIVED" if status == 0 else f"error ({status})")
            results.append({"mutant": mutant.name, "killed": killed, "seconds": seconds})
            table.add_row(mutant.name, mutant.path, verdict, f"{seconds:.0f}")
    console.print(table)
    killed = sum(r["killed"] for r in results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    record = {"killed": killed, "total": len(results), "mutants": results}
    args.out.write_text(json.dumps(record, indent=2))
    console.print(f"killed {killed} of {len(results)}")
    sys.exit(0 if killed == len(results) else 1)


if __name__ == "__main__":
    main()
