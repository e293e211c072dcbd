"""IEMOCAP_full_release label files + wav headers -> manifest rows. The corpus is only ever read."""

from __future__ import annotations

import collections
import dataclasses
import logging
import os
import re
from pathlib import Path

from tqdm import tqdm

from sdcaff.data import audio, text
from sdcaff.errors import AudioError, CorpusFormatError

log = logging.getLogger(__name__)

CORPUS = "iemocap"
SESSIONS = (1, 2, 3, 4, 5)
# corpora.md: the consensus labels a summary line may carry (xxx = no agreement).
LABELS = ("neu", "hap", "sad", "ang", "exc", "fru", "sur", "fea", "dis", "oth", "xxx")
# corpora.md: a summary line, tab-separated: [start - end] utt_id label [valence, activation, dominance].
# Any run of whitespace separates the fields here: an editor that turns tabs into spaces changes no field.
SUMMARY = re.compile(
    r"^\[\s*(\d+\.\d+)\s*-\s*(\d+\.\d+)\s*\]\s+(\S+)\s+(\S+)"
    r"\s+\[\s*(\d+\.\d+)\s*,\s*(\d+\.\d+)\s*,\s*(\d+\.\d+)\s*\]$"
)
# A summary line's opening `[start - end]`, looked for anywhere in a line that does not start with `[`.
TIMES = re.compile(r"\[\s*\d+\.\d+\s*-\s*\d+\.\d+\s*\]")
# corpora.md: group 1 session, 2 the dialog's lead actor, 3 impro/script part, 4 THIS utterance's speaker.
UTTERANCE = re.compile(r"^Ses(0[1-5])([FM])_(impro0[1-8][ab]?|script0[1-3]_[1-3]b?)_([FM])(\d{3})$")
FOUR_CLASS = ("neu", "hap", "exc", "ang", "sad")  # the literature's 4 classes with hap and exc counted apart

# What the full release holds, to log beside what a copy holds. Totals: 10,039 wavs and 151 dialog
# files (corpora.md); the per-session and per-label splits are the release's public tallies.
KNOWN_COUNTS: dict[str, dict[str, int]] = {
    "wav files per session": {"Session1": 1819, "Session2": 1811, "Session3": 2136, "Session4": 2103, "Session5": 2170},
    "label files per session": {"Session1": 28, "Session2": 30, "Session3": 32, "Session4": 30, "Session5": 31},
    "labels": {
        "neu": 1708, "hap": 595, "sad": 1084, "ang": 1103, "exc": 1041, "fru": 1849,
        "sur": 107, "fea": 40, "dis": 2, "oth": 3, "xxx": 2507,
    },
    # corpora.md: 5,531 utterances labelled neu, hap, exc, ang or sad, per session
    "neu/hap/exc/ang/sad per session": {
        "Session1": 1085, "Session2": 1023, "Session3": 1151, "Session4": 1031, "Session5": 1241,
    },
    # corpora.md: improvised only; the authors keep neu, sad, ang and exc of these
    "improvised neu/hap/exc/ang/sad": {"neu": 1099, "hap": 284, "exc": 663, "ang": 289, "sad": 608},
}


@dataclasses.dataclass
class _Notes:
    """What a parse met besides rows; each kind is logged with its count."""

    skipped_dirs: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    stray: list[Path] = dataclasses.field(default_factory=list)
    encodings: collections.Counter = dataclasses.field(default_factory=collections.Counter)  # label files per codec
    no_summary: list[Path] = dataclasses.field(default_factory=list)  # label files without one summary line
    unknown: list[tuple[str, str]] = dataclasses.field(default_factory=list)  # ("file:line", label) outside LABELS
    missing: list[str] = dataclasses.field(default_factory=list)  # named wavs not there (allow_missing)


def parse(root: str | os.PathLike, allow_missing: bool = False) -> tuple[list[dict], dict[str, dict[str, int]]]:
    """Returns (manifest rows sorted by utt_id, found counts keyed as KNOWN_COUNTS) for an IEMOCAP root."""
    root = Path(root)
    sessions = [n for n in SESSIONS if (root / f"Session{n}").is_dir()]
    if not sessions:
        raise CorpusFormatError(f"{root}: no Session1..Session5 folders; is this IEMOCAP_full_release?")
    notes = _Notes()
    label_files = {n: _label_files(root, n, notes) for n in sessions}
    wavs = {n: _wav_files(root, n, notes.stray) for n in sessions}

    entries = []  # (utt_id, rel wav path, where, fields) per summary line
    seen: dict[str, str] = {}
    for n in sessions:
        for path in label_files[n]:
            before = len(entries)
            for where, fields in _summary_lines(path, n, notes):
                utt = fields["utt"]
                if utt in seen:
                    raise CorpusFormatError(f"{where}: utterance {utt} is labelled twice (first at {seen[utt]})")
                seen[utt] = where
                rel = f"Session{n}/sentences/wav/{path.stem}/{utt}.wav"
                entries.append((utt, rel, where, fields))
            if len(entries) == before:
                notes.no_summary.append(path)

    rows = []
    for utt, rel, where, fields in tqdm(entries, desc="iemocap wav headers", unit="wav", disable=None):
        actual = wavs[fields["session"]].get(rel)
        if actual is None:
            if not allow_missing:
                raise AudioError(f"{root / rel}: wav not found, named by {where}")
            notes.missing.append(rel)
            continue
        info = audio.inspect(root / actual)
        rows.append(_row(root, actual, fields, info))
    rows.sort(key=lambda r: r["utt_id"])

    labelled = {rel for _, rel, _, _ in entries}
    unlabelled = sorted(rel for n in sessions for rel in wavs[n] if rel not in labelled)
    summaries = collections.Counter(fields["session"] for _, _, _, fields in entries)
    _log_parse(root, sessions, label_files, wavs, summaries, notes, unlabelled, rows)
    return rows, _found_counts(label_files, wavs, rows)


