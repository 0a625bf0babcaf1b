"""docker-compose.yml is the deployment; no Docker engine is needed to check that it is well formed."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from app.settings import Settings
from tests.conftest import KAFKA_IMAGE

REPOSITORY = Path(__file__).resolve().parent.parent
COMPOSE_FILE = REPOSITORY / "docker-compose.yml"
SERVICE_IMAGE_SERVICES = ("topics", "worker")


def compose_command() -> tuple[list[str] | None, str]:
    """The compose CLI to validate with (the docker plugin, else standalone docker-compose), or why there is none."""
    docker = shutil.which("docker")
    if docker is not None:
        probe = subprocess.run([docker, "compose", "version"], capture_output=True, text=True, timeout=30)
        if probe.returncode == 0:
            return [docker, "compose"], ""
    standalone = shutil.which("docker-compose")
    if standalone is not None:
        return [standalone], ""
    missing = "the docker client" if docker is None else "the docker compose plugin"
    return None, f"neither {missing} nor docker-compose is installed"


def test_docker_compose_config_accepts_the_file():
    command, reason = compose_command()
    if command is None:
        pytest.skip(f"`docker compose config` not run: {reason}")
    # `config` parses, interpolates and validates against the compose schema; it needs no engine.
    result = subprocess.run(
        [*command, "--file", str(COMPOSE_FILE), "config", "--quiet"],
        capture_output=True, text=True, timeout=60, cwd=REPOSITORY,
    )
    assert result.returncode == 0, result.stderr


@pytest.fixture(scope="module")
def compose() -> dict:
    yaml = pytest.importorskip("yaml", reason="PyYAML is not installed; the structural check needs it")
    return yaml.safe_load(COMPOSE_FILE.read_text())


def test_the_deployment_has_kafka_a_registry_a_topics_job_and_two_workers(compose):
    services = compose["services"]
    assert services["kafka"]["image"] == KAFKA_IMAGE  # the image the `kafka` tests run
    assert "KAFKA_PROCESS_ROLES" in services["kafka"]["environment"]  # KRaft, no ZooKeeper
    assert services["schema-registry"]["image"].startswith("confluentinc/cp-schema-registry:")
    assert services["topics"]["command"] == ["availability", "topics", "create"]
    assert services["worker"]["command"] == ["availability", "worker"]
    assert services["worker"]["deploy"]["replicas"] == 2
    for name in SERVICE_IMAGE_SERVICES:
        assert services[name]["build"] == "."
    worker_waits_for = services["worker"]["depends_on"]
    assert worker_waits_for["topics"]["condition"] == "service_completed_successfully"
    assert worker_waits_for["kafka"]["condition"] == "service_healthy"


def test_every_service_states_its_health_check(compose):
    for name, service in compose["services"].items():
        assert "healthcheck" in service, f"service {name} has no healthcheck"


def test_service_environment_names_only_real_settings(compose):
    fields = set(Settings.model_fields)
    for name in SERVICE_IMAGE_SERVICES:
        environment = compose["services"][name]["environment"]
        assert environment["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:29092"
        for variable in environment:
            if variable.startswith("AVAILABILITY_"):
                assert variable.removeprefix("AVAILABILITY_").lower() in fields, f"{variable} is not a setting"
        # The values are accepted by Settings itself, as they would be in the container.
        with pytest.MonkeyPatch.context() as patch:
            for variable, value in environment.items():
                patch.setenv(variable, str(value))
            Settings()
