"""Tiny hand-made corpora in the real on-disk layouts (IEMOCAP_full_release, MSP-IMPROV), for tests.

Each writer lays out label files and short wavs under `root` exactly as corpora.md describes,
including the quirks a parser must survive (per-evaluator lines, Categorical/ folders, `._*` and
`.pk` strays, odd spacing), and returns what it wrote so a test can damage one piece of it.
"""

from __future__ import annotations

import dataclasses
import re
import struct
from pathlib import Path
from typing import Iterable

import numpy as np
import soundfile

# Each IEMOCAP case a parser gets wrong somewhere: (utterance id, consensus label).
IEMOCAP_UTTERANCES = (
    ("Ses01F_impro01_F000", "neu"),
    ("Ses01F_impro01_M000", "ang"),  # the trap: a woman leads the dialog, a man speaks this line
    ("Ses01F_impro01_M001", "exc"),
    ("Ses01F_script01_1_F000", "sad"),
    ("Ses02M_impro03_M001", "xxx"),
    ("Ses03M_script01_2b_F012", "fru"),  # scripted id with a `b` part
    ("Ses04F_impro02_F003", "hap"),
    ("Ses05F_impro08a_M001", "sad"),  # improvised id with an `a` part, a man in a woman-led dialog
)

# MSP-IMPROV cases: (file stem, consensus letter or None = no evaluation block).
MSP_IMPROV_UTTERANCES = (
    ("MSP-IMPROV-S01A-F01-P-FM01", "A"),
    ("MSP-IMPROV-S01A-M01-R-FM01", "N"),
    ("MSP-IMPROV-S02H-F02-S-MF01", "H"),
    ("MSP-IMPROV-S02H-M02-T-MF02", "O"),
    ("MSP-IMPROV-S03S-F03-T-FM03", "S"),
    ("MSP-IMPROV-S05N-F04-R-FM01", "X"),
    ("MSP-IMPROV-S20N-M06-P-MF10", None),
)
_MSP_NAME = re.compile(r"^MSP-IMPROV-(S\d{2}[AHNS])-([FM])(\d{2})-([PRST])-")


@dataclasses.dataclass
class Written:
    root: Path
    label_files: dict[str, Path]  # IEMOCAP: dialog -> label file; MSP-IMPROV: file name -> label file
    wavs: dict[str, Path]  # utterance id (no corpus prefix) -> wav
    stray: list[Path]  # files and folders a parser must skip


