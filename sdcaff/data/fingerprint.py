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


def release_utterances(corpus: str) -> int:
    """Returns how many utterance wavs the full release holds (corpora.md: 10,039 IEMOCAP, 8,438 MSP-IMPROV)."""
    from sdcaff.data import iemocap, msp_improv

    if corpus == "iemocap":
        return sum(iemocap.KNOWN_COUNTS["wav files per session"].values())
    if corpus == "msp-improv":
        return msp_improv.KNOWN_COUNTS["utterance wavs"]["all"]
    raise ValueError(f"unknown corpus '{corpus}'")


def describe(corpus: str, fingerprint_dir: str | Path, manifest_dir: str | Path) -> dict:
    """Returns what a metrics file records of a corpus it used: the md5 of its manifest (which utterances,
    labels and speakers: the corpus as the study read it, unlike the fingerprint's file mtimes), whether
    it was synthetic, how many utterances it holds against the release, and that status in words."""
    from sdcaff import digest

    manifest = Path(manifest_dir) / f"{corpus}.csv"
    path = Path(fingerprint_dir) / f"{corpus}.json"
    unknown = {"manifest_md5": None, "synthetic": None, "utterances": None, "release_utterances": None}
    if not manifest.is_file():
        return {**unknown, "status": f"unknown (no manifest {manifest})"}
    try:
        fp = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        fp = None
    with manifest.open(encoding="utf-8") as handle:
        utterances = max(0, sum(1 for _ in handle) - 1)  # one row per utterance after the header
    release = release_utterances(corpus)
    if fp is None:
        return {**unknown, "manifest_md5": digest.file_md5(manifest), "utterances": utterances,
                "release_utterances": release, "status": f"unknown (no fingerprint {path})"}
    if fp.get("synthetic"):
        status = "synthetic"
    elif utterances >= release:
        status = "real, complete"
    else:
        status = f"real subset ({utterances:,} of the release's {release:,} utterances, {100 * utterances / release:.1f} %)"
    return {"manifest_md5": digest.file_md5(manifest), "synthetic": bool(fp.get("synthetic")),
            "utterances": utterances, "release_utterances": release, "status": status}


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
