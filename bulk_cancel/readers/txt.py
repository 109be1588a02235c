"""``.txt``: one id per line, no header; a first line naming an id column is skipped."""

from __future__ import annotations

import re

from ..model import Kind
from ..normalize import clean
from .columns import _ID_ALIASES, _Columns, _Options, _source
from .decoding import _Text
from .files import _fail, _open_binary
from .rows import Format, InputSource, _Records


def _txt_header(line: str) -> Kind | None:
    """The kind a header-looking first line announces, or ``None`` for a data line."""
    key = clean(line).casefold()
    for aliases, kind in _ID_ALIASES:
        if key in aliases:
            return kind
    return None


def _open_txt(path: str, fmt: Format, options: _Options) -> InputSource:
    label = options.label
    header_line = 0
    kind = Kind.MESSAGE
    with _open_binary(path, label) as fh:
        for number, line in enumerate(_Text(fh, label, options.encoding).lines(), start=1):
            if not clean(line):
                continue
            announced = _txt_header(line)
            if announced is not None:
                header_line, kind = number, announced
            elif any(_txt_header(cell) for cell in re.split(r"[,;\t]", line)):
                raise _fail(
                    label,
                    "looks like a table with a header, not one id per line; name it .csv (or .tsv)",
                )
            break
    if options.default_subaccount is None:
        raise _fail(label, "no subaccount: pass --subaccount ID (a .txt file has only ids)")
    columns = _Columns(
        id_index=0,
        id_name="batch_id" if kind is Kind.BATCH else "umid",
        kind=kind,
        sub_index=None,
        sub_name=None,
        extra_indexes=(),
        extra_names=(),
        width=1,
    )

    def records() -> _Records:
        with _open_binary(path, label) as fh:
            for number, line in enumerate(_Text(fh, label, options.encoding).lines(), start=1):
                if number > header_line:
                    yield number, line.rstrip("\r\n"), None, ()

    return _source(path, fmt, columns, records, options, header_line=header_line)
