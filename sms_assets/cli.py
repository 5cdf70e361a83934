"""`sms-assets`: run the whole graph, predict, serve predictions, replay arrivals or traffic, manage the
services."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sms_assets import arrivals_worker, launch, local_instance, model_cli, processes, simulate_cli, traffic
from sms_core import settings, urls

DEFAULT_MESSAGE_ID = 42


def _service_env() -> dict[str, str]:
    """The environment every child process gets: each setting resolved (embedded servers started for
    unset URLs) and checked, and a persistent DAGSTER_HOME."""
    env = {**os.environ, **settings.resolve()}
    urls.check_postgres(env[settings.POSTGRES_ENV])
    urls.check_redis(env[settings.REDIS_ENV])
    env["DAGSTER_HOME"] = str(local_instance.home(env))
    return env


def _resources(env: dict[str, str]) -> dict[str, Any]:
    """The resources, given the values `env` holds (this process's own environment stays as it is)."""
    from sms_assets.defs.resources import project_resources

    return project_resources(settings.load(env))


def _model_resources() -> dict[str, Any]:
    env = _service_env()
    os.environ["DAGSTER_HOME"] = env["DAGSTER_HOME"]  # the instance `model` records its moves in
    return _resources(env)


def _bin(name: str) -> str:
    """A console script installed beside this interpreter (the project's virtualenv)."""
    candidate = os.path.join(os.path.dirname(sys.executable), name)
    return candidate if os.path.exists(candidate) else name


def cmd_run(args: argparse.Namespace) -> int:
    from sms_assets import queued
    from sms_assets.defs.ingestion.dataset import DatasetError

    env = _service_env()
    try:
        # Resolved before Dagster starts, so a missing dataset is one clear line, not a step traceback.
        print(f"dataset: {_resources(env)['dataset'].fetch()}", flush=True)
    except DatasetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    home = Path(env["DAGSTER_HOME"])
    log = Path(env[settings.STATE_ENV]) / "logs" / f"run-{launch.stamp()}.log"
    outcome = queued.whole_graph(env, home, log, _bin, _say)
    print(f"\n{launch.summary(outcome)}\n", flush=True)
    if outcome.interrupted or (outcome.status == "CANCELED" and not outcome.errors):
        print(
            f"error: run {outcome.run_id} was interrupted before it finished; what its finished steps wrote "
            f"stands, and the next run takes up the rest (its output: {log})",
            file=sys.stderr,
        )
        return 130
    if outcome.status != "SUCCESS":
        for line in outcome.errors or [f"the run is {outcome.status.lower()}; its output is in {log}"]:
            print(f"error: {line}", file=sys.stderr)
        return 1
    return _predict(env, [args.message_id])


def _say(line: str) -> None:
    print(line, flush=True)


def cmd_predict(args: argparse.Namespace) -> int:
    return _predict(_service_env(), args.message_id)


def _predict(env: dict[str, str], message_ids: list[int]) -> int:
    from sms_core.model.store import ModelStoreError
    from sms_core.prediction import UnknownMessageError, predict_ids, served_through

    resources = _resources(env)
    try:
        # Loaded (and its sha256 checked) before the feature store is built.
        model = resources["model_store"].model_store().load()
        store = resources["feast"].store()
        service = store.get_feature_service(served_through(model)[0])
        predictions = predict_ids(store, model, message_ids, service)
    except (UnknownMessageError, ModelStoreError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for p in predictions:
        features = " ".join(
            f"{name}={value:g}" if not isinstance(value, str) else f"{name}={value!r}"
            for name, value in p.features.items()
        )
        print(
            f"message {p.message_id}: {p.label} (p(spam)={p.spam_probability:.3f}, "
            f"model {p.model_version}, features from Redis via {service.name}: {features})"
        )
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from sms_api import server

    server.run(args.host, args.port, access_log=args.access_log)
    return 0


def cmd_dev(args: argparse.Namespace) -> int:
    env = _service_env()
    command = [_bin("dagster"), "dev", "-w", str(settings.PROJECT_ROOT / "workspace.yaml")]
    command += ["--port", str(args.port)]
    home = Path(env["DAGSTER_HOME"])
    with local_instance.holding(home, "dev") as lock:
        local_instance.set_pool_limits(home)
        print(f"$ dagster {shlex.join(command[1:])}", flush=True)
        # dagster dev holds the lock too, so a second dev is refused for as long as either lives. The
        # arrivals worker beside it carries each landed batch to Redis within seconds.
        worker = [] if args.without_arrivals_worker else [[_bin("sms-assets"), "arrivals"]]
        return processes.run_in_own_group(command, env, pass_fds=(lock,), beside=worker)


def cmd_daemon(args: argparse.Namespace) -> int:
    home = os.environ.get("DAGSTER_HOME")
    if not home:
        print("error: DAGSTER_HOME is not set: the daemon needs the instance it runs on", file=sys.stderr)
        return 1
    # The run queue lets a pool it has not seen before pass its first round's runs together: every
    # pool's limit is in place before the daemon's first round.
    local_instance.set_pool_limits(Path(home))
    command = [_bin("dagster-daemon"), "run", "-w", args.workspace]
    print(f"$ dagster-daemon {shlex.join(command[2:])}", flush=True)
    os.execv(command[0], command)  # the daemon takes this process's place, and its signals


def cmd_services(args: argparse.Namespace) -> int:
    if args.action == "down":
        from sms_core import embedded

        stopped_servers = embedded.stop(settings.load().state())
        for stopped in stopped_servers or ["nothing: no embedded server was running"]:
            print(f"stopped {stopped}")
        return 0
    env = _service_env()
    for name in (*settings.resolve(), "DAGSTER_HOME"):
        if args.action == "env":
            print(f"export {name}={shlex.quote(env[name])}")
        else:
            print(f"{name}: {urls.redact(env[name]) if name.endswith('_URL') else env[name]}")
    return 0


def cmd_feast_env(args: argparse.Namespace) -> int:
    from sms_core.feast_config import feast_env

    env = _service_env()
    values = feast_env(env[settings.POSTGRES_ENV], env[settings.REDIS_ENV], env[settings.PROJECT_ENV])
    for name, value in values.items():
        print(f"export {name}={shlex.quote(value)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    # Every flag's help ends with its default, written by argparse itself.
    shown = argparse.ArgumentDefaultsHelpFormatter
    parser = argparse.ArgumentParser(prog="sms-assets", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    def command(name: str, summary: str) -> argparse.ArgumentParser:
        return commands.add_parser(name, help=summary, description=summary, formatter_class=shown)

    run = command("run", "Materialize the whole asset graph with `dg launch`, then predict one message.")
    run.add_argument("--message-id", type=int, default=DEFAULT_MESSAGE_ID, help="the message to predict")
    run.set_defaults(handler=cmd_run)

    predict = command("predict", "Score known messages with the served model, features read from Redis.")
    predict.add_argument(
        "--message-id", type=int, action="append", required=True, help="a message id; repeat for more"
    )
    predict.set_defaults(handler=cmd_predict)

    serve = command(
        "serve",
        "The prediction HTTP API (POST /predict, /predict/batch; GET /health, /ready, /docs), "
        f"with {settings.API_WORKERS_ENV} worker processes.",
    )
    serve.add_argument("--host", default="127.0.0.1", help="the address to listen on")
    serve.add_argument("--port", type=int, default=8000, help="the port to listen on")
    serve.add_argument(
        "--access-log", action="store_true", help="log every request (off keeps the hot path lean)"
    )
    serve.set_defaults(handler=cmd_serve)

    simulate_cli.add_command(command, _service_env, _resources)
    arrivals_worker.add_command(command, _service_env)

    dev = command(
        "dev", "The Dagster UI, daemon and code server on this project (sensors and schedules run)."
    )
    dev.add_argument("--port", type=int, default=3000, help="the UI's port")
    dev.add_argument(
        "--without-arrivals-worker",
        action="store_true",
        help="leave the landing folder to arrivals_sensor: a queued run, in a new process, per tick",
    )
    dev.set_defaults(handler=cmd_dev)

    daemon = command(
        "daemon",
        "Dagster's daemon on the instance at DAGSTER_HOME (the compose stack's), once every concurrency "
        "pool has its limit.",
    )
    daemon.add_argument("-w", "--workspace", required=True, help="the workspace file the daemon loads")
    daemon.set_defaults(handler=cmd_daemon)

    svc = command("services", "The Postgres and Redis this project uses (embedded ones start when unset).")
    svc.add_argument(
        "action",
        choices=["status", "env", "down"],
        help="status: show the settings; env: print them as exports; down: stop the embedded servers",
    )
    svc.set_defaults(handler=cmd_services)

    feast_env = command(
        "feast-env", "Print the variables feature_repo/feature_store.yaml needs, for the `feast` CLI."
    )
    feast_env.set_defaults(handler=cmd_feast_env)
    model_cli.add_commands(commands, _model_resources)
    traffic.add_command(
        command,
        lambda: _resources(_service_env())["dataset"].fetch(),
        lambda: settings.load().dataset_holdback,
        lambda: settings.load().token,
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except (urls.ServiceUnavailable, urls.BadUrl, settings.BadSetting, local_instance.InstanceBusy) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
