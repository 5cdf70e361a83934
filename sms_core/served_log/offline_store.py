"""Feast's Postgres offline store, plus the one method it lacks: writing a feature service's log.

feature_store.yaml names this class as its `offline_store.type`, so every process that loads the repo
config (the `feast` CLI among them) imports this module, and with it the logging destination. Every
other method is Feast's own: the subclass keeps `isinstance(..., PostgreSQLOfflineStoreConfig)`, which
each of them asserts, true.

`FeatureStore.write_logged_features(table, feature_service)` reaches `write_logged_features` below: the
table is created from Feast's logging schema plus the answer's columns (`columns.log_schema`), any
column the service gained since is added, and the rows go in one `COPY ... (FORMAT csv)` that pyarrow
writes, so no Python loop runs per row.
"""

from __future__ import annotations

import io
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import psycopg
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
from feast.feature_logging import LOG_TIMESTAMP_FIELD, LoggingConfig, LoggingSource
from feast.infra.offline_stores.contrib.postgres_offline_store.postgres import (
    PostgreSQLOfflineStore,
    PostgreSQLOfflineStoreConfig,
)
from feast.infra.registry.base_registry import BaseRegistry
from feast.infra.utils.postgres.connection_utils import _get_conn_kwargs, _get_conninfo
from feast.repo_config import RepoConfig
from feast.type_map import arrow_to_pg_type
from psycopg import sql

from sms_core.served_log.columns import log_schema
from sms_core.served_log.destination import PostgreSQLLoggingDestination
from sms_core.urls import CONNECT_TIMEOUT_S

if TYPE_CHECKING:
    from feast import FeatureStore

STORE_TYPE = "sms_core.served_log.offline_store.PostgreSQLLoggingOfflineStore"
# A write that takes longer is abandoned (and its answers counted as dropped): the writer must not
# wait on a stalled Postgres while answers pile up behind it.
STATEMENT_TIMEOUT_MS = 10_000

# The tables this process has created or brought up to a schema: the DDL runs once per table and
# schema, not at every write.
_ensured: set[tuple[str, ...]] = set()
_ensured_lock = threading.Lock()


class PostgreSQLLoggingOfflineStoreConfig(PostgreSQLOfflineStoreConfig):
    type: Literal[STORE_TYPE] = STORE_TYPE  # type: ignore[assignment]  # Feast's own is "postgres"


class PostgreSQLLoggingOfflineStore(PostgreSQLOfflineStore):
    @staticmethod
    def write_logged_features(
        config: RepoConfig,
        data: pa.Table | Path,
        source: LoggingSource,
        logging_config: LoggingConfig,
        registry: BaseRegistry,
    ) -> None:
        destination = logging_config.destination
        if not isinstance(destination, PostgreSQLLoggingDestination):
            raise TypeError(
                f"the Postgres offline store writes to a Postgres destination, not {destination!r}"
            )
        offline = config.offline_store
        assert isinstance(offline, PostgreSQLOfflineStoreConfig)
        table = pq.read_table(data) if isinstance(data, Path) else data
        write_rows(offline, destination, log_schema(source.get_schema(registry)), table)


def connect(config: object) -> psycopg.Connection:
    """A connection to the offline store's database as Feast's Postgres stores make it, that gives up
    on a silent server."""
    if not isinstance(config, PostgreSQLOfflineStoreConfig):
        raise TypeError(f"not a Postgres offline store's configuration: {type(config).__name__}")
    kwargs: dict[str, Any] = _get_conn_kwargs(config)
    kwargs["options"] += f" -c statement_timeout={STATEMENT_TIMEOUT_MS}"
    return psycopg.connect(
        _get_conninfo(config),
        connect_timeout=CONNECT_TIMEOUT_S,
        keepalives_idle=config.keepalives_idle,
        **kwargs,
    )


def write_rows(
    config: PostgreSQLOfflineStoreConfig,
    destination: PostgreSQLLoggingDestination,
    schema: pa.Schema,
    table: pa.Table,
) -> int:
    """Append `table` (cast to `schema`; a column it lacks is null) to the destination's table."""
    missing = [name for name in schema.names if name not in table.column_names]
    for name in missing:
        table = table.append_column(name, pa.nulls(table.num_rows, schema.field(name).type))
    table = table.select(schema.names).cast(schema)
    key = (config.host, str(config.port), config.database, str(destination.identifier), schema.to_string())
    payload = io.BytesIO()
    pa_csv.write_csv(table, payload, pa_csv.WriteOptions(include_header=False))
    copy = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv)").format(
        destination.identifier, sql.SQL(", ").join(map(sql.Identifier, schema.names))
    )
    try:
        with connect(config) as conn:
            if key not in _ensured:
                _ensure_table(conn, destination, schema)
            with conn.cursor() as cur, cur.copy(copy) as writer:
                writer.write(payload.getbuffer())
    except psycopg.Error:
        with _ensured_lock:
            _ensured.discard(key)  # the table may be gone: checked again at the next write
        raise
    with _ensured_lock:
        _ensured.add(key)
    return table.num_rows


def ensure_log_tables(store: FeatureStore) -> list[str]:
    """Every logged feature service's table, made (or given the columns its service gained) ahead of its
    first answer: `feast monitor run --source-type log` then finds an empty table, not a missing one."""
    from feast.feature_logging import FeatureServiceLoggingSource

    made = []
    with connect(store.config.offline_store) as conn:
        for service in store.list_feature_services():
            config = service.logging_config
            if config is None or not isinstance(config.destination, PostgreSQLLoggingDestination):
                continue
            schema = log_schema(
                FeatureServiceLoggingSource(service, store.project).get_schema(store.registry)
            )
            _ensure_table(conn, config.destination, schema)
            made.append(config.destination.table_name)
    return made


def _ensure_table(
    conn: psycopg.Connection, destination: PostgreSQLLoggingDestination, schema: pa.Schema
) -> None:
    """The table with every column of `schema`, and an index on the log timestamp (intake reads by it)."""
    table = destination.identifier
    columns = [sql.SQL("{} {}").format(sql.Identifier(f.name), sql.SQL(_pg_type(f.type))) for f in schema]
    with conn.transaction():
        # Two server processes starting at once would otherwise race on CREATE TABLE IF NOT EXISTS.
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (str(destination.identifier),))
        conn.execute(sql.SQL("CREATE TABLE IF NOT EXISTS {} ({})").format(table, sql.SQL(", ").join(columns)))
        for column in columns:
            conn.execute(sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS {}").format(table, column))
        conn.execute(
            sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} ({})").format(
                sql.Identifier(f"{destination.table_name}__log_timestamp_idx"),
                table,
                sql.Identifier(LOG_TIMESTAMP_FIELD),
            )
        )


def _pg_type(arrow_type: pa.DataType) -> Any:
    # Feast's own Arrow-to-Postgres names, but for the log date, which its map lacks.
    return "date" if pa.types.is_date32(arrow_type) else arrow_to_pg_type(str(arrow_type))
