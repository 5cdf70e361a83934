"""`sms-assets`: run the whole graph, predict, serve predictions, replay arrivals or traffic, manage the
services."""

from __future__ import annotations

import argparse
import functools
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sms_assets import launch, local_instance, model_cli, processes, traffic
from sms_core import settings, urls

DEFAULT_MESSAGE_ID = 42


def _service_env() -> dict[str, str]:
    """The environment this command and every child process share: each setting resolved (embedded
    servers started for unset URLs) and checked, and a persistent DAGSTER_HOME."""
    env = {**os.environ, **settings.resolve()}
    urls.check_postgres(env[settings.POSTGRES_ENV])
    urls.check_redis(env[settings.REDIS_ENV])
    env["DAGSTER_HOME"] = str(local_instance.home(env))
    os.environ.update(env)  # the resources below, and the Dagster instance, read the same values
    return env


def _resources() -> dict[str, Any]:
    from sms_assets.defs.resources import project_resources

    return project_resources()


def _model_resources() -> dict[str, Any]:
    _service_env()  # the instance `model` records its moves in, too
    return _resources()


def _bin(name: str) -> str:
    """A console script installed beside this interpreter (the project's virtualenv)."""
    candidate = os.path.join(os.path.dirname(sys.executable), name)
    return candidate if os.path.exists(candidate) else name


def cmd_run(args: argparse.Namespace) -> int:
    from sms_assets.defs.ingestion.dataset import DatasetError

    env = _service_env()
    try:
        # Resolved before Dagster starts, so a missing dataset is one clear line, not a step traceback.
        print(f"dataset: {_resources()['dataset'].fetch()}", flush=True)
    except DatasetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    home = Path(env["DAGSTER_HOME"])
    local_instance.refuse_if_pools_held(home)
    log = Path(env[settings.STATE_ENV]) / "logs" / f"run-{launch.stamp()}.log"
    print(f"$ {shlex.join(launch.LAUNCH)}   (its output: {log})", flush=True)
    outcome = launch.launch(env, home, log, _bin("dg"), say=lambda line: print(line, flush=True))
    print(f"\n{launch.summary(outcome)}\n", flush=True)
    if outcome.status != "SUCCESS":
        for line in outcome.errors or [f"the run is {outcome.status.lower()}; its output is in {log}"]:
            print(f"error: {line}", file=sys.stderr)
        return 1
    return _predict(env, [args.message_id])


def cmd_predict(args: argparse.Namespace) -> int:
    return _predict(_service_env(), args.message_id)


def _predict(env: dict[str, str], message_ids: list[int]) -> int:
    from sms_core.model.store import ModelStoreError
    from sms_core.prediction import UnknownMessageError, predict_ids, served_through

    resources = _resources()
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


def cmd_simulate(args: argparse.Namespace) -> int:
    from sms_assets.defs.ingestion import simulate
    from sms_core.prediction import all_online

    env = _service_env()
    resources = _resources()
    configured = int(env[settings.HOLDBACK_ENV])
    holdback = args.holdback or configured or simulate.DEFAULT_HOLDBACK
    if holdback > configured:
        print(
            f"note: the initial load holds back {configured} messages ({settings.HOLDBACK_ENV}), so "
            f"{holdback - configured} of the {holdback} replayed texts are also in it; they arrive "
            "as new messages, with new ids",
            file=sys.stderr,
        )
    folder = resources["landing"].folder()
    messages = simulate.held_back(resources["dataset"].fetch(), holdback)
    stream = simulate.ArrivalStream(folder, messages, args.batches, args.label_delay, args.prefix)
    print(
        f"replaying the last {holdback} messages of the dataset into {folder.root}: "
        f"{len(stream.slices)} batches, one every {args.interval:g} s, labels {args.label_delay} "
        "batch(es) later",
        flush=True,
    )
    # --measure: each batch is timed until Redis serves every one of its messages.
    store = resources["feast"].store() if args.measure else None
    readable = functools.partial(all_online, store) if store else None
    delays = simulate.replay(stream, args.interval, readable, timeout_s=args.timeout)
    if delays:
        print(simulate.summary(delays))
    if stream.landed:
        print(f"score one: sms-assets predict --message-id {stream.landed[-1].message_ids[-1]}")
    return 0


def cmd_dev(args: argparse.Namespace) -> int:
    env = _service_env()
    command = [_bin("dagster"), "dev", "-w", str(settings.PROJECT_ROOT / "workspace.yaml")]
    command += ["--port", str(args.port)]
    home = Path(env["DAGSTER_HOME"])
    with local_instance.one_dev(home) as lock:
        local_instance.set_pool_limits(home)
        print(f"$ dagster {shlex.join(command[1:])}", flush=True)
        # dagster dev holds the lock too, so a second dev is refused for as long as either lives.
        return processes.run_in_own_group(command, env, pass_fds=(lock,))


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


def simulate_duration(text: str) -> float:
    from sms_assets.defs.ingestion.simulate import parse_duration

    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sms-assets", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="materialize the whole asset graph, then predict")
    run.add_argument("--message-id", type=int, default=DEFAULT_MESSAGE_ID)
    run.set_defaults(handler=cmd_run)

    predict = commands.add_parser("predict", help="score known messages from the online store")
    predict.add_argument("--message-id", type=int, action="append", required=True)
    predict.set_defaults(handler=cmd_predict)

    serve = commands.add_parser("serve", help="the prediction HTTP API (POST /predict, GET /ready)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--access-log", action="store_true", help="log every request (off: lean hot path)")
    serve.set_defaults(handler=cmd_serve)
    sim = commands.add_parser(
        "simulate", help="replay the held-back end of the dataset into the landing folder, as arrivals"
    )
    sim.add_argument("--batches", type=int, default=10, help="how many message batches (default 10)")
    sim.add_argument("--interval", type=simulate_duration, default=5.0, help="between batches (default 5s)")
    sim.add_argument(
        "--holdback", type=int, default=None, help="messages to replay (SMS_DATASET_HOLDBACK, else 500)"
    )
    sim.add_argument("--label-delay", type=int, default=1, help="batches before labels follow (default 1)")
    sim.add_argument(
        "--prefix", default="uci", help="sms_id prefix; a new one sends the texts again as new messages"
    )
    sim.add_argument(
        "--measure", action="store_true", help="time each batch from landing until Redis serves all of it"
    )
    sim.add_argument("--timeout", type=simulate_duration, default=600.0, help="for --measure (default 10m)")
    sim.set_defaults(handler=cmd_simulate)

    dev = commands.add_parser("dev", help="start the Dagster UI and daemon on this project")
    dev.add_argument("--port", type=int, default=3000)
    dev.set_defaults(handler=cmd_dev)

    svc = commands.add_parser("services", help="the Postgres and Redis this project uses")
    svc.add_argument("action", choices=["status", "env", "down"])
    svc.set_defaults(handler=cmd_services)

    feast_env = commands.add_parser(
        "feast-env", help="print the variables feature_repo/feature_store.yaml needs (for `feast`)"
    )
    feast_env.set_defaults(handler=cmd_feast_env)
    model_cli.add_commands(commands, _model_resources)
    traffic.add_command(
        commands, lambda: _resources()["dataset"].fetch(), lambda: settings.load().dataset_holdback
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
