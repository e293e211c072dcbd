"""MSP-IMPROV Evaluation.txt + audio file names + wav headers -> manifest rows. The corpus is only ever read."""

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

CORPUS = "msp-improv"
# corpora.md: some copies misspell the label file. When both lie there, the one with blocks is read.
LABEL_FILES = ("Evaluation.txt", "Evalution.txt")
CONSENSUS = ("A", "H", "N", "S", "O", "X")  # corpora.md: angry happy neutral sad, other, no agreement
ATTRIBUTES = {"A": "activation", "V": "valence", "D": "dominance", "N": "naturalness"}
SESSION_DIR = re.compile(r"^session([1-6])$")  # corpora.md: 6 sessions
SCENARIO_DIR = re.compile(r"^S(\d{2})([AHNS])$")
CONDITION_DIR = re.compile(r"^([PRST])$")
# corpora.md: MSP-IMPROV-S<scenario><target>-<gender><speaker>-<condition>-<utterance>.wav
NAME_FORM = "S<nn><A|H|N|S>-<F|M><nn>-<P|R|S|T>-<n>"  # for error messages
# `.WAV`: copies made on Windows or FAT drives may upper-case extensions.
WAV_NAME = re.compile(r"^MSP-IMPROV-S(\d{2})([AHNS])-([FM])(\d{2})-([PRST])-([A-Za-z]*\d+)(?i:\.wav)$")
# A block's first line names the video: UTD-IMPROV-<same fields>.avi
HEADER_PREFIX = "UTD-IMPROV-"
# corpora.md: real copies carry `D:NaN`, `N:NaN` (and A:, V:); the label still holds, the score is empty.
ATTRIBUTE = re.compile(r"^([AVDN])\s*:\s*(-?\d+(?:\.\d*)?|(?i:nan))$")
# corpora.md: the release's tree, or the session folders directly beside the label file.
LAYOUTS = ("Audio/session<k>/S<nn><E>/<condition>/", "session<k>/S<nn><E>/<condition>/")

# corpora.md: the full release, to log beside what a copy holds.
KNOWN_COUNTS: dict[str, dict[str, int]] = {
    "utterance wavs": {"all": 8438},
    "consensus labels A/H/N/S": {"N": 3477, "H": 2644, "S": 885, "A": 792},
}


@dataclasses.dataclass
class _LabelNotes:
    """What reading one label file met besides blocks; each kind is logged with its count."""

    encoding: str
    unknown: list[tuple[str, str]] = dataclasses.field(default_factory=list)  # ("file:line", label) not in CONSENSUS
    nan: collections.Counter = dataclasses.field(default_factory=collections.Counter)  # NaN values per attribute


def parse(root: str | os.PathLike, allow_missing: bool = False) -> tuple[list[dict], dict[str, dict[str, int]]]:
    """Returns (manifest rows sorted by utt_id, found counts keyed as KNOWN_COUNTS) for an MSP-IMPROV root."""
    root = Path(root)
    label_path, blocks, notes = _label_blocks(root)
    base = _audio_base(root)
    stray: list[Path] = []
    wavs = _wav_files(root, base, stray)

    missing = [(name, where) for name, (where, _) in blocks.items() if name not in wavs]
    if missing and not allow_missing:
        name, where = missing[0]
        raise AudioError(f"{base}: {name} not found under session*/S*/<condition>/, named by {where}")

    rows = []
    for name, (rel, fields) in tqdm(sorted(wavs.items()), desc="msp-improv wav headers", unit="wav", disable=None):
        info = audio.inspect(root / rel)
        evaluation = blocks.get(name, (None, {}))[1]
        rows.append(_row(root, rel, fields, evaluation, info))
    rows.sort(key=lambda r: r["utt_id"])
    unevaluated = sum(1 for name in wavs if name not in blocks)
    _log_parse(root, base, label_path, blocks, notes, stray, missing, unevaluated, rows)
    return rows, _found_counts(rows)


