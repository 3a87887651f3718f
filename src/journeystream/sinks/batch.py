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

    __slots__ = ("_columns_data", "_token", "columns", "key_columns", "rows", "table")

    def __init__(self, table: str, columns: Sequence[str], key_columns: Sequence[str]) -> None:
        self.table = table
        self.columns = tuple(columns)
        self.key_columns = tuple(self.columns.index(name) for name in key_columns)
        self.rows: list[Sequence[Any]] = []
        self._columns_data: list[list[Any]] | None = None
        self._token: str | None = None

    def __len__(self) -> int:
        return len(self.rows)

    def append(self, row: Sequence[Any]) -> None:
        if len(row) != len(self.columns):
            raise ValueError(f"{self.table}: a row of {len(row)} values for {len(self.columns)} columns")
        self.rows.append(row)
        self._columns_data = self._token = None

    @property
    def data(self) -> list[list[Any]]:
        """The rows column by column (transposed once, when the batch is written)."""
        if self._columns_data is None:
            self._columns_data = [list(column) for column in zip(*self.rows, strict=True)] or [
                [] for _ in self.columns
            ]
        return self._columns_data

    def token(self) -> str:
        """Deduplication token: the table and a digest of every row's key."""
        if self._token is None:
            keys = orjson.dumps([[row[i] for row in self.rows] for i in self.key_columns], default=str)
            self._token = f"{self.table}:{len(self)}:{hashlib.blake2b(keys, digest_size=16).hexdigest()}"
        return self._token

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled (to the process that owns the store) as what an insert reads: the columns
        and the token, made by the sender, so the owner's thread only inserts them."""
        return (_unpickle, (self.table, self.columns, self.key_columns, self.data, self.token(), len(self)))


def _unpickle(
    table: str,
    columns: tuple[str, ...],
    key_columns: tuple[int, ...],
    data: list[list[Any]],
    token: str,
    rows: int,
) -> Batch:
    batch = Batch(table, columns, ())
    batch.key_columns = key_columns
    batch._columns_data, batch._token = data, token
    batch.rows = [()] * rows  # its length only: the rows themselves travel as columns
    return batch
