"""The default build id of a worker: a short hash of the code that defines workflow behaviour.

Workflow changes ship as a new Worker Deployment Version (docs/operations.md, "Rolling out a
workflow change"), so a changed workflow must be a new build id without anyone having to
remember to bump one. The hash covers the modules of the ``workflows`` package that define
workflows and the first-party modules they import, and what those import in turn (the data
models, the spec, pagination, usage...): the code a workflow runs or whose types shape its
history. An activity module counts as an interface (the names and types a workflow calls):
it is hashed, what it imports is not. Code only activities run (parsers, embedders, SQL),
and the settings, are not in it: changing them is a rolling restart within the same
version. ``DOCINDEX_BUILD_ID`` overrides it (an image tag, a git sha).

The files are read, not imported, so computing it costs a few milliseconds and no imports.
"""

from __future__ import annotations

import ast
import hashlib
from functools import lru_cache
from pathlib import Path

# Sibling packages of this one: in a checkout and in site-packages alike.
ROOT = Path(__file__).resolve().parents[1]
FIRST_PARTY = ("workflows", "activities", "docindex", "workers")
WORKFLOWS = "workflows"
# Hashed, not followed: an activity module is the interface a workflow calls.
INTERFACES = ("activities",)
# Not hashed: settings are read by the API and the workers, never inside a workflow.
OUTSIDE = {"docindex.config"}


def _module_file(module: str) -> Path | None:
    base = ROOT.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _package_of(path: Path) -> list[str]:
    """The package a relative import in ``path`` starts from (an ``__init__``'s own)."""
    return list(path.relative_to(ROOT).parent.parts)


def _imported_modules(path: Path) -> set[str]:
    """First-party modules ``path`` imports, anywhere in the file (``from a import b`` counts
    ``a.b`` when that is a module, else ``a``)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_bytes(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                package = _package_of(path)
                package = package[: len(package) - (node.level - 1)]
                base = ".".join([*package, *([node.module] if node.module else [])])
            else:
                base = node.module or ""
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return {m for m in found if m.split(".")[0] in FIRST_PARTY and _module_file(m)}


def _with_packages(module: str) -> set[Path]:
    """A module's file and its packages' ``__init__`` files (importing it runs them)."""
    parts = module.split(".")
    files = {_module_file(".".join(parts[:depth])) for depth in range(1, len(parts) + 1)}
    return {f for f in files if f is not None}


def workflow_sources() -> list[Path]:
    """The files the build id hashes, sorted: the modules of the ``workflows`` package that
    define workflows and the first-party modules they import, transitively, except through
    activity modules and into the settings."""
    package = ROOT / WORKFLOWS
    todo = [
        p
        for p in package.rglob("*.py")
        if "__pycache__" not in p.parts and "@workflow.defn" in p.read_text()
    ]
    followed: set[Path] = set()
    hashed: set[Path] = set()
    while todo:
        path = todo.pop()
        if path in followed:
            continue
        followed.add(path)
        hashed.add(path)
        for module in _imported_modules(path) - OUTSIDE:
            files = _with_packages(module)
            hashed |= files
            if module.split(".")[0] not in INTERFACES:
                todo.extend(files)
    return sorted(hashed)


@lru_cache(maxsize=1)
def workflow_build_id() -> str:
    """12 hex digits of sha256 over the workflow sources' paths and bytes."""
    digest = hashlib.sha256()
    for path in workflow_sources():
        digest.update(path.relative_to(ROOT).as_posix().encode())
        digest.update(b"\0")
        digest.update(path.read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()[:12]