def _label_blocks(root: Path) -> tuple[Path, dict[str, tuple[str, dict]], _LabelNotes]:
    """Returns (the label file read, its blocks, its notes): of the two spellings, the one that holds blocks."""
    present = [root / name for name in LABEL_FILES if (root / name).is_file()]
    if not present:
        raise CorpusFormatError(f"{root}: neither {' nor '.join(LABEL_FILES)} found; is this the MSP-IMPROV folder?")
    read = {path: _read_blocks(path) for path in present}
    if len(present) == 1:
        return present[0], *read[present[0]]
    first, second = present
    with_blocks = [path for path in present if read[path][0]]
    if len(with_blocks) == 2:
        _check_same_blocks(root, read[first][0], read[second][0])
        chosen, why = first, "both hold the same blocks"
    elif with_blocks:
        # An empty or header-only file beside the real one: reading it would empty every label.
        chosen = with_blocks[0]
        why = f"{(set(present) - {chosen}).pop().name} holds no evaluation block"
    else:
        chosen, why = first, "neither holds an evaluation block"
    log.warning("%s: both %s and %s exist; reading %s (%s)", root, first.name, second.name, chosen.name, why)
    return chosen, *read[chosen]


def _check_same_blocks(root: Path, first: dict[str, tuple[str, dict]], second: dict[str, tuple[str, dict]]) -> None:
    """Raises CorpusFormatError naming the first utterance the two label files label differently."""
    for name in sorted(set(first) | set(second)):
        a, b = first.get(name), second.get(name)
        if a is None or b is None or a[1] != b[1]:
            said = [f"{block[0]} says {block[1]}" if block else "the other has no block" for block in (a, b)]
            raise CorpusFormatError(
                f"{root}: both {' and '.join(LABEL_FILES)} hold evaluation blocks and they differ at {name} "
                f"({'; '.join(said)}); keep the right one"
            )


def _read_blocks(path: Path) -> tuple[dict[str, tuple[str, dict]], _LabelNotes]:
    """Returns ({wav file name: ("file:line", consensus fields)} for each block header, notes) of a label file."""
    lines, encoding = text.read_lines(path)
    notes = _LabelNotes(encoding)
    blocks: dict[str, tuple[str, dict]] = {}
    for lineno, raw in enumerate(lines, start=1):
        line = raw.strip()  # indented or space-padded headers are a copy's, not the release's
        where = f"{path}:{lineno}"
        # Evaluator lines and blank lines follow each header; they are not the consensus.
        if not line.startswith(HEADER_PREFIX):
            if HEADER_PREFIX in line:
                # e.g. `ï»¿UTD-IMPROV-...`: a byte-order mark decoded twice; skipping it would drop a label.
                raise CorpusFormatError(f"{where}: text before a block header's {HEADER_PREFIX}: {raw!r}")
            continue
        name, fields = _parse_header(line, where, notes)
        if name in blocks:
            raise CorpusFormatError(f"{where}: {name} already has a block at {blocks[name][0]}")
        blocks[name] = (where, fields)
    return blocks, notes


def _parse_header(line: str, where: str, notes: _LabelNotes) -> tuple[str, dict]:
    """Returns (wav file name, {label, activation, valence, dominance, naturalness}) of one block header."""
    # Copies differ in the spacing around `;`: split on it and strip, never match the spacing.
    parts = [p.strip() for p in line.split(";")]
    if parts and parts[-1] == "":
        parts.pop()
    if len(parts) < 2:
        raise CorpusFormatError(f"{where}: expected '<file>.avi; <label>; A:..; V:..; D:..;', got {line!r}")
    video, label, *attributes = parts
    if not video.lower().endswith(".avi"):
        raise CorpusFormatError(f"{where}: expected a UTD-IMPROV-*.avi file name, got {video!r}")
    name = "MSP-IMPROV-" + video[len(HEADER_PREFIX) : -len(".avi")] + ".wav"
    if WAV_NAME.match(name) is None:
        raise CorpusFormatError(f"{where}: {video!r} does not match UTD-IMPROV-{NAME_FORM}.avi")
    if label not in CONSENSUS:
        notes.unknown.append((where, label))  # kept as written: the label map drops it, and says so
    fields: dict = {"label": label}
    for attribute in attributes:
        match = ATTRIBUTE.match(attribute)
        if match is None or ATTRIBUTES[match.group(1)] in fields:
            raise CorpusFormatError(f"{where}: expected one each of A:, V:, D:, N:<number>, got {attribute!r}")
        key, value = ATTRIBUTES[match.group(1)], match.group(2)
        if value.lower() == "nan":
            notes.nan[match.group(1)] += 1
            fields[key] = None  # an empty score, as when the attribute is absent
        else:
            fields[key] = float(value)
    return name, fields


