"""Gallery item metadata in a memory-mapped Arrow file (items.arrow), as clip-retrieval keeps it.

One row per gallery image, row number = item id = row of image_features. Columns: file (local path, or
"<shard URL>#<member>" for an image inside a webdataset shard), name (what web clients see), captions
(list of strings). Opening maps the file and reads nothing else, so a 10M-item gallery opens in
milliseconds and only the rows looked at are paged in.
"""
import numpy as np
import pyarrow as pa

SCHEMA = pa.schema([("file", pa.string()), ("name", pa.string()), ("captions", pa.list_(pa.string()))])


class ItemTable:
    """table[row] -> {"id", "file", "name", "captions"}; len(table); file_lookup() -> FileLookup."""

    def __init__(self, table):
        self.table = table

    @classmethod
    def open(cls, path):
        """Memory-map ``path``; raises pyarrow errors for a damaged file (Gallery.load reports them)."""
        table = pa.ipc.open_file(pa.memory_map(path, "r")).read_all()
        if not table.schema.equals(SCHEMA):
            raise ValueError(f"unexpected columns {table.schema.names}")
        return cls(table)

    @classmethod
    def empty(cls):
        return cls(SCHEMA.empty_table())

    def __len__(self):
        return self.table.num_rows

    def __getitem__(self, row):
        row = int(row)
        if not 0 <= row < len(self):
            raise IndexError(f"no item {row}")
        record = self.table.slice(row, 1).to_pylist()[0]
        return {"id": row, **record}

    def head(self, rows):
        """The first ``rows`` items (a zero-copy slice)."""
        return ItemTable(self.table.slice(0, rows))

    def file_lookup(self):
        """A FileLookup over the items' files, built once (one pass over the column)."""
        return FileLookup(self.table.column("file"))

    def batches(self):
        """The table as the record batches it was written in (a few thousand rows each), in row order."""
        return self.table.to_batches()  # the chunks ItemWriter wrote: no copy of a memory-mapped table


class FileLookup:
    """contains(files) -> [bool]: which files are already items. Holds one 64-bit hash per item, sorted, so a
    10M-item gallery costs 160 MB and each lookup a binary search; a hash hit is confirmed on the string."""

    def __init__(self, column):
        self.column = column
        hashes = np.fromiter((hash(name) for chunk in column.chunks for name in chunk.to_pylist()), np.int64,
                             count=len(column))
        self.order = np.argsort(hashes, kind="stable")
        self.sorted = hashes[self.order]

    def contains(self, files):
        if not len(self.sorted) or not files:
            return [False] * len(files)
        wanted = np.fromiter((hash(name) for name in files), np.int64, count=len(files))
        at = np.minimum(np.searchsorted(self.sorted, wanted), len(self.sorted) - 1)
        return [bool(self.sorted[position] == key) and self.column[int(self.order[position])].as_py() == name
                for name, key, position in zip(files, wanted, at)]


def item_batch(rows):
    """A record batch of ``rows`` [(file, name, captions)]."""
    files, names, captions = zip(*rows) if rows else ((), (), ())
    return pa.record_batch([pa.array(files, pa.string()), pa.array(names, pa.string()),
                            pa.array(captions, pa.list_(pa.string()))], schema=SCHEMA)


class ItemWriter:
    """Streams record batches into an Arrow IPC file (uncompressed, so it can be memory-mapped).

    target: a path (opened and closed here) or a binary stream (left open: atomic_write syncs and closes it).
    """

    def __init__(self, target):
        self.owned = isinstance(target, str)
        self.sink = pa.OSFile(target, "wb") if self.owned else target
        self.writer = pa.ipc.new_file(self.sink, SCHEMA)

    def write(self, batch):
        if batch.num_rows:
            self.writer.write_batch(batch)

    def close(self):
        self.writer.close()
        if self.owned:
            self.sink.close()