def write_wav(path: str | Path, seconds: float = 0.05, sample_rate: int = 16000, seed: int = 0) -> Path:
    """Returns `path` after writing a mono 16-bit PCM tone plus seeded noise, `seconds` long."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(seconds * sample_rate))) / sample_rate
    tone = 0.3 * np.sin(2 * np.pi * (150 + 10 * (seed % 20)) * t) + 0.01 * rng.standard_normal(t.size)
    soundfile.write(str(path), tone.astype(np.float32), sample_rate, subtype="PCM_16")
    return path


def write_iemocap(
    root: str | Path,
    utterances: Iterable[tuple[str, str]] = IEMOCAP_UTTERANCES,
    *,
    without_wav: Iterable[str] = (),
    unlabelled: Iterable[str] = (),
    quirks: bool = True,
    seconds: float = 0.05,
    sample_rate: int = 16000,
) -> Written:
    """Returns what it wrote: Session<n>/dialog/EmoEvaluation/<dialog>.txt + sentences/wav/<dialog>/<utt>.wav.

    without_wav: labelled utterances whose wav is not written; unlabelled: wavs with no label line;
    quirks: Categorical/, Attribute/, Self-evaluation/ folders and `._*` / `.pk` strays beside the real files.
    """
    root = Path(root)
    utterances = sorted(utterances)
    skip = set(without_wav)
    by_dialog: dict[str, list[tuple[str, str]]] = {}
    for utt, label in utterances:
        by_dialog.setdefault(utt.rsplit("_", 1)[0], []).append((utt, label))
    written = Written(root, {}, {}, [])
    for index, (utt, _) in enumerate(utterances):
        if utt not in skip:
            written.wavs[utt] = write_wav(_iemocap_wav(root, utt), seconds, sample_rate, seed=index)
    for index, utt in enumerate(sorted(unlabelled)):
        written.wavs[utt] = write_wav(_iemocap_wav(root, utt), seconds, sample_rate, seed=1000 + index)
    for dialog, lines in sorted(by_dialog.items()):
        folder = root / f"Session{int(dialog[3:5])}" / "dialog" / "EmoEvaluation"
        folder.mkdir(parents=True, exist_ok=True)
        text = ["% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]", ""]
        for i, (utt, label) in enumerate(lines):
            text += [
                f"[{2.5 * i + 1.0:.4f} - {2.5 * i + 3.1:.4f}]\t{utt}\t{label}\t[2.5000, 3.0000, 2.5000]",
                "C-E1:\tNeutral;\t()",  # per-evaluator lines: not the consensus
                "C-E3:\tAnger; Frustration;\t(tense)",
                "A-E3:\tval 3; act 2; dom  2;\t()",
                "",
            ]
        written.label_files[dialog] = folder / f"{dialog}.txt"
        written.label_files[dialog].write_text("\n".join(text) + "\n", encoding="utf-8")
        if quirks:
            written.stray += _iemocap_quirks(root, folder, dialog)
    return written


def _iemocap_wav(root: Path, utt: str) -> Path:
    return root / f"Session{int(utt[3:5])}" / "sentences" / "wav" / utt.rsplit("_", 1)[0] / f"{utt}.wav"


def _iemocap_quirks(root: Path, folder: Path, dialog: str) -> list[Path]:
    """Returns the stray files written beside one dialog's real files (every one must be skipped)."""
    # A Categorical/ file holds bracketed lines that are not summary lines: reading it would fail.
    categorical = folder / "Categorical" / f"{dialog}_e1_cat.txt"
    categorical.parent.mkdir(exist_ok=True)
    categorical.write_text(f"[{dialog}_F000]\t:Neutral state; ()\n", encoding="utf-8")
    for sub in ("Attribute", "Self-evaluation"):
        (folder / sub).mkdir(exist_ok=True)
        (folder / sub / f"{dialog}_e2_atr.txt").write_text("[bogus]\n", encoding="utf-8")
    fork = folder / f"._{dialog}.txt"
    fork.write_bytes(b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X\n[not a summary line]\n")
    pickle = folder / f"{dialog}.pk"
    pickle.write_bytes(b"\x80\x04K\x01.")
    wav_dir = root / f"Session{int(dialog[3:5])}" / "sentences" / "wav" / dialog
    wav_dir.mkdir(parents=True, exist_ok=True)
    wav_fork = wav_dir / f"._{dialog}_F999.wav"
    wav_fork.write_bytes(b"\x00\x05\x16\x07 resource fork")
    wav_pickle = wav_dir / f"{dialog}.pk"
    wav_pickle.write_bytes(b"\x80\x04K\x02.")
    return [categorical.parent, folder / "Attribute", folder / "Self-evaluation", fork, pickle, wav_fork, wav_pickle]


def msp_improv_wav(root: str | Path, stem: str, layout: str = "Audio") -> Path:
    """Returns where `stem`'s wav lies: Audio/session<k>/S<nn><E>/<condition>/<stem>.wav, k = speaker number.

    layout "Audio": the release's tree; "flat": session<k>/... directly beside the label file, as some copies have it.
    """
    match = _MSP_NAME.match(stem)
    if match is None:
        raise ValueError(f"not an MSP-IMPROV file stem: {stem}")
    scenario, _, speaker, condition = match.groups()
    base = Path(root) / "Audio" if layout == "Audio" else Path(root)
    return base / f"session{int(speaker)}" / scenario / condition / f"{stem}.wav"


def msp_improv_header(stem: str, label: str, style: int = 0) -> str:
    """Returns an Evaluation.txt block header for `stem`, spaced in one of three ways copies use."""
    video = stem.replace("MSP-IMPROV-", "UTD-IMPROV-", 1) + ".avi"
    if style == 0:
        return f"{video}; {label}; A:2.200000; V:3.000000; D:2.400000; N:3.200000;"
    if style == 1:
        return f"{video} ;{label} ;A: 2.2;  V:3.0 ;D :2.4;N:3.2"  # no trailing `;`
    return f"{video}\t;\t{label};\tA:2.2;\tV:3.0;\tD:2.4;"  # tabs, and no naturalness score


def write_msp_improv(
    root: str | Path,
    utterances: Iterable[tuple[str, str | None]] = MSP_IMPROV_UTTERANCES,
    *,
    label_file: str = "Evaluation.txt",
    without_wav: Iterable[str] = (),
    quirks: bool = True,
    seconds: float = 0.05,
    sample_rate: int = 44100,
    layout: str = "Audio",
) -> Written:
    """Returns what it wrote: <label_file> (blocks in varied spacing) + Audio/session<k>/S<nn><E>/<cond>/*.wav.

    label None: the wav has no evaluation block; without_wav: evaluated utterances whose wav is not written;
    quirks: `._*` and `.pk` strays beside the wavs (and `.avi` videos in the flat layout);
    layout "flat": session<k>/ directly beside the label file, no Audio/ folder.
    """
    root = Path(root)
    skip = set(without_wav)
    written = Written(root, {}, {}, [])
    lines = []
    for index, (stem, label) in enumerate(sorted(utterances)):
        if stem not in skip:
            written.wavs[stem] = write_wav(msp_improv_wav(root, stem, layout), seconds, sample_rate, seed=index)
            if quirks:
                fork = written.wavs[stem].with_name(f"._{stem}.wav")
                fork.write_bytes(b"\x00\x05\x16\x07 resource fork")
                written.stray.append(fork)
                if layout == "flat":  # two peers' docs: the videos lie beside the wavs in such copies
                    video = written.wavs[stem].with_suffix(".avi")
                    video.write_bytes(b"RIFF\x04\x00\x00\x00AVI ")
                    written.stray.append(video)
        if label is not None:
            lines += [
                msp_improv_header(stem, label, style=index % 3),
                "Evaluator01; Neutral; A:2.0; V:3.0; D:2.0;",  # per-evaluator lines: not the consensus
                "Evaluator07; Angry, Frustrated; A:3.0; V:2.0; D:3.0;",
                "",
            ]
    if quirks:
        pickle = (root / "Audio" if layout == "Audio" else root) / "session1" / "S01A" / "session1.pk"
        pickle.parent.mkdir(parents=True, exist_ok=True)
        pickle.write_bytes(b"\x80\x04K\x01.")
        written.stray.append(pickle)
    written.label_files[label_file] = root / label_file
    written.label_files[label_file].write_text("\n".join(lines) + "\n", encoding="utf-8")
    return written


def reencode(path: str | Path, encoding: str = "utf-8", newline: str = "\n", bom: bool = False) -> Path:
    """Returns `path` after rewriting its text in `encoding` with `newline` line ends, as a Windows or macOS tool would.

    bom: start with U+FEFF, the byte-order mark in that encoding (Python's "utf-16" codec writes one anyway).
    """
    path = Path(path)
    text = path.read_text(encoding="utf-8").replace("\r\n", "\n").replace("\n", newline)
    path.write_bytes((("\ufeff" if bom else "") + text).encode(encoding))
    return path


def rewrite_header(
    path: str | Path,
    *,
    tag: int | None = None,
    block: int | None = None,
    bits: int | None = None,
    fact: bytes | None = None,
    data_bytes: int | None = None,
) -> Path:
    """Returns `path` (a wav from write_wav: fmt then data) after setting header fields, as a faulty tool writes them.

    fact: the body of a `fact` chunk put between fmt and data; data_bytes: the size the data chunk declares.
    """
    path = Path(path)
    raw = bytearray(path.read_bytes())
    assert raw[12:16] == b"fmt " and raw[36:40] == b"data", "rewrite_header expects fmt at 12 and data at 36"
    fields = {20: ("<H", tag), 32: ("<H", block), 34: ("<H", bits), 40: ("<I", data_bytes)}
    for offset, (form, value) in fields.items():
        if value is not None:
            struct.pack_into(form, raw, offset, value)
    if fact is not None:
        raw[36:36] = b"fact" + struct.pack("<I", len(fact)) + fact
    struct.pack_into("<I", raw, 4, len(raw) - 8)
    path.write_bytes(bytes(raw))
    return path