def _audio_base(root: Path) -> Path:
    """Returns the folder that holds session1..session6: `root`/Audio (the release's) or `root` itself."""
    found = [
        base for base in (root / "Audio", root)
        if base.is_dir() and any(e.is_dir() and SESSION_DIR.match(e.name) for e in os.scandir(base))
    ]
    if not found:
        raise CorpusFormatError(
            f"{root}: no session1..session6 folders in either layout: {root}/{LAYOUTS[0]} (the release's) "
            f"or {root}/{LAYOUTS[1]} (beside the label file)"
        )
    if len(found) > 1:
        raise CorpusFormatError(
            f"{root}: session folders in both layouts ({root}/Audio/session<k>/ and {root}/session<k>/); "
            "keep one, or the same utterance could be read twice"
        )
    return found[0]


def _wav_files(root: Path, base: Path, stray: list[Path]) -> dict[str, tuple[str, dict]]:
    """Returns {wav file name, `.wav` in lower case: (root-relative path, file-name fields)} over base/session*/..."""
    wavs: dict[str, tuple[str, dict]] = {}
    # Beside the label file (base = root) lie the label files, documents and videos: not strays of the audio tree.
    for session_dir in _subdirs(base, SESSION_DIR, stray if base != root else []):
        session = int(SESSION_DIR.match(session_dir.name).group(1))
        for scenario_dir in _subdirs(session_dir, SCENARIO_DIR, stray):
            for condition_dir in _subdirs(scenario_dir, CONDITION_DIR, stray):
                for entry in sorted(os.scandir(condition_dir), key=lambda e: e.name):
                    if entry.name.startswith(".") or not entry.name.lower().endswith(".wav") or not entry.is_file():
                        stray.append(Path(entry.path))  # `._*` resource forks, `.pk`, `.avi` and other leftovers
                        continue
                    rel = Path(entry.path).relative_to(root).as_posix()
                    # The checked name fixes session, scenario and condition, so it is unique in the tree.
                    fields = _name_fields(Path(entry.path), session, scenario_dir.name, condition_dir.name)
                    name = entry.name[: -len(".wav")] + ".wav"
                    if name in wavs:
                        raise CorpusFormatError(
                            f"{condition_dir}: both {Path(wavs[name][0]).name} and {entry.name} exist"
                        )
                    wavs[name] = (rel, fields)
    return wavs


def _subdirs(folder: Path, pattern: re.Pattern, stray: list[Path]) -> list[Path]:
    """Returns the sub-folders of `folder` whose names match `pattern`, sorted; other entries are tallied."""
    found = []
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if entry.is_dir() and pattern.match(entry.name):
            found.append(Path(entry.path))
        else:
            stray.append(Path(entry.path))
    return found


def _name_fields(path: Path, session: int, scenario_dir: str, condition_dir: str) -> dict:
    """Returns the fields of one wav's name, checked against the folders that hold it."""
    match = WAV_NAME.match(path.name)
    if match is None:
        raise CorpusFormatError(f"{path}: file name does not match MSP-IMPROV-{NAME_FORM}.wav")
    scenario, target, gender, speaker, condition, _ = match.groups()
    if f"S{scenario}{target}" != scenario_dir or condition != condition_dir:
        raise CorpusFormatError(
            f"{path}: name says S{scenario}{target}/{condition}, folder says {scenario_dir}/{condition_dir}"
        )
    # corpora.md: session k holds exactly one woman and one man, speakers F0k and M0k.
    if int(speaker) != session:
        raise CorpusFormatError(
            f"{path}: speaker {gender}{speaker} recorded in session{session}; expected {gender}{session:02d}"
        )
    return {
        "session": session,
        "speaker": f"{gender}{speaker}",
        "gender": gender,
        "mode": condition,
        "target": target,
        "scenario": int(scenario),
    }


