"""MSP-IMPROV Evaluation.txt + audio file names + wav headers -> manifest rows. The corpus is only ever read."""

from __future__ import annotations

import collections
import logging
import os
import re
from pathlib import Path

from tqdm import tqdm

from sdcaff.data import audio
from sdcaff.errors import AudioError, CorpusFormatError

log = logging.getLogger(__name__)

CORPUS = "msp-improv"
# corpora.md: some copies misspell the label file; Evaluation.txt wins when both are present.
LABEL_FILES = ("Evaluation.txt", "Evalution.txt")
CONSENSUS = ("A", "H", "N", "S", "O", "X")  # corpora.md: angry happy neutral sad, other, no agreement
ATTRIBUTES = {"A": "activation", "V": "valence", "D": "dominance", "N": "naturalness"}
SESSION_DIR = re.compile(r"^session([1-6])$")  # corpora.md: 6 sessions
SCENARIO_DIR = re.compile(r"^S(\d{2})([AHNS])$")
CONDITION_DIR = re.compile(r"^([PRST])$")
# corpora.md: MSP-IMPROV-S<scenario><target>-<gender><speaker>-<condition>-<utterance>.wav
NAME_FORM = "S<nn><A|H|N|S>-<F|M><nn>-<P|R|S|T>-<n>"  # for error messages
WAV_NAME = re.compile(r"^MSP-IMPROV-S(\d{2})([AHNS])-([FM])(\d{2})-([PRST])-([A-Za-z]*\d+)\.wav$")
# A block's first line names the video: UTD-IMPROV-<same fields>.avi
HEADER_PREFIX = "UTD-IMPROV-"
ATTRIBUTE = re.compile(r"^([AVDN])\s*:\s*(-?\d+(?:\.\d*)?)$")

# corpora.md: the full release, to log beside what a copy holds.
KNOWN_COUNTS: dict[str, dict[str, int]] = {
    "utterance wavs": {"all": 8438},
    "consensus labels A/H/N/S": {"N": 3477, "H": 2644, "S": 885, "A": 792},
}


def parse(root: str | os.PathLike, allow_missing: bool = False) -> tuple[list[dict], dict[str, dict[str, int]]]:
    """Returns (manifest rows sorted by utt_id, found counts keyed as KNOWN_COUNTS) for an MSP-IMPROV root."""
    root = Path(root)
    label_path = _label_file(root)
    blocks = _read_blocks(label_path)
    stray: list[Path] = []
    wavs = _wav_files(root, stray)

    missing = [(name, where) for name, (where, _) in blocks.items() if name not in wavs]
    if missing and not allow_missing:
        name, where = missing[0]
        raise AudioError(f"{root / 'Audio'}: {name} not found under session*/S*/<condition>/, named by {where}")

    rows = []
    for name, (rel, fields) in tqdm(sorted(wavs.items()), desc="msp-improv wav headers", unit="wav", disable=None):
        info = audio.inspect(root / rel)
        evaluation = blocks.get(name, (None, {}))[1]
        rows.append(_row(root, rel, fields, evaluation, info))
    rows.sort(key=lambda r: r["utt_id"])
    unevaluated = sum(1 for name in wavs if name not in blocks)
    _log_parse(root, label_path, blocks, stray, missing, unevaluated, rows)
    return rows, _found_counts(rows)


def _label_file(root: Path) -> Path:
    """Returns the consensus label file of `root` (either spelling)."""
    present = [root / name for name in LABEL_FILES if (root / name).is_file()]
    if not present:
        raise CorpusFormatError(f"{root}: neither {' nor '.join(LABEL_FILES)} found; is this the MSP-IMPROV folder?")
    if len(present) > 1:
        log.info("%s: both %s exist; reading %s", root, " and ".join(LABEL_FILES), present[0].name)
    return present[0]


