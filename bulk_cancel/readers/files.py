"""Opening the input's file and reading its bytes; every problem as one :class:`InputError` line.

No OS or codec exception leaves this package: each becomes the file's name, the problem and
the fix, control characters escaped.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import stat
from typing import IO, BinaryIO, Final

from ..errors import InputError

#: Bytes read (and hashed) per read call.
_BLOCK_BYTES: Final = 1 << 20

# Characters escaped in messages and reported values: C0, DEL, C1 and Unicode line separators.
_CONTROL: Final = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _printable(text: str) -> str:
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def _fail(label: str, problem: str) -> InputError:
    """The one-line error for *label*: control characters (newlines too) escaped."""
    return InputError(_printable(f"{label}: {problem}"))


def _reason(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


def _check_file(path: str, label: str) -> None:
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise _fail(label, "does not exist; check the path") from None
    except PermissionError:
        raise _fail(
            label, "cannot be reached (permission denied); check the folder's permissions"
        ) from None
    except (OSError, ValueError) as exc:
        reason = _reason(exc) if isinstance(exc, OSError) else str(exc)
        raise _fail(label, f"cannot be read ({reason}); check the path") from None
    if stat.S_ISDIR(info.st_mode):
        raise _fail(label, "is a directory, not a file; give the path of the file inside it")
    if not stat.S_ISREG(info.st_mode):
        raise _fail(
            label, "is not a regular file; for a pipe use --input - and redirect it to stdin"
        )
    if info.st_size == 0:
        raise _fail(label, "is empty; check that the export that wrote it succeeded")


def _open_binary(path: str, label: str) -> io.BufferedReader:
    """*path* opened for reading bytes; OS errors become one-line InputErrors."""
    try:
        return open(path, "rb")  # callers close it (with / finally)
    except PermissionError:
        raise _fail(label, "cannot be read (permission denied); check its permissions") from None
    except FileNotFoundError:
        raise _fail(label, "does not exist; check the path") from None
    except OSError as exc:
        raise _fail(label, f"cannot be read ({_reason(exc)})") from None


def _read(raw: IO[bytes] | _HashingReader, label: str, size: int = _BLOCK_BYTES) -> bytes:
    try:
        return raw.read(size)
    except OSError as exc:
        raise _fail(label, f"cannot be read ({_reason(exc)})") from None


def _looks_like_text(head: bytes) -> bool:
    sample = head[:4096]
    if not sample or b"\x00" in sample:
        return False
    try:
        sample.decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc.start >= len(sample) - 3  # only a character cut at the end of the sample
    return True


def _peek(path: str, label: str, size: int = 4096) -> bytes:
    with _open_binary(path, label) as fh:
        return _read(fh, label, size)


class _HashingReader:
    """A binary stream hashed (sha256) as it is read, for stdin that cannot be read twice."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self._digest = hashlib.sha256()
        self.at_eof = False

    def read(self, size: int) -> bytes:
        data = self._raw.read(size)
        if data:
            self._digest.update(data)
        else:
            self.at_eof = True
        return data

    def hexdigest(self) -> str:
        return self._digest.hexdigest()


def _short(exc: BaseException, limit: int = 120) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"
