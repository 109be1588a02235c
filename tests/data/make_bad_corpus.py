"""Write the bad-input corpus that ``tests/test_readers.py`` reads.

The tiny files committed in ``tests/data/bad/`` are what :func:`write_committed` writes; run
``python tests/data/make_bad_corpus.py`` to rewrite them after changing this script (a test checks
that the byte-stable ones still match). Files that are big or need special permissions (a 50 MB
line, a FIFO, a symlink loop, an unreadable file) are never committed: the tests write them into
``tmp_path`` with :func:`write_generated`.
"""

from __future__ import annotations

import codecs
import hashlib
import io
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

BAD = Path(__file__).parent / "bad"

U1 = "3f2a6c1e-5b2d-4c6e-8a0b-7f3c9a1e5b2d"
U2 = "9b1d7e2a-0c4f-4a8e-b6d2-1e5f3a7c9b0d"
U3 = "c0ffee00-1234-4abc-9def-0123456789ab"


def _garbage(n: int) -> bytes:
    """*n* reproducible bytes that look like nothing (sha256 chained, not random per run)."""
    out = b""
    block = b"bulk-cancel"
    while len(out) < n:
        block = hashlib.sha256(block).digest()
        out += block
    return b"\x01\x02" + out[: n - 2]  # never a BOM or a known magic number


def _xlsx(build: Callable[[Any], None]) -> bytes:
    import openpyxl

    book = openpyxl.Workbook()
    build(book)
    buffer = io.BytesIO()
    book.save(buffer)
    return buffer.getvalue()


def _second_sheet(book: Any) -> None:
    first = book.active
    first.title = "Read me"
    first.append(["These umids are to be cancelled: see the next sheet."])
    ids = book.create_sheet("ids")
    ids.append(["umid", "subaccount_id", "note"])
    ids.append([U1, "acme_hq", "007"])
    ids.append([U2.upper(), "acme_hq", None])


def _excel_numbers(book: Any) -> None:
    sheet = book.active
    sheet.append(["umid", "subaccount_id"])
    sheet.append([1.23457e35, "acme_hq"])
    sheet.append([4.5e18, "acme_hq"])
    sheet.append([123456789, "acme_hq"])


