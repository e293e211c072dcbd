"""Atomic outputs: a stage either leaves a complete file or directory, or nothing at all."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from sdcaff.errors import SdcaffError

# errno values that mean the disk (or the user's quota on it) is full: a fault of the machine, not a bug.
NO_SPACE = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "no space left on device (disk quota exceeded)"}
# tempfile.mkstemp and mkdtemp name a temporary <prefix> + 8 of these characters + <suffix>.
TEMP_CHARACTERS = "[a-z0-9_]{8}"


def _no_space(targets: list[Path], temps: list[Path], exc: OSError) -> SdcaffError | None:
    """Returns the error naming the output that a full disk stopped, or None when `exc` is another fault."""
    if exc.errno not in NO_SPACE:
        return None
    # open() names the file it failed on; write() does not, and then the set's one output or its folders are named.
    named = [t for t, tmp in zip(targets, temps) if exc.filename in (str(tmp), str(t))]
    if named or len(targets) == 1:
        where = str((named or targets)[0])
    else:
        where = ", ".join(dict.fromkeys(str(t.parent) for t in targets)) + f" (writing {len(targets)} files)"
    return SdcaffError(f"{where}: {NO_SPACE[exc.errno]}; free some space and run the stage again "
                       "(the previous output is unchanged)")


def _temporary(target: Path) -> Path:
    """Returns a new empty file beside `target`, named .<target name>.XXXXXXXX.tmp."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        # Same directory, so os.replace is a rename on one filesystem, never a copy.
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as exc:
        if exc.errno in NO_SPACE:
            raise
        # Read-only, not a folder, no permission: the user's to fix, and nothing has been replaced yet.
        raise SdcaffError(f"{target.parent}: cannot write {target.name} there ({exc.strerror or exc})") from exc
    os.close(fd)
    return Path(tmp)


@contextlib.contextmanager
def atomic_paths(*targets: str | os.PathLike) -> Iterator[list[Path]]:
    """Yields one temporary path per target; all are renamed onto their targets only if the block succeeds.

    A stage's outputs appear together or not at all: every temporary is written before the first rename,
    so a failure anywhere (a full disk, an unwritable folder, a bug) leaves every previous output as it was.
    """
    targets = [Path(t) for t in targets]
    temps: list[Path] = []
    try:
        for target in targets:
            temps.append(_temporary(target))
        yield list(temps)
        # mkstemp makes 0600 files; give the outputs the permissions any new file would get.
        umask = os.umask(0)
        os.umask(umask)
        for tmp in temps:
            os.chmod(tmp, 0o666 & ~umask)
        for tmp, target in zip(temps, targets):
            os.replace(tmp, target)
    except OSError as exc:
        full = _no_space(targets, temps, exc)
        if full is None:
            raise
        raise full from exc
    finally:
        for tmp in temps:
            if tmp.exists():
                tmp.unlink()


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yields a temporary path beside `target`; renamed onto it only if the block succeeds."""
    with atomic_paths(target) as (tmp,):
        yield tmp


@contextlib.contextmanager
def atomic_dir(target: str | os.PathLike) -> Iterator[Path]:
    """Yields an empty temporary directory beside `target`; it replaces `target` on success."""
    target = Path(target)
    tmp = aside = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
        yield tmp
        if target.exists():
            # Moved aside, not deleted first: a kill between the two renames still leaves the old copy on disk.
            aside = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
            os.rename(target, aside / target.name)
        os.replace(tmp, target)
    except OSError as exc:
        full = _no_space([target], [tmp] if tmp else [], exc)
        if full is None:
            raise
        raise full from exc
    finally:
        for left in (tmp, aside):
            if left is not None and left.exists():
                shutil.rmtree(left)


def remove_stale_temporaries(*targets: str | os.PathLike) -> list[Path]:
    """Returns the temporaries of `targets` that a killed run left (.<name>.XXXXXXXX.tmp beside each), now deleted.

    Only atomic_path's own pattern for these exact names matches, so no other file is ever touched; a stage
    calls this before it starts, since the temporary of a multi-MB output would otherwise outlive every rerun.
    """
    removed = []
    for target in map(Path, targets):
        pattern = re.compile(rf"\.{re.escape(target.name)}\.{TEMP_CHARACTERS}\.tmp")
        if not target.parent.is_dir():
            continue
        for entry in sorted(target.parent.iterdir()):
            if pattern.fullmatch(entry.name) and entry.is_file() and not entry.is_symlink():
                entry.unlink()
                removed.append(entry)
    return removed


def ensure_outside(path: str | os.PathLike, root: str | os.PathLike, what: str, source: str = "") -> None:
    """Raises if `path` lies inside `root`: corpus directories are read-only to the suite.

    source: where `root` was configured (an environment variable, a params key), added to the message.
    """
    p = Path(path).resolve()
    r = Path(root).resolve()
    if p == r or r in p.parents:
        where = f" ({source})" if source else ""
        raise SdcaffError(f"refusing to write {what} {path} inside the corpus directory {root}{where}")
