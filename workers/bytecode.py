"""Bytecode for the workflow modules, written even where PYTHONDONTWRITEBYTECODE is set.

Temporal's workflow sandbox imports a workflow's module afresh for every workflow it runs.
With no ``.pyc`` to load (the variable is common in containers, and set on this project's
build machines) that import compiles the module's source each time: about 3 ms per
document, a fifth of the workflow worker's CPU per document, measured with py-spy. A stale
file is harmless: Python checks it against the source's modification time.
"""

from __future__ import annotations

import compileall
import logging
from pathlib import Path

log = logging.getLogger(__name__)


def compile_workflow_modules() -> bool:
    """Write ``__pycache__`` for the ``workflows`` package; False where it cannot (a
    read-only install, which then compiles per workflow as before)."""
    import workflows

    package = Path(workflows.__file__).parent
    written = bool(compileall.compile_dir(package, quiet=2, maxlevels=0))
    if not written:
        log.info("could not write bytecode in %s: the sandbox compiles per workflow", package)
    return written
