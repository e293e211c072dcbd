"""Stage manifest: run one corpus parser, log its counts beside the full release's, write manifest CSV."""

from __future__ import annotations

import argparse
import dataclasses
import logging
from pathlib import Path

import pandas as pd

from sdcaff import params as params_module
from sdcaff.data import corpora, iemocap, msp_improv
from sdcaff.data.fingerprint import check_root, choose_root
from sdcaff.errors import CorpusFormatError, ManifestError
from sdcaff.files import atomic_path, ensure_outside

log = logging.getLogger(__name__)

# docs/architecture.md: the manifest contract, in this order; a parser's extra columns follow.
COLUMNS = (
    "utt_id", "corpus", "path", "session", "speaker", "gender", "label", "mode", "sample_rate", "num_samples", "target",
)
PARSERS = {"iemocap": iemocap, "msp-improv": msp_improv}


@dataclasses.dataclass(frozen=True)
class ManifestParams:
    out_dir: str = "artifacts/manifest"  # writes <out_dir>/<corpus>.csv, read by `sdcaff splits`
    allow_missing: bool = False  # true: a labelled utterance without its wav is counted and dropped


def load_params() -> ManifestParams:
    """Returns params.yaml's `manifest` section."""
    return params_module.load("manifest", ManifestParams)


def read(path: str | Path, corpus: str, columns: tuple[str, ...]) -> pd.DataFrame:
    """Returns the manifest CSV at `path` as strings; raises ManifestError naming the file if unusable."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"{path}: manifest not found; run `sdcaff manifest --corpus {corpus}` first")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{path}: not a readable manifest CSV: {exc}") from exc
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ManifestError(f"{path}:1: missing column(s) {', '.join(missing)}; the reader needs {', '.join(columns)}")
    return frame


def build(corpus: str, root: str | Path, allow_missing: bool = False) -> tuple[pd.DataFrame, dict[str, dict[str, int]]]:
    """Returns (manifest frame sorted by utt_id, found counts) for the corpus at `root`."""
    root = check_root(corpus, Path(root))
    rows, found = PARSERS[corpus].parse(root, allow_missing=allow_missing)
    if not rows:
        raise CorpusFormatError(f"{root}: no {corpus} utterances found")
    frame = pd.DataFrame(rows)
    extras = [c for c in frame.columns if c not in COLUMNS]
    frame = frame[list(COLUMNS) + extras].sort_values("utt_id", kind="stable").reset_index(drop=True)
    return frame, found


def compare_counts(corpus: str, found: dict[str, dict[str, int]], synthetic: bool) -> int:
    """Returns how many counts differ from the full release; logs each group, warning on a real copy."""
    differing = 0
    for name, known in PARSERS[corpus].KNOWN_COUNTS.items():
        got = found.get(name, {})
        keys = list(known) + sorted(k for k in got if k not in known)
        log.info(
            "%s %s: %s (total %d; full release %d)",
            corpus, name, ", ".join(f"{k} {got.get(k, 0)}" for k in keys), sum(got.values()), sum(known.values()),
        )
        diffs = [f"{k} {got.get(k, 0)} vs {known.get(k, 0)} ({got.get(k, 0) - known.get(k, 0):+d})"
                 for k in keys if got.get(k, 0) != known.get(k, 0)]
        if diffs:
            differing += len(diffs)
            # A synthetic corpus is small by design and a user's copy may be a subset: never a stop.
            level = logging.INFO if synthetic else logging.WARNING
            note = " (synthetic corpus: smaller by design)" if synthetic else ""
            log.log(level, "%s %s differs from the full release%s: %s", corpus, name, note, "; ".join(diffs))
    return differing


def write(frame: pd.DataFrame, out: str | Path) -> Path:
    """Returns `out` after writing the manifest CSV there atomically."""
    out = Path(out)
    with atomic_path(out) as tmp:
        frame.to_csv(tmp, index=False, lineterminator="\n")
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds --corpus, --root, --out and --allow-missing to the verb's parser."""
    parser.add_argument("--corpus", required=True, choices=corpora.CORPORA)
    parser.add_argument("--root", help="corpus folder; default: $SDCAFF_*, params corpora.<corpus>.root, or synthetic")
    parser.add_argument("--out", help="manifest CSV; default: <manifest.out_dir>/<corpus>.csv")
    parser.add_argument(
        "--allow-missing", action="store_true", default=None,
        help="count and drop labelled utterances whose wav is missing (default: params manifest.allow_missing)",
    )


def run(args: argparse.Namespace) -> int:
    """Returns 0 after writing the corpus's manifest CSV."""
    params = load_params()
    corpus = corpora.check_corpus(args.corpus)
    root, synthetic = choose_root(corpus, args.root)
    out = Path(args.out) if args.out else Path(params.out_dir) / f"{corpus}.csv"
    allow_missing = params.allow_missing if args.allow_missing is None else args.allow_missing
    ensure_outside(out, root, "the manifest")
    frame, found = build(corpus, root, allow_missing=allow_missing)
    compare_counts(corpus, found, synthetic)
    write(frame, out)
    log.info("wrote %s (%d rows, %d columns)", out, len(frame), len(frame.columns))
    return 0
