"""The bounds on every wait for Postgres: libpq parameters that each connection of the project carries
(its own, `/ready`'s, Feast's SQL registry's, Dagster's storage in the compose stack), unless its URL's
query names them itself. docs/configuration.md states them; `watchdog.py` covers what they cannot
see."""

from __future__ import annotations

CONNECT_TIMEOUT_S = 5
# A statement runs at most this long (the server cancels it): a
# training set at a million messages is one statement of about a minute. A peer that vanished from the
# network (host down, link cut) is noticed by the kernel: keepalive probes after KEEPALIVES_IDLE_S of
# silence, every KEEPALIVES_INTERVAL_S, KEEPALIVES_COUNT unanswered ones, or data unacknowledged for
# TCP_USER_TIMEOUT_MS. A server that still holds the connection open but answers nothing (stopped,
# wedged, behind a proxy that forwards nothing) is noticed by `watchdog.py`, on the project's own
# connections.
STATEMENT_TIMEOUT_S = 600
KEEPALIVES_IDLE_S = 10
KEEPALIVES_INTERVAL_S = 5
KEEPALIVES_COUNT = 3
TCP_USER_TIMEOUT_MS = 30_000


def bounded_params() -> dict[str, str]:
    """The libpq parameters that bound every wait on Postgres: connect and statement timeouts, TCP
    keepalives and the TCP user timeout. A URL's own query parameters (`?options=...`,
    `?keepalives_idle=...`) take their place."""
    return {
        "connect_timeout": str(CONNECT_TIMEOUT_S),
        "keepalives": "1",
        "keepalives_idle": str(KEEPALIVES_IDLE_S),
        "keepalives_interval": str(KEEPALIVES_INTERVAL_S),
        "keepalives_count": str(KEEPALIVES_COUNT),
        "tcp_user_timeout": str(TCP_USER_TIMEOUT_MS),
        "options": f"-c statement_timeout={STATEMENT_TIMEOUT_S}s",
    }
