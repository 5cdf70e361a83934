"""`sms-assets`: run the whole graph, predict, serve predictions, replay arrivals, manage the services."""

from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Sequence

from sms_assets import services

MATERIALIZE_ALL = ["dagster", "asset", "materialize", "--select", "*", "-m", "sms_assets"]
DEFAULT_MESSAGE_ID = 42


def _service_env() -> dict[str, str]:
    """The environment every child process gets: service URLs resolved, a persistent DAGSTER_HOME."""
    env = dict(os.environ)
    env[services.POSTGRES_ENV] = services.postgres_url()
    env[services.REDIS_ENV] = services.redis_url()
    services.check_postgres(env[services.POSTGRES_ENV])
    services.check_redis(env[services.REDIS_ENV])
    if not env.get("DAGSTER_HOME"):
        # Runs launched here then show up in `sms-assets dev` (the Dagster UI) too.
        home = services.state_dir() / "dagster_home"
        home.mkdir(exist_ok=True)
        env["DAGSTER_HOME"] = str(home)
    return env


def _bin(name: str) -> str:
    """A console script installed beside this interpreter (the project's virtualenv)."""
    candidate = os.path.join(os.path.dirname(sys.executable), name)
    return candidate if os.path.exists(candidate) else name


def cmd_run(args: argparse.Namespace) -> int:
    from sms_assets.ingestion import DatasetError
    from sms_assets.resources import DatasetResource

    env = _service_env()
    try:
        # Resolved before Dagster starts, so a missing dataset is one clear line, not a step traceback.
        print(f"dataset: {DatasetResource().fetch()}", flush=True)
    except DatasetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    command = [_bin(MATERIALIZE_ALL[0]), *MATERIALIZE_ALL[1:]]
    print(f"$ {shlex.join(MATERIALIZE_ALL)}", flush=True)
    if subprocess.run(command, env=env, check=False).returncode != 0:
        print("error: materialization failed; the step error is printed above", file=sys.stderr)
        return 1
    os.environ.update(env)
    return cmd_predict(argparse.Namespace(message_id=[args.message_id]))


