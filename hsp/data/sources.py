"""Reading documents from .txt, .jsonl and .parquet files, in independent work units.

- `.txt`: the whole file is one document.
- `.jsonl`: one document per non-blank line, a JSON string or an object whose
  `text_field` is a string.
- `.parquet`: one document per row of the string (or binary) column `text_field`.

A unit is a piece of one file that a worker process reads on its own: a whole .txt
file, a byte range of a .jsonl file (a line belongs to the range holding its first
byte), or one parquet row group. Bytes that are not UTF-8 are replaced by U+FFFD and
counted per document, so the caller can report and refuse them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

SUFFIXES = (".txt", ".jsonl", ".parquet")


@dataclass(frozen=True)
class Unit:
    path: str
    start: int
    """First byte (.jsonl) or row group (.parquet); 0 for .txt."""
    stop: int
    """End byte (.jsonl) or row group + 1 (.parquet); the file size for .txt."""
    num_bytes: int
    """Bytes of input this unit covers (for progress)."""


@dataclass
class Document:
    text: str
    num_replaced: int
    """Invalid UTF-8 sequences replaced by U+FFFD (0 for clean text)."""


def list_inputs(inputs: list[str | Path]) -> list[Path]:
    """The files of `inputs` (files, or folders searched recursively), sorted per input."""
    if not inputs:
        raise ValueError("no input files given; pass .txt, .jsonl or .parquet files or folders holding them")
    files: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            found = sorted(p for p in item.rglob("*") if p.suffix in SUFFIXES and p.is_file())
            if not found:
                raise ValueError(f"{str(item)!r} holds no .txt, .jsonl or .parquet files; add some or pass another folder")
            files += found
        elif item.is_file():
            if item.suffix not in SUFFIXES:
                raise ValueError(f"{str(item)!r}: unsupported file type {item.suffix!r}; use .txt, .jsonl or .parquet")
            files.append(item)
        else:
            raise ValueError(f"input {str(item)!r} does not exist")
    return files


def plan_units(files: list[Path], chunk_bytes: int) -> list[Unit]:
    units = []
    for file in files:
        size = file.stat().st_size
        if file.suffix == ".parquet":
            import pyarrow.parquet as pq

            meta = pq.ParquetFile(file).metadata
            per_group = size // max(meta.num_row_groups, 1)
            units += [Unit(str(file), g, g + 1, per_group) for g in range(meta.num_row_groups)]
        elif file.suffix == ".jsonl":
            units += [Unit(str(file), a, min(a + chunk_bytes, size), min(chunk_bytes, size - a)) for a in range(0, size, chunk_bytes)]
        else:
            units.append(Unit(str(file), 0, size, size))
    return units


def decode_utf8(data: bytes) -> Document:
    try:
        return Document(data.decode("utf-8"), 0)
    except UnicodeDecodeError:
        text = data.decode("utf-8", errors="replace")
        # U+FFFD that were already in the input (validly encoded) are not replacements
        return Document(text, text.count("\ufffd") - data.count("\ufffd".encode()))


def read_unit(unit: Unit, text_field: str) -> Iterator[Document]:
    path = Path(unit.path)
    if path.suffix == ".txt":
        yield decode_utf8(path.read_bytes())
    elif path.suffix == ".jsonl":
        yield from _jsonl(path, unit, text_field)
    else:
        yield from _parquet(path, unit.start, text_field)


def _jsonl(path: Path, unit: Unit, field: str) -> Iterator[Document]:
    with open(path, "rb") as f:
        if unit.start > 0:
            f.seek(unit.start - 1)
            if f.read(1) != b"\n":
                f.readline()  # the rest of a line that began in the previous unit
        while f.tell() < unit.stop:
            offset = f.tell()
            line = f.readline()
            if not line:
                break
            if not line.strip():
                continue
            raw = decode_utf8(line)
            try:
                item = json.loads(raw.text)
            except json.JSONDecodeError as err:
                raise ValueError(f"{_where(path, offset)}: not valid JSON ({err}); each line must be one JSON object") from None
            text = item if isinstance(item, str) else item.get(field) if isinstance(item, dict) else None
            if not isinstance(text, str):
                raise ValueError(f'{_where(path, offset)}: expected a string or an object with a "{field}" string field')
            yield _without_surrogates(text, raw.num_replaced)


def _where(path: Path, offset: int) -> str:
    """file:line of byte `offset` (counted only on this error path)."""
    with open(path, "rb") as f:
        line = f.read(offset).count(b"\n") + 1
    return f"{path}:{line}"


def _without_surrogates(text: str, num_replaced: int) -> Document:
    """JSON escapes can spell lone surrogates (\\ud800), which are not encodable text."""
    try:
        text.encode("utf-8")
        return Document(text, num_replaced)
    except UnicodeEncodeError:
        bad = sum(0xD800 <= ord(c) <= 0xDFFF for c in text)
        return Document("".join("\ufffd" if 0xD800 <= ord(c) <= 0xDFFF else c for c in text), num_replaced + bad)


def _parquet(path: Path, row_group: int, field: str) -> Iterator[Document]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    file = pq.ParquetFile(path)
    if field not in file.schema_arrow.names:
        raise ValueError(f"{path}: no column {field!r} (columns: {file.schema_arrow.names}); pass the text column's name")
    column = file.read_row_group(row_group, columns=[field]).column(0)
    binary = pa.types.is_binary(column.type) or pa.types.is_large_binary(column.type)
    if not binary and not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        raise ValueError(f"{path}: column {field!r} has type {column.type}, not text; pass a string column")
    for value in column.to_pylist():
        if value is None:
            yield Document("", 0)
        else:
            yield decode_utf8(value) if binary else Document(value, 0)