def _read_blocks(path: Path) -> dict[str, tuple[str, dict]]:
    """Returns {wav file name: ("file:line", consensus fields)} for each block header of the label file."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise CorpusFormatError(f"{path}: cannot read label file: {exc.strerror}") from exc
    blocks: dict[str, tuple[str, dict]] = {}
    for lineno, line in enumerate(text.splitlines(), start=1):
        # Evaluator lines and blank lines follow each header; they are not the consensus.
        if not line.lstrip().startswith(HEADER_PREFIX):
            continue
        where = f"{path}:{lineno}"
        name, fields = _parse_header(line, where)
        if name in blocks:
            raise CorpusFormatError(f"{where}: {name} already has a block at {blocks[name][0]}")
        blocks[name] = (where, fields)
    return blocks


def _parse_header(line: str, where: str) -> tuple[str, dict]:
    """Returns (wav file name, {label, activation, valence, dominance, naturalness}) of one block header."""
    # Copies differ in the spacing around `;`: split on it and strip, never match the spacing.
    parts = [p.strip() for p in line.split(";")]
    if parts and parts[-1] == "":
        parts.pop()
    if len(parts) < 2:
        raise CorpusFormatError(f"{where}: expected '<file>.avi; <label>; A:..; V:..; D:..;', got {line!r}")
    video, label, *attributes = parts
    if not video.endswith(".avi"):
        raise CorpusFormatError(f"{where}: expected a UTD-IMPROV-*.avi file name, got {video!r}")
    name = "MSP-IMPROV-" + video[len(HEADER_PREFIX) : -len(".avi")] + ".wav"
    if WAV_NAME.match(name) is None:
        raise CorpusFormatError(f"{where}: {video!r} does not match UTD-IMPROV-{NAME_FORM}.avi")
    if label not in CONSENSUS:
        raise CorpusFormatError(f"{where}: unknown consensus label {label!r}; known: {' '.join(CONSENSUS)}")
    fields: dict = {"label": label}
    for attribute in attributes:
        match = ATTRIBUTE.match(attribute)
        if match is None or ATTRIBUTES[match.group(1)] in fields:
            raise CorpusFormatError(f"{where}: expected one each of A:, V:, D:, N:<number>, got {attribute!r}")
        fields[ATTRIBUTES[match.group(1)]] = float(match.group(2))
    return name, fields


def _wav_files(root: Path, stray: list[Path]) -> dict[str, tuple[str, dict]]:
    """Returns {wav file name: (root-relative path, file-name fields)} over Audio/session*/S*/<condition>/."""
    base = root / "Audio"
    if not base.is_dir():
        raise CorpusFormatError(f"{base}: audio folder missing")
    wavs: dict[str, tuple[str, dict]] = {}
    for session_dir in _subdirs(base, SESSION_DIR, stray):
        session = int(SESSION_DIR.match(session_dir.name).group(1))
        for scenario_dir in _subdirs(session_dir, SCENARIO_DIR, stray):
            for condition_dir in _subdirs(scenario_dir, CONDITION_DIR, stray):
                for entry in sorted(os.scandir(condition_dir), key=lambda e: e.name):
                    if entry.name.startswith(".") or not entry.name.endswith(".wav") or not entry.is_file():
                        stray.append(Path(entry.path))  # `._*` resource forks, `.pk` and other leftovers
                        continue
                    rel = Path(entry.path).relative_to(root).as_posix()
                    # The checked name fixes session, scenario and condition, so it is unique in the tree.
                    fields = _name_fields(Path(entry.path), session, scenario_dir.name, condition_dir.name)
                    wavs[entry.name] = (rel, fields)
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


def _log_parse(root, label_path, blocks, stray, missing, unevaluated, rows) -> None:
    """Logs what the parse read, skipped and could not find."""
    log.info("read %s: %d evaluation blocks in %s, %d wavs", root, len(blocks), label_path.name, len(rows))
    if stray:
        log.info("skipped %d stray entries under Audio/ (._*, .pk, unexpected folders)", len(stray))
        for path in stray:
            log.debug("stray entry skipped: %s", path)
    if unevaluated:
        log.info("%d wavs have no evaluation block: their label is empty", unevaluated)
    if missing:
        shown = ", ".join(f"{name} ({where})" for name, where in missing[:20])
        more = f" and {len(missing) - 20} more" if len(missing) > 20 else ""
        log.warning("%d evaluated utterances have no wav (allow_missing): %s%s", len(missing), shown, more)
