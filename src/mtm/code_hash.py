"""A hash of the `mtm` code a workflow script runs, for the rules' `params:`.

Snakemake's `code` rerun trigger sees the script of a rule but not the package it imports, so a
change in `src/mtm` would leave stale results that look current. Each rule therefore carries
`code_hash(script)` among its params: the `params` trigger reruns exactly the jobs whose scripts
reach a changed module.

The hash covers the script and every `mtm` module it can import, followed transitively through
`import` statements anywhere in a file (lazy imports too), including the packages' `__init__`
files that an import runs. It is computed from each file's syntax tree without docstrings, so
comments, docstrings and formatting do not count; any change to what the code does, does.
"""

import ast
import hashlib
from functools import lru_cache
from pathlib import Path

import mtm

PACKAGE = "mtm"
PACKAGE_DIR = Path(mtm.__file__).resolve().parent


def code_hash(script: str | Path, package_dir: Path = PACKAGE_DIR) -> str:
    """16 hex digits over the script and the `mtm` modules it reaches (see the module docstring);
    `package_dir` is the `mtm` package's folder."""
    digest = hashlib.sha256(_normalised_source(Path(script)).encode())
    for module in sorted(reachable_modules(script, package_dir)):
        digest.update(module.encode())
        digest.update(_normalised_source(_module_file(module, package_dir)).encode())
    return digest.hexdigest()[:16]


def reachable_modules(script: str | Path, package_dir: Path = PACKAGE_DIR) -> set[str]:
    """Dotted names of the `mtm` modules `script` imports, directly or through other modules."""
    seen: set[str] = set()
    todo = _imported_modules(Path(script), None, package_dir)
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        path = _module_file(module, package_dir)
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        todo |= _imported_modules(path, package, package_dir) - seen
    return seen


def _imported_modules(path: Path, package: str | None, package_dir: Path) -> set[str]:
    """The `mtm` modules that the imports of the file at `path` run; `package` resolves relative
    imports (None for a script outside the package)."""
    found: set[str] = set()
    for node in ast.walk(_parse(path)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node.module, node.level, package, path)
            # `from a import b`: b is a submodule or a name defined in a
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            if name == PACKAGE or name.startswith(PACKAGE + "."):
                found |= {m for m in _with_parents(name) if _is_module(m, package_dir)}
    return found


def _absolute(module: str | None, level: int, package: str | None, path: Path) -> str:
    if level == 0:
        return module or ""
    if package is None:
        raise ValueError(f"{path}: a relative import outside the mtm package")
    parts = package.split(".")
    base = ".".join(parts[: len(parts) - level + 1])
    return f"{base}.{module}" if module else base


def _with_parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


def _is_module(name: str, package_dir: Path) -> bool:
    try:
        _module_file(name, package_dir)
    except FileNotFoundError:
        return False
    return True


def _module_file(name: str, package_dir: Path) -> Path:
    relative = name.split(".")[1:]
    if not relative:
        return package_dir / "__init__.py"
    base = package_dir.joinpath(*relative)
    for candidate in (base / "__init__.py", base.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"{name}: no such module in {package_dir}")


# Parsed files are cached by (path, mtime, size): Snakemake computes a hash per rule, and the
# rules' scripts share most of their modules.
def _parse(path: Path) -> ast.Module:
    stat = path.stat()
    return _parse_version(path, stat.st_mtime_ns, stat.st_size)


@lru_cache(maxsize=None)
def _parse_version(path: Path, mtime_ns: int, size: int) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def _normalised_source(path: Path) -> str:
    stat = path.stat()
    return _normalised_version(path, stat.st_mtime_ns, stat.st_size)


@lru_cache(maxsize=None)
def _normalised_version(path: Path, mtime_ns: int, size: int) -> str:
    """The syntax tree of the file without docstrings, as text: blind to comments and layout."""
    tree = ast.parse(path.read_text(), filename=str(path))  # a copy of its own: this strips it
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                if isinstance(body[0].value.value, str):
                    node.body = body[1:] or [ast.Pass()]
    return ast.dump(tree)
