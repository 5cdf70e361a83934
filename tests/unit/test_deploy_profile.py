"""The Kubernetes profile (deploy/k8s/), checked without a cluster: its files pass the config schemas of
Dagster and dagster-k8s themselves, a wrong key or type is refused, it agrees with the compose stack and
the image, and SMS_EXECUTOR=k8s makes the code location run its steps as Kubernetes Jobs.

The run launcher is built the way the daemon builds it, from the instance config, inside what looks to the
Kubernetes client like a pod (a service-account token and CA file); nothing talks to a cluster. The fast
tests read the config through InstanceRef, Dagster's own reader, which is not exported: DagsterInstance
would open the storage first (the integration test does, on a real Postgres).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import dagster as dg
import kubernetes.config.incluster_config
import pytest
import yaml
from dagster._core.instance.ref import InstanceRef
from dagster_k8s import K8sRunLauncher, construct_dagster_k8s_job
from dagster_k8s.container_context import K8sContainerContext

from sms_assets.defs.executor import executor_from_settings
from sms_core import settings
from tests.conftest import PROJECT_ROOT
from tests.unit.test_compose import dockerfile_env, dockerfile_instructions, env_references
from tests.unit.test_concurrency import concurrency_section

PROFILE = PROJECT_ROOT / "deploy" / "k8s"
INSTANCE_YAML = PROFILE / "dagster.yaml"
RUN_CONFIG_YAML = PROFILE / "run_config.yaml"
# What the code location and its runs read (sms_core/settings.py), and the compose stack's storage URL.
PROJECT_SETTINGS = set(settings.NAMES)
STORAGE_ENV = "DAGSTER_POSTGRES_URL"
FAKE_DAGSTER_POSTGRES_URL = "postgresql+psycopg2://dagster@postgres.invalid:5432/dagster"


def instance_config() -> dict[str, Any]:
    return yaml.safe_load(INSTANCE_YAML.read_text())


def launcher_config() -> dict[str, Any]:
    return instance_config()["run_launcher"]["config"]


def run_config() -> dict[str, Any]:
    return yaml.safe_load(RUN_CONFIG_YAML.read_text())


def instance_home(tmp_path: Path, text: str) -> Path:
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(text)
    return home


@pytest.fixture
def in_a_pod(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What the Kubernetes client reads in a pod: the API server's address and the service-account files.
    The address is never dialled: building a launcher only loads the client's configuration."""
    account = tmp_path / "serviceaccount"
    account.mkdir()
    (account / "token").write_text("service-account-token")
    (account / "ca.crt").write_text("-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n")
    monkeypatch.setattr(kubernetes.config.incluster_config, "SERVICE_TOKEN_FILENAME", str(account / "token"))
    monkeypatch.setattr(kubernetes.config.incluster_config, "SERVICE_CERT_FILENAME", str(account / "ca.crt"))
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "6443")


def run_launcher(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str) -> K8sRunLauncher:
    """The run launcher as the daemon builds it: dagster.yaml read and checked by Dagster, the launcher's
    section checked against K8sRunLauncher.config_type() and passed to its constructor. Storage is not
    opened: the instance builds it lazily, and building the launcher does not need it."""
    monkeypatch.setenv(STORAGE_ENV, FAKE_DAGSTER_POSTGRES_URL)
    ref = InstanceRef.from_dir(str(instance_home(tmp_path, text)))
    assert ref.run_launcher_data is not None
    return ref.run_launcher_data.rehydrate(as_type=K8sRunLauncher)


# ---------------------------------------------------------------------------------------------------------
# The instance config, through Dagster's and dagster-k8s' own schemas


