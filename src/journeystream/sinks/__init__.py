"""Batching, idempotent writes to ClickHouse."""
