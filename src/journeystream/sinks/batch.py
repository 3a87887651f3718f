"""Column-oriented row batches for one table."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import orjson


class Batch:
    """Rows for one table, stored column by column (the fastest way to insert them).

    `key_columns` identify a row uniquely; the deduplication token of the batch is derived
    from them, so the same batch retried is recognised by ClickHouse and written once.
    """

    __slots__ = ("_token", "columns", "data", "key_columns", "table")

    def __init__(self, table: str, columns: Sequence[str], key_columns: Sequence[str]) -> None:
        self.table = table
        self.columns = tuple(columns)
        self.key_columns = tuple(self.columns.index(name) for name in key_columns)
        self.data: list[list[Any]] = [[] for _ in self.columns]
        self._token: str | None = None

    def __len__(self) -> int:
        return len(self.data[0])

    def append(self, row: Sequence[Any]) -> None:
        for column, value in zip(self.data, row, strict=True):
            column.append(value)

    def token(self) -> str:
        """Deduplication token: the table and a digest of every row's key."""
        if self._token is None:
            keys = orjson.dumps([self.data[i] for i in self.key_columns], default=str)
            self._token = f"{self.table}:{len(self)}:{hashlib.blake2b(keys, digest_size=16).hexdigest()}"
        return self._token