def test_the_instance_config_passes_dagsters_schema_with_a_queue_and_the_k8s_launcher(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(STORAGE_ENV, FAKE_DAGSTER_POSTGRES_URL)
    ref = InstanceRef.from_dir(str(instance_home(tmp_path, INSTANCE_YAML.read_text())))
    assert ref.run_coordinator_data is not None and ref.run_launcher_data is not None
    assert (ref.run_coordinator_data.module_name, ref.run_coordinator_data.class_name) == (
        "dagster",
        "QueuedRunCoordinator",
    )
    assert (ref.run_launcher_data.module_name, ref.run_launcher_data.class_name) == (
        "dagster_k8s",
        "K8sRunLauncher",
    )
    # dagster-postgres for runs, events and schedules, from the URL docker-compose.yml names too.
    storages = [ref.run_storage_data, ref.event_storage_data, ref.schedule_storage_data]
    assert [data and data.class_name for data in storages] == [
        "PostgresRunStorage",
        "PostgresEventLogStorage",
        "PostgresScheduleStorage",
    ]
    assert ref.storage_data is not None
    assert ref.storage_data.config_dict["postgres_url"] == {"env": STORAGE_ENV}


def test_the_run_launcher_is_built_from_it_as_the_daemon_builds_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, in_a_pod: None
) -> None:
    launcher = run_launcher(tmp_path, monkeypatch, INSTANCE_YAML.read_text())
    config = launcher_config()
    assert launcher.job_namespace == config["job_namespace"]
    assert launcher.service_account_name == config["service_account_name"]
    assert launcher.env_secrets == config["env_secrets"]
    assert launcher.instance_config_map == config["instance_config_map"]
    assert launcher.load_incluster_config is True


def test_a_run_pod_gets_the_image_secret_settings_volume_and_size_the_profile_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, in_a_pod: None
) -> None:
    """The Kubernetes Job the launcher would create for a run, built by dagster-k8s' own functions."""
    launcher = run_launcher(tmp_path, monkeypatch, INSTANCE_YAML.read_text())
    run = dg.DagsterRun(job_name="__ASSET_JOB", run_id="0123456789abcdef")
    context = K8sContainerContext.create_for_run(run, launcher, include_run_tags=True)
    job = construct_dagster_k8s_job(
        job_config=context.get_k8s_job_config(job_image=None, run_launcher=launcher),
        args=["dagster", "api", "execute_run"],
        job_name="dagster-run-0123456789abcdef",
        component="run_worker",
        user_defined_k8s_config=context.run_k8s_config,
    )
    manifest = job.to_dict()
    pod = manifest["spec"]["template"]["spec"]
    [container] = pod["containers"]
    config = launcher_config()

    assert container["image"] == config["job_image"]
    assert pod["service_account_name"] == config["service_account_name"]
    assert [source["secret_ref"]["name"] for source in container["env_from"] or []] == config["env_secrets"]
    env = {item["name"]: item["value"] for item in container["env"]}
    assert env[settings.EXECUTOR_ENV] == "k8s"
    assert env["DAGSTER_HOME"] == config["dagster_home"]
    # The run pod gets the instance in its arguments, not from the ConfigMap; the claim it mounts.
    [claim] = pod["volumes"]
    assert (
        claim["persistent_volume_claim"]["claim_name"]
        == config["volumes"][0]["persistentVolumeClaim"]["claimName"]
    )
    mounts = {mount["name"]: mount["mount_path"] for mount in container["volume_mounts"]}
    assert mounts[claim["name"]] == config["volume_mounts"][0]["mount_path"]
    assert {key: container["resources"][key] for key in ("requests", "limits")} == config["resources"]
    assert (
        pod["security_context"]["fs_group"]
        == config["run_k8s_config"]["pod_spec_config"]["security_context"]["fs_group"]
    )


@pytest.mark.parametrize(
    ("change", "named"),
    [
        # A misspelt key: dagster-k8s would otherwise ignore the Secret and start runs without the URLs.
        (lambda c: c.update(env_secret=c.pop("env_secrets")), "env_secret"),
        (lambda c: c.update(max_concurrent=4), "max_concurrent"),
        # Wrong types.
        (lambda c: c.update(env_secrets="sms-assets-stores"), "env_secrets"),
        (lambda c: c.update(load_incluster_config="yes"), "load_incluster_config"),
        # The one required key.
        (lambda c: c.pop("instance_config_map"), "instance_config_map"),
    ],
)
def test_a_wrong_key_or_type_in_the_launcher_config_is_refused_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, in_a_pod: None, change: Any, named: str
) -> None:
    document = instance_config()
    change(document["run_launcher"]["config"])
    with pytest.raises(dg.DagsterInvalidConfigError) as refused:
        run_launcher(tmp_path, monkeypatch, yaml.safe_dump(document))
    assert named in str(refused.value)


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (lambda d: d.update(run_launchr=d.pop("run_launcher")), "run_launchr"),
        (lambda d: d["concurrency"]["pools"].update(default_limt=1), "default_limt"),
        (lambda d: d["concurrency"]["pools"].update(granularity="runs"), "granularity"),
        (lambda d: d["telemetry"].update(enabled="no"), "telemetry:enabled"),
    ],
)
def test_a_wrong_key_or_type_in_the_instance_config_is_refused_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, change: Any, named: str
) -> None:
    document = instance_config()
    change(document)
    monkeypatch.setenv(STORAGE_ENV, FAKE_DAGSTER_POSTGRES_URL)
    with pytest.raises(dg.DagsterInvalidConfigError) as refused:
        InstanceRef.from_dir(str(instance_home(tmp_path, yaml.safe_dump(document))))
    assert named in str(refused.value)