def cmd_predict(args: argparse.Namespace) -> int:
    from sms_assets.model_store import NoModelError
    from sms_assets.resources import (
        FeastResource,
        ModelStoreResource,
        PostgresResource,
        RedisResource,
    )
    from sms_assets.serving import UnknownMessageError, predict_ids

    feast = FeastResource(postgres=PostgresResource(), redis=RedisResource())
    try:
        model = ModelStoreResource().model_store().load()
        predictions = predict_ids(feast.store(), model, args.message_id)
    except (UnknownMessageError, NoModelError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for p in predictions:
        features = " ".join(f"{name}={value:g}" for name, value in p.features.items())
        print(
            f"message {p.message_id}: {p.label} (p(spam)={p.spam_probability:.3f}, "
            f"model {p.model_version}, features from Redis via sms_service: {features})"
        )
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from sms_assets.api import ServiceConfig, create_app
    from sms_assets.resources import FeastResource, ModelStoreResource, PostgresResource, RedisResource

    feast = FeastResource(postgres=PostgresResource(), redis=RedisResource())
    config = ServiceConfig(
        postgres_url=services.postgres_url(),
        redis_url=services.redis_url(),
        project=feast.resolved_project(),
        model_root=ModelStoreResource().model_store().root,
        model_poll_s=args.model_poll,
    )
    print(
        f"serving on http://{args.host}:{args.port} (Postgres {services.redact(config.postgres_url)}, "
        f"Redis {services.redact(config.redis_url)}, Feast project {config.project}, "
        f"models in {config.model_root})",
        flush=True,
    )
    uvicorn.run(
        create_app(config), host=args.host, port=args.port, access_log=args.access_log, log_level="info"
    )
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    from sms_assets import simulate
    from sms_assets.resources import HOLDBACK_ENV, DatasetResource, LandingResource

    configured = int(os.environ.get(HOLDBACK_ENV) or 0)
    holdback = args.holdback or configured or simulate.DEFAULT_HOLDBACK
    if holdback > configured:
        print(
            f"note: the initial load holds back {configured} messages ({HOLDBACK_ENV}), so "
            f"{holdback - configured} of the {holdback} replayed texts are also in it; they arrive "
            "as new messages, with new ids",
            file=sys.stderr,
        )
    folder = LandingResource().folder()
    messages = simulate.held_back(DatasetResource().fetch(), holdback)
    stream = simulate.ArrivalStream(folder, messages, args.batches, args.label_delay, args.prefix)
    print(
        f"replaying the last {holdback} messages of the dataset into {folder.root}: "
        f"{len(stream.slices)} batches, one every {args.interval:g} s, labels {args.label_delay} "
        "batch(es) later",
        flush=True,
    )
    readable = None
    if args.measure:
        os.environ.update(_service_env())
        readable = _served_from_redis()
    delays = simulate.replay(stream, args.interval, readable, timeout_s=args.timeout)
    if delays:
        print(simulate.summary(delays))
    if stream.landed:
        print(f"score one: sms-assets predict --message-id {stream.landed[-1].message_ids[-1]}")
    return 0


def _served_from_redis():
    """A check that every given message_id has its features in Redis, read through sms_service."""
    from sms_assets.resources import FeastResource, PostgresResource, RedisResource
    from sms_assets.serving import UnknownMessageError, online_features

    store = FeastResource(postgres=PostgresResource(), redis=RedisResource()).store()

    def readable(message_ids: Sequence[int]) -> bool:
        try:
            online_features(store, message_ids)
        except UnknownMessageError:
            return False
        return True

    return readable


def _duration(text: str) -> float:
    """Seconds from `5`, `5s`, `500ms` or `2m`."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m)?", text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration such as 5s, 500ms or 2m")
    value, unit = float(match.group(1)), match.group(2) or "s"
    return value * {"ms": 0.001, "s": 1.0, "m": 60.0}[unit]


def cmd_dev(args: argparse.Namespace) -> int:
    env = _service_env()
    command = [_bin("dagster"), "dev", "-w", str(services.PROJECT_ROOT / "workspace.yaml")]
    command += ["--port", str(args.port)]
    print(f"$ dagster {shlex.join(command[1:])}", flush=True)
    return subprocess.run(command, env=env, check=False).returncode


def cmd_services(args: argparse.Namespace) -> int:
    if args.action == "down":
        for stopped in services.stop_embedded() or ["nothing: no embedded server was running"]:
            print(f"stopped {stopped}")
        return 0
    env = _service_env()
    for name in (services.POSTGRES_ENV, services.REDIS_ENV, "DAGSTER_HOME"):
        if args.action == "env":
            print(f"export {name}={shlex.quote(env[name])}")
        else:
            print(f"{name}: {services.redact(env[name])}")
    return 0


def cmd_feast_env(args: argparse.Namespace) -> int:
    from sms_assets.feast_store import feast_env
    from sms_assets.resources import DEFAULT_FEAST_PROJECT

    env = _service_env()
    project = env.get("SMS_FEAST_PROJECT") or DEFAULT_FEAST_PROJECT
    values = feast_env(env[services.POSTGRES_ENV], env[services.REDIS_ENV], project)
    for name, value in values.items():
        print(f"export {name}={shlex.quote(value)}")
    return 0


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
    serve.add_argument(
        "--model-poll", type=float, default=1.0, help="seconds between checks for a newly served model"
    )
    serve.add_argument("--access-log", action="store_true", help="log every request (off: lean hot path)")
    serve.set_defaults(handler=cmd_serve)
    sim = commands.add_parser(
        "simulate", help="replay the held-back end of the dataset into the landing folder, as arrivals"
    )
    sim.add_argument("--batches", type=int, default=10, help="how many message batches (default 10)")
    sim.add_argument("--interval", type=_duration, default=5.0, help="between batches (default 5s)")
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
    sim.add_argument("--timeout", type=_duration, default=600.0, help="for --measure (default 10m)")
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except services.ServiceUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