def _label_files(root: Path, session: int, notes: _Notes) -> list[Path]:
    """Returns the top-level dialog label files of one session, sorted; sub-folders and strays are tallied."""
    folder = root / f"Session{session}" / "dialog" / "EmoEvaluation"
    if not folder.is_dir():
        raise CorpusFormatError(f"{folder}: label folder missing (Session{session} exists without it)")
    files = []
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if entry.is_dir():
            # Categorical/, Attribute/, Self-evaluation/ hold per-evaluator files, not labels.
            notes.skipped_dirs[entry.name] += 1
        elif entry.name.startswith(".") or not entry.name.lower().endswith(".txt"):
            # `._*` resource forks from macOS copies, `.pk` pickles left in some releases. `.TXT` is a label
            # file all the same: copies made on Windows or FAT drives may upper-case extensions.
            notes.stray.append(Path(entry.path))
        else:
            files.append(Path(entry.path))
    return files


def _wav_files(root: Path, session: int, stray: list[Path]) -> dict[str, str]:
    """Returns {root-relative posix path with a `.wav` extension: the path as on disk} of one session's wavs."""
    base = root / f"Session{session}" / "sentences" / "wav"
    found: dict[str, str] = {}
    if not base.is_dir():
        return found
    for dialog in sorted(os.scandir(base), key=lambda e: e.name):
        if not dialog.is_dir():
            stray.append(Path(dialog.path))
            continue
        for entry in sorted(os.scandir(dialog.path), key=lambda e: e.name):
            # `._Ses01F_impro01_F000.wav` ends in .wav too: the leading dot decides. `.WAV` is a wav.
            if entry.name.startswith(".") or not entry.name.lower().endswith(".wav") or not entry.is_file():
                stray.append(Path(entry.path))
                continue
            prefix = f"Session{session}/sentences/wav/{dialog.name}/"
            key = prefix + entry.name[: -len(".wav")] + ".wav"
            if key in found:
                raise CorpusFormatError(f"{root / prefix}: both {Path(found[key]).name} and {entry.name} exist")
            found[key] = prefix + entry.name
    return found


def _summary_lines(path: Path, session: int, notes: _Notes):
    """Yields ("file:line", fields) for each summary line of one label file; other lines are skipped."""
    lines, encoding = text.read_lines(path)
    notes.encodings[encoding] += 1
    for lineno, raw in enumerate(lines, start=1):
        # Leading and trailing whitespace is a copy's, not the release's: an indented summary line still counts.
        line = raw.strip()
        where = f"{path}:{lineno}"
        # Per-evaluator lines (C-E1:, A-F2:, ...), the `%` header and blank lines carry no consensus label.
        if not line.startswith("["):
            if TIMES.search(line):
                # e.g. `ï»¿[6.2 - 8.2]...`: a byte-order mark decoded twice; skipping it would drop a label.
                raise CorpusFormatError(f"{where}: text before a summary line's '[start - end]': {raw!r}")
            continue
        match = SUMMARY.match(line)
        if match is None:
            raise CorpusFormatError(
                f"{where}: not a summary line '[start - end]<TAB>utt<TAB>label<TAB>[v, a, d]': {raw!r}"
            )
        start, end, utt, label, valence, activation, dominance = match.groups()
        if label not in LABELS:
            notes.unknown.append((where, label))  # kept as written: the label map drops it, and says so
        ident = UTTERANCE.match(utt)
        if ident is None:
            raise CorpusFormatError(f"{where}: utterance id {utt!r} does not match Ses0[1-5][FM]_<part>_[FM]<nnn>")
        if int(ident.group(1)) != session:
            raise CorpusFormatError(
                f"{where}: utterance {utt} belongs to session {int(ident.group(1))}, found in Session{session}"
            )
        yield where, {
            "utt": utt,
            "session": session,
            "gender": ident.group(4),  # the utterance's own speaker, never the dialog's lead (group 2)
            "mode": "improvised" if ident.group(3).startswith("impro") else "scripted",
            "label": label,
            "dialog": path.stem,
            "start_s": float(start),
            "end_s": float(end),
            "valence": float(valence),
            "activation": float(activation),
            "dominance": float(dominance),
        }


