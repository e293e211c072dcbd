"""Content digests: what a cached result's key covers (files by their bytes, code by its source).

DVC keys a stage on the md5 of every dep; a trained unit is keyed the same way, so a unit is served
from artifacts/runs only while its feature files, split files and training code are the ones it saw.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.util
import os
import sys
from pathlib import Path

CHUNK = 1 << 20  # read files in 1 MiB pieces: feature files of the full corpora are hundreds of MB


def file_md5(path: str | os.PathLike) -> str:
    """Returns the md5 of a file's bytes (DVC's own checksum for a file dep)."""
    path = Path(path)
    stat = path.stat()
    return _file_md5(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _file_md5(path: str, size: int, mtime_ns: int) -> str:
    """Returns the md5 of `path`, remembered per (path, size, mtime): a rewritten file is read again."""
    digest = hashlib.md5()
    with open(path, "rb") as stream:
        while block := stream.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def module_files(name: str) -> list[Path]:
    """Returns the source files of module `name`: its file, or every .py file under a package's folder.

    A module not yet imported is found without running it (only its parent packages are imported), so
    `sdcaff evaluate` keys units on the training code without loading torch.
    """
    module = sys.modules.get(name)
    if module is not None:
        origin = Path(module.__file__)
    else:
        try:
            spec = importlib.util.find_spec(name)
        except ModuleNotFoundError:  # a parent package that is not on the import path
            spec = None
        if spec is not None and spec.origin not in (None, "built-in", "frozen"):
            origin = Path(spec.origin)
        else:  # a model module that is only a file under the working directory (train.import_model)
            base = Path(*name.split("."))
            origin = base / "__init__.py" if (base / "__init__.py").is_file() else base.with_suffix(".py")
            if not origin.is_file():
                raise ModuleNotFoundError(f"no module named '{name}' (nor {base}.py or {base}/__init__.py)",
                                          name=name)
    if origin.name == "__init__.py":
        return sorted(origin.parent.rglob("*.py"))
    return [origin]


def code_digest(names: list[str] | tuple[str, ...]) -> str:
    """Returns one md5 over the source of the named modules, each file named within its module."""
    digest = hashlib.md5()
    for name in sorted(set(names)):
        files = module_files(name)
        base = files[0].parent if len(files) > 1 or files[0].name == "__init__.py" else None
        for path in files:
            label = f"{name}/{path.relative_to(base).as_posix()}" if base is not None else name
            digest.update(label.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()
