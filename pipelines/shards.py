"""Input shards: what makes a preprocessing run restartable.

The CSV is split once, in order, into ``OUT/_shards/input/shard-NNNNNN.csv`` files of
``output.shard_rows`` rows; ``OUT/_shards/index.json`` (shard names and row counts) is written
last, so a split that died half-way is redone. Pass 1 then runs shard by shard: each writes
``OUT/_staging/shard=NNNNNN/`` and, only after its write finished, the marker
``OUT/_shards/done/shard-NNNNNN.json``. A re-run with ``output.resume`` keeps the index, skips
the marked shards and deletes whatever an unmarked shard left behind before redoing it, so no
row is written twice. Plain functions over :mod:`pipelines.storage` (local paths, s3://, gs://).
"""

from __future__ import annotations

import io
import json
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv

from pipelines import storage


def _shards(out: str, *parts: str) -> str:
    return storage.join(out, "_shards", *parts)


def split_csv(data: Any, columns: list[str], out: str, shard_rows: int, limit: int | None) -> dict[str, Any]:
    """Stream the CSV (a readable binary file) into shard CSVs of the WebVid ``columns``
    (all strings); returns and writes the index ``{"rows": total, "shards": [{"name", "rows"}]}``."""
    convert = pacsv.ConvertOptions(column_types={c: pa.string() for c in columns}, strings_can_be_null=True,
                                   include_columns=columns)
    reader = pacsv.open_csv(data, convert_options=convert)
    shards: list[dict[str, Any]] = []
    pending: list[pa.RecordBatch] = []
    buffered = total = 0

    def flush(batches: list[pa.RecordBatch]) -> None:
        table = pa.Table.from_batches(batches, schema=reader.schema)
        name = f"shard-{len(shards):06d}"
        buf = io.BytesIO()
        pacsv.write_csv(table, buf)
        storage.write_bytes(_shards(out, "input", f"{name}.csv"), buf.getvalue())
        shards.append({"name": name, "rows": table.num_rows})

    for batch in reader:
        if limit is not None and total + batch.num_rows > limit:
            batch = batch.slice(0, limit - total)
        total += batch.num_rows
        while batch.num_rows:
            take = min(batch.num_rows, shard_rows - buffered)
            pending.append(batch.slice(0, take))
            buffered += take
            batch = batch.slice(take)
            if buffered == shard_rows:
                flush(pending)
                pending, buffered = [], 0
        if limit is not None and total >= limit:
            break
    if buffered:
        flush(pending)
    index = {"rows": total, "shard_rows": shard_rows, "columns": columns, "shards": shards}
    storage.write_text(_shards(out, "index.json"), json.dumps(index, indent=1))
    return index


def read_index(out: str) -> dict[str, Any] | None:
    """The index of an earlier split, or None when there is none (or it is unreadable)."""
    try:
        return json.loads(storage.read_text(_shards(out, "index.json")))
    except (OSError, FileNotFoundError, ValueError):
        return None


def input_dir(out: str) -> str:
    """The folder of the shard CSVs."""
    return _shards(out, "input")


def shard_csv(out: str, name: str) -> str:
    return storage.join(input_dir(out), f"{name}.csv")


def staging_dir(out: str, name: str) -> str:
    return storage.join(out, "_staging", f"shard={name}")


def finished(out: str, index: dict[str, Any]) -> set[str]:
    """Names of the shards whose marker exists and is intact."""
    done = set()
    for shard in index["shards"]:
        try:
            marker = json.loads(storage.read_text(_shards(out, "done", f"{shard['name']}.json")))
        except (OSError, FileNotFoundError, ValueError):
            continue
        if marker.get("rows") == shard["rows"]:
            done.add(shard["name"])
    return done


def mark_finished(out: str, shard: dict[str, Any], seconds: float) -> None:
    storage.write_text(_shards(out, "done", f"{shard['name']}.json"), json.dumps({"rows": shard["rows"], "seconds": round(seconds, 2)}))
