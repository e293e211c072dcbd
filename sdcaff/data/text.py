"""Label-file text as copies hold it after Windows and macOS tools: bytes -> lines, or an error naming the file."""

from __future__ import annotations

import codecs
import re
from pathlib import Path

from sdcaff.errors import CorpusFormatError

# Longest first: the UTF-32 LE mark begins with the UTF-16 LE one.
BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
# CRLF (Windows), CR (classic macOS), LF. Not str.splitlines: it also splits at \x0c, \x1c-\x1e and U+0085,
# which a Latin-1 stray byte can decode to, and line numbers in errors would no longer match an editor's.
LINE_END = re.compile(r"\r\n|\r|\n")


def read_lines(path: Path) -> tuple[list[str], str]:
    """Returns (the lines of a text file without line ends, the encoding they were decoded from)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CorpusFormatError(f"{path}: cannot read label file: {exc.strerror}") from exc
    encoding = _encoding(path, data)
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as exc:
        raise CorpusFormatError(
            f"{path}: starts with a {encoding} byte-order mark but byte {exc.start} does not decode ({exc.reason})"
        ) from exc
    # A mark inside the text: a tool joined files and kept each one's mark. It is invisible, never content.
    text = text.replace("\ufeff", "")
    lines = LINE_END.split(text)
    if lines and lines[-1] == "":
        lines.pop()
    return lines, encoding


def _encoding(path: Path, data: bytes) -> str:
    """Returns the codec to decode `data` with: the byte-order mark's, else UTF-8, else Windows-1252, else Latin-1."""
    for bom, encoding in BOMS:
        if data.startswith(bom):
            return encoding
    if b"\x00" in data:
        # UTF-16 without a mark, or a binary file under a .txt name: guessing the byte order would be a guess.
        raise CorpusFormatError(
            f"{path}: holds NUL bytes and no byte-order mark (UTF-16 without a BOM, or not a text file); "
            "save it as UTF-8"
        )
    try:
        data.decode("utf-8")
        return "utf-8"
    except UnicodeDecodeError:
        pass
    # The fields that matter are ASCII; a stray byte in an evaluator's comment decides only how the comment reads.
    try:
        data.decode("cp1252")
        return "cp1252"
    except UnicodeDecodeError:
        return "latin-1"  # cp1252 leaves five bytes undefined; Latin-1 decodes every byte
