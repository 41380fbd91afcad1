"""The public labelled sets: how their records are recognised (here, importable without reading the
mapping table) and the table with its readers (:mod:`components.external.sources`)."""

from __future__ import annotations

from components.core.contract import Record

SOURCE_PREFIX = "external:"  # a public set's records carry metadata.source = "external:<key>"


def is_real(record: Record) -> bool:
    """Whether a record is public real text, i.e. came from a set of the mapping table (``external:<key>``)."""
    return record.source.startswith(SOURCE_PREFIX)


def eval_group(record: Record) -> str:
    """The group a real record is judged in: ``metadata.eval_group`` (set at ingest), else its set's key."""
    return str(record.metadata.get("eval_group") or record.source[len(SOURCE_PREFIX):] or record.source)