def _row(root: Path, rel: str, fields: dict, info: audio.WavInfo) -> dict:
    """Returns one manifest row in the contract's column order, IEMOCAP extras last."""
    return {
        "utt_id": f"{CORPUS}/{fields['utt']}",
        "corpus": CORPUS,
        "path": str(root / rel),
        "session": fields["session"],
        "speaker": f"Ses{fields['session']:02d}_{fields['gender']}",
        "gender": fields["gender"],
        "label": fields["label"],
        "mode": fields["mode"],
        "sample_rate": info.sample_rate,
        "num_samples": info.num_samples,
        "target": "",
        "dialog": fields["dialog"],
        "start_s": fields["start_s"],
        "end_s": fields["end_s"],
        "valence": fields["valence"],
        "activation": fields["activation"],
        "dominance": fields["dominance"],
    }


def _found_counts(
    label_files: dict[int, list[Path]], wavs: dict[int, dict[str, str]], rows: list[dict]
) -> dict[str, dict[str, int]]:
    """Returns this copy's counts under the same names and keys as KNOWN_COUNTS."""
    four = [r for r in rows if r["label"] in FOUR_CLASS]
    improvised = [r for r in four if r["mode"] == "improvised"]
    return {
        "wav files per session": {f"Session{n}": len(w) for n, w in wavs.items()},
        "label files per session": {f"Session{n}": len(f) for n, f in label_files.items()},
        "labels": dict(collections.Counter(r["label"] for r in rows)),
        "neu/hap/exc/ang/sad per session": dict(collections.Counter(f"Session{r['session']}" for r in four)),
        "improvised neu/hap/exc/ang/sad": dict(collections.Counter(r["label"] for r in improvised)),
    }


def _log_parse(root, sessions, label_files, wavs, summaries, notes: _Notes, unlabelled, rows) -> None:
    """Logs what the parse read, skipped and could not find; whatever can mean a lost label is a WARNING."""
    log.info(
        "read %s: sessions %s, %d label files, %d labelled wavs",
        root, ",".join(map(str, sessions)), sum(len(f) for f in label_files.values()), len(rows),
    )
    if set(notes.encodings) - {"utf-8"}:
        log.info("label files by encoding: %s", ", ".join(f"{k} x{v}" for k, v in sorted(notes.encodings.items())))
    if notes.skipped_dirs or notes.stray:
        folders = ", ".join(f"{k} x{v}" for k, v in sorted(notes.skipped_dirs.items())) or "none"
        log.info(
            "skipped %d per-evaluator folders (%s) and %d stray files (._*, .pk, ...)",
            sum(notes.skipped_dirs.values()), folders, len(notes.stray),
        )
        for path in notes.stray:
            log.debug("stray file skipped: %s", path)
    if notes.no_summary:
        log.warning(
            "%d of %d label files hold no summary line, so none of their utterances is labelled: %s",
            len(notes.no_summary), sum(len(f) for f in label_files.values()), _shown(notes.no_summary),
        )
    if notes.unknown:
        by_label = collections.Counter(label for _, label in notes.unknown)
        log.warning(
            "%d summary lines carry a label outside %s (%s), kept as written, e.g. %s",
            len(notes.unknown), "/".join(LABELS), ", ".join(f"{k!r} x{v}" for k, v in sorted(by_label.items())),
            _shown([where for where, _ in notes.unknown]),
        )
    per_session = collections.Counter(r["session"] for r in rows)
    for n in sessions:
        if not per_session[n]:
            log.warning(
                "Session%d has no labelled utterance: %d label files, %d summary lines, %d wavs",
                n, len(label_files[n]), summaries[n], len(wavs[n]),
            )
    if unlabelled:
        # The full release labels every wav, so an unlabelled one means a label file was not read as it should be.
        sessions_of = collections.Counter(rel.split("/", 1)[0] for rel in unlabelled)
        log.warning(
            "%d wav files have no summary line and are left out (%s), e.g. %s",
            len(unlabelled), ", ".join(f"{k} {v}" for k, v in sorted(sessions_of.items())), unlabelled[0],
        )
    if notes.missing:
        log.warning(
            "%d wavs named by label files are missing (allow_missing): %s", len(notes.missing), _shown(notes.missing)
        )


def _shown(items: list) -> str:
    """Returns the first 20 of `items` joined, and how many more there are."""
    return ", ".join(map(str, items[:20])) + (f" and {len(items) - 20} more" if len(items) > 20 else "")
