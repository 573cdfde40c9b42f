"""Finding rows by id in an output directory: a filter on the ``id`` column, not a full read.

The ``id`` column's row-group statistics let Arrow skip what cannot match; :func:`find_row` resolves a document
id to its ``_type1`` row and refuses to guess between two shards holding the same id.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from sodadata.locations import Location, as_location, display, is_remote
from sodadata.write.outputs import find_shards

log = logging.getLogger(__name__)


def row_files(out_dir: Location | str) -> list[Location]:
    """Every finished shard at or below ``out_dir`` (an output root, a folder holding roots, one component, or one
    shard; local or a URL), found by :func:`sodadata.write.outputs.find_shards`: never ``_hub`` staged copies, rejects or
    partial files."""
    return [s.parquet for s in find_shards(as_location(out_dir)).shards]


def shard_dataset(files: Sequence[Location]):
    """An Arrow dataset over ``files`` (local, or on one store: read through its fsspec filesystem, which holds the
    credentials from the environment) and a map from the dataset's ``__filename`` back to each file's location."""
    import pyarrow.dataset as ds

    files = [as_location(f) for f in files]
    if not any(is_remote(f) for f in files):
        return ds.dataset([str(f) for f in files], format="parquet"), {str(f): f for f in files}
    from pyarrow.fs import FSSpecHandler, PyFileSystem

    by_name = {f.path: f for f in files}
    filesystem = PyFileSystem(FSSpecHandler(files[0].fs))
    return ds.dataset(list(by_name), format="parquet", filesystem=filesystem), by_name


@dataclass(frozen=True)
class FoundRow:
    row: dict  # the row's columns
    path: Location  # its shard
    record: dict | None  # the shard's record (<stem>.json), if finished


def find_rows(
    where: Location | str | Sequence[Location], ids: Sequence[str], columns: Sequence[str] | None = None
) -> list[FoundRow]:
    """The rows with these ids under ``where`` (a folder, or a list of shards), in the order of ``ids``.

    Read with a filter on ``id``: the ``id`` column's row-group statistics let Arrow skip what cannot match.
    """
    import json

    import pyarrow.dataset as ds

    files = row_files(where) if isinstance(where, str) or not isinstance(where, Sequence) else list(where)
    if not files or not ids:
        return []
    dataset, by_name = shard_dataset(files)
    cols = list(columns) if columns is not None else dataset.schema.names
    if "id" not in cols:
        cols = ["id", *cols]
    table = dataset.to_table(filter=ds.field("id").isin(list(ids)), columns=[*cols, "__filename"])
    found, records = [], {}
    for row in table.to_pylist():
        path = by_name[row.pop("__filename")]
        if path not in records:
            rec_path = path.with_suffix(".json")
            records[path] = json.loads(rec_path.read_text(encoding="utf-8")) if rec_path.exists() else None
        found.append(FoundRow(row, path, records[path]))
    order = {i: k for k, i in enumerate(ids)}
    return sorted(found, key=lambda f: (order.get(f.row["id"], len(order)), str(f.path)))


def find_row(out_dir: Location | str, row_id: str) -> FoundRow:
    """The row ``row_id`` (a document id finds its ``_type1`` row).

    ``KeyError`` with a hint when absent; ``LookupError`` naming both shards when the row is in two (two output
    roots below ``out_dir`` holding the same corpus, say): one id, one answer, never a guess.
    """
    hits = find_rows(out_dir, [row_id, row_id + "_type1"])
    exact = [h for h in hits if h.row["id"] == row_id] or hits
    if len(exact) > 1:
        raise LookupError(f"row {exact[0].row['id']} is in {len(exact)} shards: "
                          f"{' and '.join(display(h.path) for h in exact)}; pass the output root (or shard) to decode from")
    if exact and exact[0].row["id"] != row_id:
        log.info("%s is a document id: decoding its row %s", row_id, exact[0].row["id"])
    if exact:
        return exact[0]
    raise KeyError(f"no row with id {row_id!r} under {display(out_dir)} (ids look like '<doc id>_type1'; "
                   "list some with: python -c \"import pyarrow.parquet as pq; print(pq.read_table('SHARD', "
                   "columns=['id'])['id'][:10])\")")