def test_the_pools_are_the_compose_stacks() -> None:
    compose = concurrency_section((PROJECT_ROOT / "deploy" / "compose" / "dagster.yaml").read_text())
    assert concurrency_section(INSTANCE_YAML.read_text()) == compose


# ---------------------------------------------------------------------------------------------------------
# The executor's run config, through k8s_job_executor's own schema


def probe_job(executor: dg.ExecutorDefinition) -> dg.JobDefinition:
    @dg.op
    def step() -> None:
        pass

    @dg.job(executor_def=executor)
    def probe() -> None:
        step()

    return probe


def test_the_run_config_passes_the_k8s_executors_schema(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(settings.MAX_CONCURRENT_ENV, "4")  # run_config.yaml reads it through Dagster
    chosen = settings.load({settings.EXECUTOR_ENV: "k8s"})
    job = probe_job(executor_from_settings(chosen))
    resolved = dg.validate_run_config(job, run_config())["execution"]["k8s"]
    assert resolved["max_concurrent"] == 4
    # Each step pod gets 2 GiB, the size of the run pod, so a run the daemon starts without this run
    # config (automation, sensors, schedules) sizes its steps the same.
    resources = run_config()["execution"]["config"]["resources"]
    assert resolved["resources"] == resources == launcher_config()["resources"]
    assert resources["requests"]["memory"] == resources["limits"]["memory"] == "2Gi"
    assert {"cpu", "memory"} == set(resources["requests"]) == set(resources["limits"])


@pytest.mark.parametrize(
    ("execution", "named"),
    [
        ({"max_concurent": 2}, "max_concurent"),
        ({"max_concurrent": "two"}, "max_concurrent"),
        ({"resources": {"limit": {"memory": "2Gi"}}}, "limit"),
    ],
)
def test_a_wrong_key_or_type_in_the_run_config_is_refused_naming_it(
    execution: dict[str, Any], named: str
) -> None:
    job = probe_job(executor_from_settings(settings.load({settings.EXECUTOR_ENV: "k8s"})))
    with pytest.raises(dg.DagsterInvalidConfigError) as refused:
        dg.validate_run_config(job, {"execution": {"config": execution}})
    assert named in str(refused.value)


@pytest.mark.parametrize("kind", ["k8s", "multiprocess"])
def test_a_run_without_run_config_runs_at_most_sms_max_concurrent_steps(kind: str) -> None:
    executor = executor_from_settings(
        settings.load({settings.EXECUTOR_ENV: kind, settings.MAX_CONCURRENT_ENV: "3"})
    )
    assert executor.name == kind
    resolved = dg.validate_run_config(probe_job(executor), {})["execution"][kind]
    assert resolved["max_concurrent"] == 3


def test_in_process_runs_every_step_in_the_run_worker_and_still_checks_the_step_count() -> None:
    assert (
        executor_from_settings(settings.load({settings.EXECUTOR_ENV: "in_process"})) is dg.in_process_executor
    )
    with pytest.raises(settings.BadSetting, match=r"^SMS_MAX_CONCURRENT="):
        executor_from_settings(
            settings.load({settings.EXECUTOR_ENV: "in_process", settings.MAX_CONCURRENT_ENV: "0"})
        )


# ---------------------------------------------------------------------------------------------------------
# The names the profile uses agree with the project's


def test_every_variable_the_profile_names_is_a_setting_of_the_project_or_dagsters_storage_url() -> None:
    launcher = launcher_config()
    named = {item.split("=", 1)[0] for item in launcher["env_vars"]}
    assert named <= PROJECT_SETTINGS
    assert env_references(instance_config()) == {STORAGE_ENV}
    assert env_references(run_config()) == {settings.MAX_CONCURRENT_ENV}
    # The code location and its runs load the definitions with the k8s executor.
    assert f"{settings.EXECUTOR_ENV}=k8s" in launcher["env_vars"]
    assert settings.load(dict(item.split("=", 1) for item in launcher["env_vars"])).executor == "k8s"


def test_the_deployment_page_creates_the_secret_the_launcher_reads_with_the_settings_runs_need() -> None:
    """The Secret's keys are the store URLs the code reads and the storage URL dagster.yaml reads; the
    API's token is not among them (no run reads it)."""
    page = (PROJECT_ROOT / "docs" / "deployment.md").read_text()
    [secret] = launcher_config()["env_secrets"]
    lines = iter(page[page.index(f"create secret generic {secret}") :].splitlines())
    command = next(lines)
    while command.endswith("\\"):
        command = command[:-1] + next(lines)
    keys = {
        part.removeprefix("--from-literal=").split("=", 1)[0]
        for part in command.split()
        if part.startswith("--from-literal=")
    }
    assert keys == {settings.POSTGRES_ENV, settings.REDIS_ENV, STORAGE_ENV}


def test_the_claim_is_mounted_over_the_images_state_and_model_folders() -> None:
    image = dockerfile_env()
    [mount] = launcher_config()["volume_mounts"]
    for name in (settings.STATE_ENV, settings.MODEL_DIR_ENV):
        assert Path(image[name]).is_relative_to(mount["mount_path"]), name
    [user] = [args for keyword, args in dockerfile_instructions() if keyword == "USER"]
    group = int(user.split(":")[1])
    assert launcher_config()["run_k8s_config"]["pod_spec_config"]["security_context"]["fs_group"] == group


def test_the_image_has_dagster_k8s_pinned_with_the_dagster_family() -> None:
    project = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())
    [k8s] = project["project"]["optional-dependencies"]["k8s"]
    [postgres] = [d for d in project["project"]["dependencies"] if d.startswith("dagster-postgres==")]
    assert k8s.split("==")[1] == postgres.split("==")[1]
    syncs = [args for keyword, args in dockerfile_instructions() if keyword == "RUN" and "uv sync" in args]
    assert syncs and all("--extra k8s" in args for args in syncs)


