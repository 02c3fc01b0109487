"""Following a CSV file as it is written: the rows appended since the last look, never a partial line."""

from __future__ import annotations

import csv
from pathlib import Path


class CsvTail:
    """Reads the rows appended to a CSV file since the last call, keeping a byte offset.

    Only complete lines (ending in a newline) are parsed; a partial last line is read again next time. The first
    line is the header. A file that shrank (replaced) is read again from the start.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        """Bytes of the file already parsed."""
        self.header: list[str] | None = None

    def read_new(self) -> list[list[str]]:
        """The rows (header excluded) completed since the last call; [] when the file does not exist yet."""
        try:
            size = self.path.stat().st_size
        except OSError:
            return []
        if size < self.offset:
            self.offset, self.header = 0, None
        if size == self.offset:
            return []
        with self.path.open("rb") as fh:
            fh.seek(self.offset)
            data = fh.read(size - self.offset)
        end = data.rfind(b"\n")
        if end < 0:
            return []
        self.offset += end + 1
        rows = list(csv.reader(data[: end + 1].decode("utf-8", "replace").splitlines()))
        if self.header is None and rows:
            self.header = rows.pop(0)
        return rows
