"""A feature service's log in a Postgres table: Feast's custom logging destination of kind
`postgres_destination`.

Feast finds a destination class by the kind stored in the registry, in classes registered as their
module is imported (`LoggingDestination`'s metaclass). So this module must be imported before any
registry read that turns a logged feature service into an object; otherwise Feast raises
`KeyError: 'postgres_destination'`. `sms_core.feast_config` imports it before building a store, and
feature_store.yaml names `offline_store`'s class, whose module imports this one, so the `feast` CLI
does too.
"""

from __future__ import annotations

from feast.feature_logging import LOG_TIMESTAMP_FIELD, LoggingDestination
from feast.infra.offline_stores.contrib.postgres_offline_store.postgres_source import PostgreSQLSource
from feast.protos.feast.core.FeatureService_pb2 import LoggingConfig as LoggingConfigProto
from psycopg import sql

KIND = "postgres_destination"


class PostgreSQLLoggingDestination(LoggingDestination):
    """The logs of one feature service, in one table of the offline store's database."""

    _proto_kind = KIND

    def __init__(self, *, table_name: str, db_schema: str | None = None):
        if not table_name:
            raise ValueError("a Postgres logging destination needs a table name")
        self.table_name = table_name
        self.db_schema = db_schema or None

    @property
    def identifier(self) -> sql.Identifier:
        """The table, schema-qualified when a schema is named, for the project's own SQL."""
        names = (self.db_schema, self.table_name) if self.db_schema else (self.table_name,)
        return sql.Identifier(*names)

    @classmethod
    def from_proto(cls, config_proto: LoggingConfigProto) -> PostgreSQLLoggingDestination:
        config = config_proto.custom_destination.config
        return cls(table_name=config["table_name"], db_schema=config.get("db_schema") or None)

    def to_proto(self) -> LoggingConfigProto:
        config = {"table_name": self.table_name, **({"db_schema": self.db_schema} if self.db_schema else {})}
        return LoggingConfigProto(
            custom_destination=LoggingConfigProto.CustomDestination(kind=KIND, config=config)
        )

    def to_data_source(self) -> PostgreSQLSource:
        # What Feast's monitoring reads the log through (`feast monitor run --source-type log`): the
        # Postgres offline store accepts only a PostgreSQLSource, and windows it on the log timestamp.
        quoted = ".".join(f'"{name}"' for name in (self.db_schema, self.table_name) if name)
        return PostgreSQLSource(
            name=f"{self.table_name}_source", table=quoted, timestamp_field=LOG_TIMESTAMP_FIELD
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PostgreSQLLoggingDestination) and (self.table_name, self.db_schema) == (
            other.table_name,
            other.db_schema,
        )

    def __hash__(self) -> int:
        return hash((self.table_name, self.db_schema))

    def __repr__(self) -> str:
        return f"PostgreSQLLoggingDestination(table_name={self.table_name!r}, db_schema={self.db_schema!r})"