def _row(root: Path, rel: str, fields: dict, evaluation: dict, info: audio.WavInfo) -> dict:
    """Returns one manifest row in the contract's column order, MSP-IMPROV extras last."""
    return {
        "utt_id": f"{CORPUS}/{Path(rel).stem}",
        "corpus": CORPUS,
        "path": str(root / rel),
        "session": fields["session"],
        "speaker": fields["speaker"],
        "gender": fields["gender"],
        "label": evaluation.get("label", ""),  # empty: no evaluation block names this wav
        "mode": fields["mode"],
        "sample_rate": info.sample_rate,
        "num_samples": info.num_samples,
        "target": fields["target"],
        "scenario": fields["scenario"],
        "valence": evaluation.get("valence"),
        "activation": evaluation.get("activation"),
        "dominance": evaluation.get("dominance"),
        "naturalness": evaluation.get("naturalness"),
    }


def _found_counts(rows: list[dict]) -> dict[str, dict[str, int]]:
    """Returns this copy's counts under the same names and keys as KNOWN_COUNTS."""
    consensus = collections.Counter(r["label"] for r in rows if r["label"] in KNOWN_COUNTS["consensus labels A/H/N/S"])
    return {"utterance wavs": {"all": len(rows)}, "consensus labels A/H/N/S": dict(consensus)}


def _log_parse(root, base, label_path, blocks, notes: _LabelNotes, stray, missing, unevaluated, rows) -> None:
    """Logs what the parse read, skipped and could not find; whatever can mean a lost label is a WARNING."""
    log.info(
        "read %s: %d evaluation blocks in %s (%s), %d wavs under %s/",
        root, len(blocks), label_path.name, notes.encoding, len(rows), base.relative_to(root).as_posix(),
    )
    if notes.nan:
        log.info(
            "%d attribute scores are NaN (%s); their scores are empty, their labels kept",
            sum(notes.nan.values()), ", ".join(f"{k}: x{v}" for k, v in sorted(notes.nan.items())),
        )
    if stray:
        log.info("skipped %d stray entries in the audio tree (._*, .pk, .avi, unexpected folders)", len(stray))
        for path in stray:
            log.debug("stray entry skipped: %s", path)
    if not blocks:
        log.warning("%s holds no evaluation block: all %d wavs get an empty label", label_path, len(rows))
    if notes.unknown:
        by_label = collections.Counter(label for _, label in notes.unknown)
        shown = ", ".join(where for where, _ in notes.unknown[:20])
        log.warning(
            "%d block headers carry a consensus label outside %s (%s), kept as written, e.g. %s",
            len(notes.unknown), "/".join(CONSENSUS), ", ".join(f"{k!r} x{v}" for k, v in sorted(by_label.items())),
            shown,
        )
    if blocks:
        wavs_in = collections.Counter(r["session"] for r in rows)
        evaluated_in = collections.Counter(r["session"] for r in rows if r["label"])
        for session in sorted(wavs_in):
            if not evaluated_in[session]:
                log.warning("session%d has no evaluated utterance: none of its %d wavs has a block in %s",
                            session, wavs_in[session], label_path.name)
    if unevaluated:
        log.info("%d wavs have no evaluation block: their label is empty", unevaluated)
    if missing:
        shown = ", ".join(f"{name} ({where})" for name, where in missing[:20])
        more = f" and {len(missing) - 20} more" if len(missing) > 20 else ""
        log.warning("%d evaluated utterances have no wav (allow_missing): %s%s", len(missing), shown, more)
