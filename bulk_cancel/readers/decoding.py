"""Text inputs decoded block by block into physical lines: the codec (BOM, ``--encoding``,
UTF-8), binary data and other formats refused, an undecodable byte named by its line.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterator
from typing import IO, Final

from ..errors import InputError
from .files import _fail, _HashingReader, _read

#: A physical line longer than this stops the read: no id file has one, and buffering it costs memory.
_MAX_LINE_CHARS: Final = 1 << 20

# Line breaks str.splitlines() honours but CSV does not (they may sit inside a value).
_ODD_BREAKS: Final = re.compile("[\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")
_LINES: Final = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+")
_BREAK: Final = re.compile(r"\r\n|\r|\n")
_BOMS: Final = (
    # UTF-32 first: the UTF-32-LE mark starts with the UTF-16-LE one.
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
# Bytes that never appear in text: C0 controls except tab, LF, VT, FF, CR, and DEL.
_BINARY_BYTES: Final = bytes([*range(0, 9), *range(14, 32), 127])
_TEXT_BYTES: Final = bytes(b for b in range(256) if b not in _BINARY_BYTES)


def _choose_codec(head: bytes, label: str, encoding: str | None) -> tuple[str, int, bool]:
    """The codec for a text input, the byte-order mark's length, and whether the user chose it."""
    for bom, codec in _BOMS:
        if head.startswith(bom):
            return codec, len(bom), False
    if encoding is not None:
        try:
            codec = codecs.lookup(encoding).name
        except LookupError:
            raise _fail(
                label, f"unknown encoding {encoding!r}; try --encoding utf-8, latin-1 or cp1252"
            ) from None
        if not codec.startswith(("utf-16", "utf-32")):
            _refuse_binary(head, label)
        return codec, 0, True
    _refuse_binary(head, label)
    return "utf-8", 0, False


def _refuse_binary(head: bytes, label: str) -> None:
    """Raise when the first block of a 'text' input is another format or binary data."""
    known = (
        (b"PK\x03\x04", "is a zip archive (an Excel .xlsx?), not a CSV/text file; name it .xlsx"),
        (b"PAR1", "is a Parquet file, not a CSV/text file; name it .parquet"),
        (b"\xd0\xcf\x11\xe0", "is an old Excel .xls file, not a CSV/text file; save it as CSV"),
        (b"\x1f\x8b", "is gzip-compressed, not a CSV/text file; decompress it first"),
        (b"%PDF", "is a PDF, not a CSV/text file; export the ids as CSV"),
    )
    for magic, problem in known:
        if head.startswith(magic):
            raise _fail(label, problem)
    sample = head[:65536]
    if b"\x00" in sample:
        pairs = sample[: len(sample) & ~1]
        if pairs and pairs[1::2].count(0) > 0.9 * (len(pairs) // 2):
            raise _fail(
                label,
                "looks like UTF-16 without a byte-order mark; pass --encoding utf-16-le "
                "or re-save the file as UTF-8",
            )
        raise _fail(label, "is not a CSV/text file (binary data); export the ids as CSV")
    controls = len(sample.translate(None, _TEXT_BYTES))
    if controls >= 4 and controls * 100 > len(
        sample
    ):  # a stray ESC or BEL in a value is not binary
        raise _fail(label, "is not a CSV/text file (binary data); export the ids as CSV")


def _split_lines(text: str) -> list[str]:
    """*text* cut after each ``\\n``, ``\\r\\n`` or ``\\r``; the last piece may be unfinished."""
    if _ODD_BREAKS.search(text) is None:
        return text.splitlines(keepends=True)  # fast, and equal when no odd breaks are present
    return _LINES.findall(text)


class _Text:
    """A byte stream decoded block by block into physical lines that keep their line endings.

    Decoding is ours, not io's, so an undecodable byte names its line, and a line that never
    ends stops the read at 1 MiB instead of filling memory.
    """

    def __init__(self, raw: IO[bytes] | _HashingReader, label: str, encoding: str | None) -> None:
        self._raw = raw
        self._label = label
        head = _read(raw, label)
        if not head:
            raise _fail(label, "is empty; check that the export that wrote it succeeded")
        self.codec, skip, self._chosen = _choose_codec(head, label, encoding)
        self.utf8_bom = skip > 0 and self.codec == "utf-8"
        self._head = head[skip:]

    def lines(self) -> Iterator[str]:
        decoder = codecs.getincrementaldecoder(self.codec)("strict")
        data = self._head or _read(self._raw, self._label)
        self._head = b""
        pending = ""
        breaks = 0  # line breaks split off so far
        while True:
            final = not data
            buffered = decoder.getstate()[0]
            try:
                text = decoder.decode(data, final)
            except UnicodeDecodeError as exc:
                raise self._undecodable(exc, buffered + data, breaks, pending) from None
            if text or (final and pending):
                lines = _split_lines(pending + text)
                pending = ""
                if lines and not final:
                    last = lines[-1]
                    # Keep back an unfinished line, and a final "\r" that may be half of "\r\n".
                    if last[-1] not in "\r\n" or last[-1] == "\r":
                        pending = lines.pop()
                    if len(pending) > _MAX_LINE_CHARS:
                        raise _fail(
                            self._label,
                            f"line {breaks + len(lines) + 1} is longer than 1 MiB; this is not a "
                            "list of ids (a file with a single huge line?)",
                        )
                breaks += len(lines)
                yield from lines
            if final:
                return
            data = _read(self._raw, self._label)

    def _undecodable(
        self, exc: UnicodeDecodeError, data: bytes, breaks: int, pending: str
    ) -> InputError:
        before = data[: exc.start].decode(self.codec, "replace")
        line = breaks + len(_BREAK.findall(pending + before)) + 1
        byte = f"byte 0x{data[exc.start]:02x}" if exc.start < len(data) else "truncated character"
        if self._chosen:
            fix = f"cannot be decoded as {self.codec} ({byte}); check --encoding"
        elif self.codec == "utf-8":
            fix = (
                f"is not UTF-8 ({byte}); re-save the file as UTF-8, or pass --encoding latin-1 "
                "(cp1252 for files from Windows Excel)"
            )
        else:
            fix = f"is not valid {self.codec.upper()} ({byte}); re-save the file as UTF-8"
        return _fail(self._label, f"line {line} {fix}")
