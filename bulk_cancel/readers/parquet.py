"""Parquet, streamed with pyarrow (imported only when a Parquet file is read)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Final

from .columns import _choose_columns, _Options, _source
from .files import _fail, _looks_like_text, _open_binary, _peek, _short
from .rows import Format, InputSource, _cell_text, _Records

#: Pyarrow's read buffer for streamed Parquet (MEASURED.md).
_PARQUET_BUFFER_BYTES: Final = 1 << 20


@contextmanager
def _parquet_file(path: str, label: str) -> Iterator[Any]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    with _open_binary(path, label) as fh:
        try:
            pf = pq.ParquetFile(fh, pre_buffer=False, buffer_size=_PARQUET_BUFFER_BYTES)
        except (pa.ArrowException, OSError, ValueError) as exc:
            hint = (
                " (it looks like text: a CSV named .parquet?)"
                if _looks_like_text(_peek(path, label))
                else ""
            )
            raise _fail(
                label, f"is not a Parquet file{hint}; export it again ({_short(exc)})"
            ) from None
        yield pf


def _open_parquet(path: str, fmt: Format, options: _Options) -> InputSource:
    import pyarrow as pa

    label = options.label
    with _parquet_file(path, label) as pf:
        schema = pf.schema_arrow
    names = [str(n) for n in schema.names]
    columns = _choose_columns(names, options)
    id_type = schema.field(columns.id_index).type
    if (
        pa.types.is_integer(id_type)
        or pa.types.is_floating(id_type)
        or pa.types.is_decimal(id_type)
    ):
        raise _fail(
            label,
            f"the {columns.id_name} column holds numbers ({id_type}), not UUIDs; "
            "re-export the column as text",
        )
    id_name = names[columns.id_index]
    sub_name = None if columns.sub_index is None else names[columns.sub_index]
    extra_names = [names[i] for i in columns.extra_indexes]
    extra_types = tuple(_kept_type(schema.field(i).type) for i in columns.extra_indexes)
    wanted = [id_name, *([sub_name] if sub_name else []), *extra_names]

    def records() -> _Records:
        line = 0
        with _parquet_file(path, label) as pf:
            batches = pf.iter_batches(batch_size=options.chunk_rows, columns=wanted)
            while True:
                try:
                    batch = next(batches, None)
                except (pa.ArrowException, OSError, ValueError) as exc:
                    raise _fail(
                        label,
                        f"row {line + 1} cannot be read; the file may be truncated or corrupt "
                        f"({_short(exc)})",
                    ) from None
                if batch is None:
                    return
                ids = _arrow_ids(batch.column(id_name))
                subs = batch.column(sub_name).to_pylist() if sub_name else [None] * len(ids)
                extras = [
                    _arrow_texts(batch.column(n)) if t == "text" else batch.column(n).to_pylist()
                    for n, t in zip(extra_names, extra_types, strict=True)
                ]
                for raw_id, raw_sub, *extra in zip(ids, subs, *extras, strict=True):
                    line += 1
                    yield line, raw_id, raw_sub, tuple(extra)

    return _source(path, fmt, columns, records, options, extra_types=extra_types)


def _kept_type(kind: Any) -> str:
    """The Arrow type an extra Parquet column keeps in the results, or ``text``.

    Kept: integers, float32/64, booleans, strings, timestamps (with their unit and zone) and
    dates, the types a spreadsheet or a results file can hold. Others (decimal, binary, lists,
    structs...) become text, as before.
    """
    import pyarrow as pa

    types = pa.types
    if (
        types.is_integer(kind)
        or types.is_float32(kind)
        or types.is_float64(kind)
        or types.is_boolean(kind)
        or types.is_timestamp(kind)
        or types.is_date(kind)
    ):
        return str(kind)
    if types.is_string(kind) or types.is_large_string(kind):
        return "string"
    return "text"


def _arrow_ids(array: Any) -> list[object]:
    """An id column as Python values; 16-byte binary (Parquet's UUID type) as UUID text."""
    import uuid

    import pyarrow as pa

    values: list[Any] = array.to_pylist()
    kind = array.type
    if pa.types.is_fixed_size_binary(kind) and kind.byte_width == 16:
        return [None if v is None else str(uuid.UUID(bytes=v)) for v in values]
    return values


def _arrow_texts(array: Any) -> list[str]:
    import pyarrow as pa

    values: list[Any] = array.to_pylist()
    kind = array.type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_string_view(kind):
        return ["" if v is None else v for v in values]
    return [_cell_text(v) for v in values]
