"""The served log taken in: every feature service's log table into one table of answers, once each.

Each service's log has its own columns (Feast's logging schema differs by service), so the answers are
consolidated into `served_answers`, one row per answer keyed by Feast's `__request_id`, its features as
a JSON object by name. Intake reads each log from its newest answer already taken in, less OVERLAP: a
writer commits a row some moments after it stamped it, so a row may land behind answers taken in
before it. Whatever the overlap reads again is skipped by the key: taking in twice adds nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import psycopg
from psycopg import sql

if TYPE_CHECKING:
    from feast import FeatureStore

ANSWERS_TABLE = "served_answers"
WRITERS_TABLE = "served_log_writers"
# Far longer than a writer holds an answer before its write commits (FLUSH_S, then at most the
# statement timeout); an answer that waited longer was dropped and counted, not written late.
OVERLAP = timedelta(minutes=10)

ANSWERS_DDL = f"""
CREATE TABLE IF NOT EXISTS {ANSWERS_TABLE} (
    request_id text PRIMARY KEY,
    batch_id text NOT NULL,
    served_at timestamptz NOT NULL,
    feature_service text NOT NULL,
    model_version text NOT NULL,
    request_form text NOT NULL,
    message_id bigint,
    text_sha256 text,
    text_chars integer,
    text text,
    spam_probability double precision NOT NULL,
    label text NOT NULL,
    features jsonb NOT NULL,
    taken_in_at timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS {ANSWERS_TABLE}_served_at_idx ON {ANSWERS_TABLE} (served_at);
CREATE INDEX IF NOT EXISTS {ANSWERS_TABLE}_taken_in_at_idx ON {ANSWERS_TABLE} (taken_in_at);
CREATE INDEX IF NOT EXISTS {ANSWERS_TABLE}_message_id_idx ON {ANSWERS_TABLE} (message_id);
"""
# Each API writer's counts since it started, kept while Postgres answers (sms_core.served_log.writer).
WRITERS_DDL = f"""
CREATE TABLE IF NOT EXISTS {WRITERS_TABLE} (
    writer text PRIMARY KEY,
    started_at timestamptz NOT NULL,
    written bigint NOT NULL,
    queue_full bigint NOT NULL,
    write_failed bigint NOT NULL,
    updated_at timestamptz NOT NULL
)
"""
RECORD_WRITER_SQL = f"""
INSERT INTO {WRITERS_TABLE} (writer, started_at, written, queue_full, write_failed, updated_at)
VALUES (%(writer)s, %(started_at)s, %(written)s, %(queue_full)s, %(write_failed)s, now())
ON CONFLICT (writer) DO UPDATE SET written = EXCLUDED.written, queue_full = EXCLUDED.queue_full,
    write_failed = EXCLUDED.write_failed, updated_at = EXCLUDED.updated_at
"""


@dataclass(frozen=True)
class LogSource:
    """One feature service's log table, as its logging schema lays it out."""

    service: str
    table: sql.Composable  # the destination's identifier
    id_column: str | None  # the join key column (answers by id)
    text_column: str | None  # the request's text, or the text feature that carries it
    features: Sequence[tuple[str, str]]  # (log column, feature name)


@dataclass(frozen=True)
class TakenIn:
    service: str
    rows: int
    since: datetime | None  # read from here (the newest answer already taken in, less OVERLAP)


def logged_yet(conn: psycopg.Connection, source: LogSource) -> bool:
    """Whether the service has logged an answer (its table is made by feast_registry, or the first write)."""
    row = conn.execute(
        sql.SQL("SELECT to_regclass({})").format(sql.Literal(source.table.as_string(conn)))
    ).fetchone()
    if not row or row[0] is None:
        return False
    return bool(conn.execute(sql.SQL("SELECT EXISTS (SELECT 1 FROM {})").format(source.table)).fetchone()[0])  # type: ignore[index]


def take_in(conn: psycopg.Connection, source: LogSource, stamp: datetime) -> TakenIn:
    """Add the log's answers that `served_answers` lacks, stamped `taken_in_at = stamp`; nothing when
    the service has logged nothing yet (its table is made by the first write)."""
    if not logged_yet(conn, source):
        return TakenIn(source.service, 0, None)
    row = conn.execute(
        f"SELECT max(served_at) FROM {ANSWERS_TABLE} WHERE feature_service = %s",  # type: ignore[arg-type]
        (source.service,),
    ).fetchone()
    since = row[0] - OVERLAP if row and row[0] else None

    def column(name: str | None) -> sql.Composable:
        return sql.Identifier(name) if name else sql.NULL

    features = sql.SQL(", ").join(
        sql.SQL("{}, {}").format(sql.Literal(feature), sql.Identifier(log_column))
        for log_column, feature in source.features
    )
    query = sql.SQL(
        "INSERT INTO {answers} (request_id, batch_id, served_at, feature_service, model_version, "
        "request_form, message_id, text_sha256, text_chars, text, spam_probability, label, features, "
        "taken_in_at) "
        'SELECT "__request_id", batch_id, "__log_timestamp", {service}, model_version, request_form, '
        "{id}, text_sha256, text_chars, {text}, spam_probability, label, jsonb_build_object({features}), "
        '{stamp} FROM {log} WHERE {since}::timestamptz IS NULL OR "__log_timestamp" > {since} '
        "ON CONFLICT (request_id) DO NOTHING"
    ).format(
        answers=sql.Identifier(ANSWERS_TABLE),
        service=sql.Literal(source.service),
        id=column(source.id_column),
        text=column(source.text_column),
        features=features,
        stamp=sql.Literal(stamp),
        log=source.table,
        since=sql.Literal(since),
    )
    inserted = conn.execute(query).rowcount
    return TakenIn(source.service, int(inserted), since)


def sources(store: FeatureStore) -> list[LogSource]:
    """Every feature service of the registry that logs to a Postgres table, laid out by its schema."""
    import pyarrow as pa
    from feast.feature_logging import FeatureServiceLoggingSource

    from sms_core.served_log.columns import feature_columns
    from sms_core.served_log.destination import PostgreSQLLoggingDestination

    found = []
    for service in store.list_feature_services():
        config = service.logging_config
        if config is None or not isinstance(config.destination, PostgreSQLLoggingDestination):
            continue
        schema = FeatureServiceLoggingSource(service, store.project).get_schema(store.registry)
        features = feature_columns(schema)
        derived = {f"{name}__{suffix}" for name in features for suffix in ("timestamp", "status")}
        keys = [f for f in schema if f.name not in {*features, *derived} and not f.name.startswith("__")]
        texts = [f.name for f in keys if pa.types.is_string(f.type)]
        texts += [name for name in features if pa.types.is_string(schema.field(name).type)]
        found.append(
            LogSource(
                service=service.name,
                table=config.destination.identifier,
                id_column=next((f.name for f in keys if pa.types.is_integer(f.type)), None),
                text_column=texts[0] if texts else None,
                features=[(name, name.split("__", 1)[1]) for name in features],
            )
        )
    return found
