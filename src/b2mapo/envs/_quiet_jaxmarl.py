"""Import jaxmarl without its banner: it prints about optional submodules on every import.

The banner is silenced at the file-descriptor level because one of jaxmarl's imports puts
``sys.stdout`` back to the process's own stream, past any ``contextlib.redirect_stdout``.
"""

import os
import sys

sys.stdout.flush()
_saved_stdout = os.dup(1)
try:
    with open(os.devnull, "w") as _devnull:
        os.dup2(_devnull.fileno(), 1)
        import jaxmarl.environments  # noqa: F401
finally:
    sys.stdout.flush()
    os.dup2(_saved_stdout, 1)
    os.close(_saved_stdout)
