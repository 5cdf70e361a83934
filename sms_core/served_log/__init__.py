"""What the prediction service answered, kept in Postgres through Feast's feature logging, and what is
judged on it.

Feast 0.67 declares a feature service's log (`LoggingConfig`, the logging schema) and profiles it
(`MonitoringService`), but has no Postgres destination and writes no log from Python. This package adds
what it lacks: the destination (`destination`), the offline store's write path (`offline_store`), the
rows in Feast's logging schema plus the answer (`rows`), the writer a server process runs (`writer`),
and the judgements on logged answers (`intake`, `skew`, `drift`, `quality`, `picture`), none of which
imports Dagster or FastAPI. Importing this package imports no Feast.
"""
