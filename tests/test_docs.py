"""The docs stay true to the code: every name they cite exists, and the README's map of the
source lists every module."""

from __future__ import annotations

import importlib
import pkgutil
import re
from pathlib import Path

import pytest

import b2mapo

ROOT = Path(__file__).parents[1]
# The dated experiment logs keep the names of their day.
DOCS = [
    ROOT / "README.md",
    *sorted(set((ROOT / "docs").glob("*.md")) - {ROOT / "docs" / "experiments.md"}),
]
SOURCE = ROOT / "src" / "b2mapo"
# A backticked dotted name whose first part is a b2mapo module: `engine.run_stage`,
# `upper.generator.UpperLayer.update`, `b2mapo.load_policy`.
CITED = re.compile(r"`((?:b2mapo\.)?[a-z_]+(?:\.[A-Za-z_][A-Za-z0-9_]*)+)(?:\(\))?`")


def _modules() -> set[str]:
    """b2mapo's modules, as dotted names below ``b2mapo``."""
    found = set()
    for info in pkgutil.walk_packages(b2mapo.__path__, "b2mapo."):
        found.add(info.name.removeprefix("b2mapo."))
    return found


MODULES = _modules()
# Short names the docs use for modules below a package (``dag.layering`` for
# ``upper.dag.layering``) and for the objects a doc works with (``policy.act`` on a loaded
# ``Policy``).
ALIASES = {
    **{m.rsplit(".", 1)[1]: m for m in MODULES if "." in m},
    "policy": "policy.Policy",
}


def _resolves(name: str) -> bool:
    """Whether ``name`` (without ``b2mapo.``), or it with its first part read as an alias, is
    a module or an attribute path inside one (dataclass fields count as attributes)."""
    first, _, rest = name.partition(".")
    alias = ALIASES.get(first)
    return _exists(name) or (alias is not None and _exists(f"{alias}.{rest}"))


def _exists(name: str) -> bool:
    parts = name.split(".")
    for split in range(len(parts), 0, -1):
        module = ".".join(parts[:split])
        if module in MODULES:
            target = importlib.import_module(f"b2mapo.{module}")
            for attribute in parts[split:]:
                fields = getattr(target, "__dataclass_fields__", {})
                if attribute in fields and not hasattr(target, attribute):
                    return True
                if not hasattr(target, attribute):
                    return False
                target = getattr(target, attribute)
            return True
    return False


def cited_names(text: str) -> list[str]:
    """The dotted names ``text`` cites whose first part is one of b2mapo's modules."""
    names = []
    for match in CITED.finditer(text):
        name = match.group(1).removeprefix("b2mapo.")
        first = name.split(".")[0]
        known = {m.split(".")[0] for m in MODULES} | set(ALIASES)
        if first in known and not name.endswith((".py", ".md", ".json", ".jsonl")):
            names.append(name)
    return names


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_cited_name_exists(doc: Path) -> None:
    missing = sorted({n for n in cited_names(doc.read_text()) if not _resolves(n)})
    assert not missing, f"{doc.name} cites names the code does not have: {missing}"


def test_the_readme_maps_every_module() -> None:
    readme = (ROOT / "README.md").read_text()
    unmapped = []
    for path in sorted(SOURCE.rglob("*.py")):
        if path.name in ("__init__.py", "__main__.py"):
            continue
        relative = path.relative_to(ROOT)
        folder_row = f"`{path.parent.relative_to(ROOT)}/`"
        named_in_folder_row = any(
            folder_row in line and f"`{path.name}`" in line for line in readme.splitlines()
        )
        if f"`{relative}`" not in readme and not named_in_folder_row:
            unmapped.append(str(relative))
    assert not unmapped, f"the README's map of the source misses {unmapped}"


OUTSIDE = re.compile(r"\.\./shared|SPEC(\.md)? §|HYPERPARAMS|the issue's")


def test_no_doc_or_help_text_names_a_file_outside_the_repository() -> None:
    """The docs, the sources (whose docstrings are ``--help``) and the benchmarks stand on
    their own: no reference to the development notes beside the repository."""
    texts = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    texts += sorted((ROOT / "src").rglob("*.py")) + sorted((ROOT / "benchmarks").glob("*.py"))
    named = [
        f"{path.relative_to(ROOT)}:{number}"
        for path in texts
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if OUTSIDE.search(line)
    ]
    assert named == []