# ---------------------------------------------------------------------------------------------------------
# SMS_EXECUTOR, as the code server and run pods load the definitions


def load_definitions(**environ: str) -> subprocess.CompletedProcess[str]:
    probe = (
        "import json; from sms_assets.definitions import defs; "
        "job = defs.resolve_implicit_global_asset_job_def(); "
        "print(json.dumps([job.executor_def.name, type(job.executor_def).__module__]))"
    )
    env = {name: value for name, value in os.environ.items() if not name.startswith("SMS_")}
    return subprocess.run(
        [sys.executable, "-c", probe],
        cwd=PROJECT_ROOT,
        env={**env, **environ},
        capture_output=True,
        text=True,
        check=False,
    )


def test_sms_executor_k8s_makes_the_definitions_load_with_the_k8s_job_executor() -> None:
    result = load_definitions(SMS_EXECUTOR="k8s", SMS_MAX_CONCURRENT="4")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1])[0] == "k8s"


def test_a_bad_sms_executor_stops_the_definitions_loading_naming_the_variable() -> None:
    result = load_definitions(SMS_EXECUTOR="kubernetes")
    assert result.returncode != 0
    [line] = result.stderr.strip().splitlines()
    assert line == "error: SMS_EXECUTOR='kubernetes': Input should be 'multiprocess', 'k8s' or 'in_process'"


def test_the_k8s_extra_is_named_when_dagster_k8s_is_missing(tmp_path: Path) -> None:
    # A package folder that shadows dagster_k8s with one that cannot be imported.
    shadow = tmp_path / "dagster_k8s"
    shadow.mkdir()
    (shadow / "__init__.py").write_text("raise ImportError('dagster_k8s is not installed')\n")
    probe = (
        "from sms_assets.defs.executor import executor_from_settings; from sms_core import settings; "
        "executor_from_settings(settings.load({'SMS_EXECUTOR': 'k8s'}))"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, check=False
    )
    assert result.returncode != 0
    assert "SMS_EXECUTOR=k8s needs dagster-k8s, the project's k8s extra" in result.stderr
