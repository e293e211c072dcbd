"""Stage fingerprint: a corpus folder's file list, sizes and mtimes -> one small JSON that DVC tracks.

Licensed audio never enters the DVC cache: later stages depend on this file instead, so a changed
corpus (a file added, removed, resized or touched) changes the fingerprint and re-runs them.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import hashlib
import json
import logging
import os
from pathlib import Path

from tqdm import tqdm

from sdcaff import params as params_module
from sdcaff.data import corpora
from sdcaff.errors import CorpusFormatError
from sdcaff.files import atomic_path, ensure_outside

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class FingerprintParams:
    out_dir: str = "results/corpora"  # writes <out_dir>/<corpus>.json, small and tracked in git


def load_params() -> FingerprintParams:
    """Returns params.yaml's `fingerprint` section."""
    return params_module.load("fingerprint", FingerprintParams)


def list_files(root: Path) -> list[tuple[str, int, int]]:
    """Returns (root-relative posix path, size in bytes, mtime in ns) of every file under `root`, sorted."""
    files = []
    # Symlinked folders are followed: a corpus is often assembled from links to another disk.
    for folder, dirs, names in os.walk(root, followlinks=True):
        dirs.sort()
        for name in names:
            path = Path(folder) / name
            stat = path.stat()
            files.append((path.relative_to(root).as_posix(), stat.st_size, stat.st_mtime_ns))
    files.sort()
    return files


def choose_root(corpus: str, root: str | None) -> tuple[Path, bool]:
    """Returns (root, is_synthetic): `root` when given, else $SDCAFF_*, params corpora, or the synthetic default."""
    if root:
        return Path(root), Path(root).resolve() == corpora.synthetic_root(corpus).resolve()
    return corpora.resolve_root(corpus, corpora.load_params())


def check_root(corpus: str, root: Path) -> Path:
    """Returns `root` if it is a directory, else raises naming it."""
    if not root.exists():
        raise CorpusFormatError(
            f"{root}: {corpus} corpus root does not exist; set params corpora.{corpus}.root or "
            f"${corpora.ENV_VARS[corpus]}, or run `sdcaff synth --corpus {corpus}` for the synthetic default"
        )
    if not root.is_dir():
        raise CorpusFormatError(f"{root}: {corpus} corpus root is a file, not a directory")
    return root


def fingerprint(corpus: str, root: str | Path, synthetic: bool) -> dict:
    """Returns the fingerprint record of the corpus folder `root` (plain data, no timestamps of its own)."""
    files = list_files(check_root(corpus, Path(root)))
    digest = hashlib.sha256()
    per_folder: collections.Counter[str] = collections.Counter()
    for rel, size, mtime_ns in tqdm(files, desc=f"{corpus} fingerprint", unit="file", disable=None):
        # surrogateescape: a file name that is not valid UTF-8 still hashes to its own bytes.
        digest.update(f"{rel}\t{size}\t{mtime_ns}\n".encode("utf-8", "surrogateescape"))
        per_folder[rel.split("/", 1)[0] if "/" in rel else "."] += 1
    return {
        "corpus": corpus,
        "root": str(root),
        "synthetic": synthetic,
        "files": len(files),
        "bytes": sum(size for _, size, _ in files),
        "files_per_top_level_folder": dict(sorted(per_folder.items())),
        "sha256": digest.hexdigest(),
    }


def write(record: dict, out: str | Path) -> Path:
    """Returns `out` after writing `record` there as sorted-key JSON, atomically."""
    out = Path(out)
    with atomic_path(out) as tmp:
        tmp.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds --corpus, --root and --out to the verb's parser."""
    parser.add_argument("--corpus", required=True, choices=corpora.CORPORA)
    parser.add_argument("--root", help="corpus folder; default: $SDCAFF_*, params corpora.<corpus>.root, or synthetic")
    parser.add_argument("--out", help="fingerprint JSON; default: <fingerprint.out_dir>/<corpus>.json")


def run(args: argparse.Namespace) -> int:
    """Returns 0 after writing the corpus's fingerprint JSON."""
    params = load_params()
    corpus = corpora.check_corpus(args.corpus)
    root, synthetic = choose_root(corpus, args.root)
    out = Path(args.out) if args.out else Path(params.out_dir) / f"{corpus}.json"
    ensure_outside(out, root, "the fingerprint")
    record = fingerprint(corpus, root, synthetic)
    log.info("read %s corpus at %s: %d files, %d bytes", corpus, root, record["files"], record["bytes"])
    write(record, out)
    log.info("wrote %s (sha256 %s)", out, record["sha256"][:12])
    return 0