def _truncated_parquet() -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    buffer = io.BytesIO()
    pq.write_table(pa.table({"umid": [U1, U2, U3]}), buffer)
    data = buffer.getvalue()
    return data[: len(data) // 2]


#: Files whose bytes are the same on every run (the others hold writer versions or timestamps).
STABLE: dict[str, bytes] = {
    "empty.csv": b"",
    "header_only.csv": b"umid,subaccount_id\n",
    "blank_lines_only.csv": b"\n \n\t\n",
    "no_usable_column.csv": f"id,sub,note\n{U1},acme_hq,x\n".encode(),
    "ambiguous_columns.csv": f"message_id,messageId\n{U1},{U2}\n".encode(),
    "headerless.csv": f"{U1}\n{U2}\n".encode(),
    "binary_garbage.csv": _garbage(512),
    "latin1.csv": f"umid,subaccount_id,note\n{U1},acme_hq,plain\n{U2},acme_hq,café\n".encode(
        "latin-1"
    ),
    "utf16.csv": codecs.BOM_UTF16_LE
    + f"umid,subaccount_id,note\r\n{U1},acme_hq,Zoë\r\n".encode("utf-16-le"),
    "utf16_no_bom.csv": f"umid,subaccount_id\r\n{U1},acme_hq\r\n".encode("utf-16-le"),
    "utf8_bom.csv": f"\ufeffumid,subaccount_id\n{U1},acme_hq\n".encode(),
    "semicolons.csv": f"umid;subaccount_id;note\n{U1};acme_hq;a, b\n".encode(),
    "mac_line_endings.csv": f"umid,subaccount_id\r{U1},acme_hq\r{U2},acme_hq\r".encode(),
    "ragged.csv": f"umid,subaccount_id\n{U1},acme_hq,surprise\n".encode(),
    "unclosed_quote.csv": f'umid,subaccount_id,note\n{U1},acme_hq,"never closed\n{U2},acme_hq,x\n'.encode(),
    "nul_byte.csv": f"umid,subaccount_id\n{U1},acme_hq\x00\n".encode(),
    "zip_named.csv": b"PK\x03\x04" + _garbage(60),
    "hostile_values.csv": (
        "umid,subaccount_id\n"
        "../../admin,acme_hq\n"
        f"{U1}/../x,acme_hq\n"
        f"{U1}%2F,acme_hq\n"
        f"{U1}?x=1,acme_hq\n"
        f"{U1}#frag,acme_hq\n"
        f"{U1[:8]} {U1[9:]},acme_hq\n"
        f"{U1},acme/hq\n"
        f"{U1},acme hq\n"
        f"{U1},..\n"
        f"{U1},ácmé\n"
        f"{U1},{'a' * 51}\n"
        f"{U1}\x1b[31m,acme_hq\n"
        f"ü{U1[1:]},acme_hq\n"
        f"{U1},acme\x07hq\n"
    ).encode(),
    "fake.parquet": f"umid\n{U1}\n".encode(),
    "fake.xlsx": f"umid,subaccount_id\n{U1},acme_hq\n".encode(),
    "password_protected.xlsx": b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + _garbage(56),
    "old_excel.xls": b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + _garbage(56),
    "ids_with_header.txt": f"UMID\n{U1}\n\n{U2.upper()}\nnot-an-id\n".encode(),
    "table.txt": f"umid,subaccount_id\n{U1},acme_hq\n".encode(),
    "no_extension": f"umid\n{U1}\n".encode(),
}


def variable() -> dict[str, bytes]:
    """Files whose bytes depend on the writer's version or the time (xlsx, parquet)."""
    return {
        "second_sheet.xlsx": _xlsx(_second_sheet),
        "excel_numbers.xlsx": _xlsx(_excel_numbers),
        "truncated.parquet": _truncated_parquet(),
    }


def write_committed(directory: Path = BAD) -> list[Path]:
    """Write the tiny committed corpus into *directory*; return the paths."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, data in {**STABLE, **variable()}.items():
        path = directory / name
        path.write_bytes(data)
        written.append(path)
    return written


def write_generated(directory: Path) -> dict[str, Path]:
    """Write the files that must not be committed into *directory* (tests use ``tmp_path``)."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = {}

    huge = directory / "huge_single_line.csv"
    with huge.open("wb") as fh:  # 50 MB and not one newline
        block = b"x" * (1 << 20)
        for _ in range(50):
            fh.write(block)
    paths["huge_single_line"] = huge

    after = directory / "huge_line_after_header.txt"
    with after.open("wb") as fh:
        fh.write(f"umid\n{U1}\n".encode())
        fh.write(b"y" * (3 << 20))
    paths["huge_line_after_header"] = after

    folder = directory / "folder.csv"
    folder.mkdir(exist_ok=True)
    paths["directory"] = folder

    loop = directory / "loop.csv"
    if not loop.is_symlink():
        loop.symlink_to(loop.name)
    paths["symlink_loop"] = loop

    dangling = directory / "dangling.csv"
    if not dangling.is_symlink():
        dangling.symlink_to("nowhere.csv")
    paths["dangling_symlink"] = dangling

    fifo = directory / "fifo.csv"
    if not fifo.exists():
        os.mkfifo(fifo)
    paths["fifo"] = fifo

    locked = directory / "unreadable.csv"
    locked.write_bytes(f"umid\n{U1}\n".encode())
    locked.chmod(0)
    paths["unreadable"] = locked
    return paths


if __name__ == "__main__":
    for path in write_committed():
        print(f"{path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path}")
