"""What the prediction service answered, kept in Postgres through Feast's feature logging, and what is
judged on it.

Feast 0.67 declares a feature service's log (`LoggingConfig`, the logging schema) and profiles it
(`MonitoringService`), but has no Postgres destination and writes no log from Python. This package adds
what it lacks: the destination (`destination`), the offline store's write path (`offline_store`), the
log's columns (`columns`) and rows (`rows`), the writer a server process runs (`writer`), the intake of
every log into one table of answers (`intake`), and the judgements on them (`skew`, `drift` with its
`picture`, `quality`). None imports Dagster or FastAPI; importing this package imports no Feast.
"""
