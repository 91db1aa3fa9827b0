"""Import only the jaxmarl environments b2mapo wraps (SMAX and MPE's simple_spread).

``import jaxmarl`` builds every jaxmarl environment (about 6 s here, a third of a test's
subprocess) and prints a banner about optional submodules. The parent packages' ``__init__``
files are skipped while the two subpackages load, then forgotten, so a later
``import jaxmarl`` elsewhere still runs the real package and reuses these same modules.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types

_PARENTS = ("jaxmarl", "jaxmarl.environments", "jaxmarl.environments.mpe")
_WANTED = ("jaxmarl.environments.smax", "jaxmarl.environments.mpe.simple_spread")


def _import_without_parent_inits() -> None:
    stubs = [name for name in _PARENTS if name not in sys.modules]
    for name in stubs:
        spec = importlib.util.find_spec(name)
        if spec is None or spec.submodule_search_locations is None:
            raise ImportError(f"jaxmarl is not installed ({name} not found)")
        package = types.ModuleType(name)
        package.__path__ = list(spec.submodule_search_locations)
        package.__package__ = name
        sys.modules[name] = package
    try:
        for name in _WANTED:
            importlib.import_module(name)
    finally:
        for name in stubs:
            del sys.modules[name]


_import_without_parent_inits()
