"""docker-compose.yml is the deployment; no Docker engine is needed to check that it is well formed."""

from __future__ import annotations

import json
import os
import re
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


ENV_EXAMPLE = REPOSITORY / ".env.example"
# What a user writes into .env (copied from .env.example): a value for every variable compose requires.
FILLED_ENV = {"AVAILABILITY_API_TOKEN": "compose-test-token-0123456789", "GRAFANA_ADMIN_PASSWORD": "not-admin-42"}


def test_docker_compose_config_accepts_the_file_once_env_is_filled_and_refuses_it_before(tmp_path):
    command, reason = compose_command()
    if command is None:
        pytest.skip(f"`docker compose config` not run: {reason}")
    # `config` parses, interpolates and validates against the compose schema; it needs no engine. --env-file points
    # at a file of the test's own, so a developer's .env neither helps nor breaks it.
    for filled in (True, False):
        env_file = tmp_path / ("filled.env" if filled else "empty.env")
        env_file.write_text("".join(f"{name}={value if filled else ''}\n" for name, value in FILLED_ENV.items()))
        environment = {name: value for name, value in os.environ.items() if name not in FILLED_ENV}
        result = subprocess.run(
            [*command, "--file", str(COMPOSE_FILE), "--env-file", str(env_file), "config", "--quiet"],
            capture_output=True, text=True, timeout=60, cwd=REPOSITORY, env=environment,
        )
        if filled:
            assert result.returncode == 0, result.stderr
        else:
            assert result.returncode != 0 and "set AVAILABILITY_API_TOKEN in .env" in result.stderr, result.stderr


class MissingVariable(Exception):
    pass


def interpolate(value, environment: dict[str, str]):
    """Compose's interpolation of one value: `${VAR}`, `${VAR:-default}`, `${VAR-default}`, `${VAR:?message}`,
    `${VAR?message}` and `$$`, enough to read this file as compose would. MissingVariable for a `?` unmet."""
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match) -> str:
        if match.group(0) == "$$":
            return "$"
        name, operator, argument = match.group("name"), match.group("operator"), match.group("argument") or ""
        present = name in environment
        given = environment.get(name, "")
        if operator in (":?", "?"):
            if (not given) if operator == ":?" else (not present):
                raise MissingVariable(f"required variable {name} is missing a value: {argument}")
            return given
        if operator in (":-", "-"):
            return given if (given if operator == ":-" else present) else argument
        return given

    return re.sub(r"\$\$|\$\{(?P<name>\w+)(?:(?P<operator>:?[-?])(?P<argument>[^}]*))?\}", substitute, value)


def interpolated(tree, environment: dict[str, str]):
    if isinstance(tree, dict):
        return {key: interpolated(value, environment) for key, value in tree.items()}
    if isinstance(tree, list):
        return [interpolated(value, environment) for value in tree]
    return interpolate(tree, environment)


def test_the_interpolation_reads_like_compose():
    assert interpolate("a${X}b$${Y}", {"X": "1"}) == "a1b${Y}"
    assert interpolate("${X:-d}", {"X": ""}) == "d" and interpolate("${X-d}", {"X": ""}) == ""
    with pytest.raises(MissingVariable, match="set it"):
        interpolate("${X:?set it}", {"X": ""})


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
        environment = interpolated(compose["services"][name]["environment"], FILLED_ENV)
        assert environment["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:29092"
        for variable in environment:
            if variable.startswith("AVAILABILITY_"):
                assert variable.removeprefix("AVAILABILITY_").lower() in fields, f"{variable} is not a setting"
        # The values are accepted by Settings itself, as they would be in the container.
        with pytest.MonkeyPatch.context() as patch:
            for variable, value in environment.items():
                patch.setenv(variable, str(value))
            Settings()


# --------------------------------------------------------------------------- operations kit: Prometheus and Grafana
PROMETHEUS_CONFIG = REPOSITORY / "docker" / "prometheus" / "prometheus.yml"
GRAFANA_DIR = REPOSITORY / "docker" / "grafana"
DASHBOARD_FILE = GRAFANA_DIR / "dashboards" / "availability.json"
WORKER_JOB = "availability-worker"
PROMETHEUS_BUILTIN_SERIES = {"up"}  # synthesized by Prometheus for every target, not exported by the workers
PROMQL_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless",
                   "offset", "inf", "nan"}
TARGET_LABELS = {"instance", "job"}  # attached by Prometheus to every scraped series


def test_one_shot_jobs_are_the_only_services_without_an_active_health_check(compose):
    services = compose["services"]
    for name, service in services.items():
        if service["healthcheck"].get("disable"):
            waited_for = [
                other for other in services.values()
                if (other.get("depends_on") or {}).get(name, {}).get("condition") == "service_completed_successfully"
            ]
            assert service.get("restart") == "no" and waited_for, f"{name} disables its health check but is no job"
        else:
            assert service["healthcheck"]["test"][0] in ("CMD", "CMD-SHELL"), name


def test_bind_mounted_files_are_in_the_repository(compose):
    for name, service in compose["services"].items():
        for volume in service.get("volumes", ()):
            source = volume.split(":", 1)[0]
            if source.startswith("./"):
                assert (REPOSITORY / source).exists(), f"{name} mounts {source}, which is not in the repository"


@pytest.fixture(scope="module")
def prometheus_config() -> dict:
    yaml = pytest.importorskip("yaml", reason="PyYAML is not installed; the structural check needs it")
    return yaml.safe_load(PROMETHEUS_CONFIG.read_text())


def test_prometheus_scrapes_every_worker_replica_on_the_web_port(compose, prometheus_config):
    services = compose["services"]
    mounted = [volume.split(":")[1] for volume in services["prometheus"]["volumes"] if volume.startswith("./")]
    assert "/etc/prometheus/prometheus.yml" in mounted
    assert "--config.file=/etc/prometheus/prometheus.yml" in services["prometheus"]["command"]

    jobs = {job["job_name"]: job for job in prometheus_config["scrape_configs"]}
    worker_job = jobs[WORKER_JOB]
    assert worker_job.get("metrics_path", "/metrics") == "/metrics"
    web_source = (REPOSITORY / "app" / "http" / "web.py").read_text()
    assert '"/metrics"' in web_source, "the workers no longer serve /metrics where Prometheus scrapes"
    # DNS discovery of the compose service: one A record per replica, so `--scale worker=N` needs no edit here.
    (discovery,) = worker_job["dns_sd_configs"]
    assert discovery["type"] == "A"
    assert discovery["names"] == ["worker"] and "worker" in services
    worker_environment = services["worker"]["environment"]
    assert str(discovery["port"]) == str(worker_environment["AVAILABILITY_WEB_PORT"])
    assert worker_environment["AVAILABILITY_WEB_HOST"] == "0.0.0.0"  # reachable from the Prometheus container
    assert str(discovery["port"]) in [str(port) for port in services["worker"]["expose"]]


def test_grafana_is_provisioned_with_prometheus_and_the_dashboard_file(compose):
    yaml = pytest.importorskip("yaml", reason="PyYAML is not installed; the structural check needs it")
    grafana = compose["services"]["grafana"]
    mounts = {volume.split(":")[0]: volume.split(":")[1] for volume in grafana["volumes"] if volume.startswith("./")}
    assert mounts["./docker/grafana/provisioning"] == "/etc/grafana/provisioning"
    dashboards_mount = mounts["./docker/grafana/dashboards"]
    assert grafana["depends_on"]["prometheus"]["condition"] == "service_healthy"

    (datasource,) = yaml.safe_load((GRAFANA_DIR / "provisioning" / "datasources" / "prometheus.yml").read_text())[
        "datasources"]
    assert datasource["type"] == "prometheus"
    assert datasource["url"] == "http://prometheus:9090" and "prometheus" in compose["services"]
    (provider,) = yaml.safe_load((GRAFANA_DIR / "provisioning" / "dashboards" / "availability.yml").read_text())[
        "providers"]
    assert provider["type"] == "file" and provider["options"]["path"] == dashboards_mount

    dashboard = json.loads(DASHBOARD_FILE.read_text())
    references = [panel["datasource"] for panel in dashboard["panels"]]
    references += [target["datasource"] for panel in dashboard["panels"] for target in panel["targets"]]
    references += [variable["datasource"] for variable in dashboard["templating"]["list"]]
    assert all(reference == {"type": "prometheus", "uid": datasource["uid"]} for reference in references)
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{dashboards_mount}/{DASHBOARD_FILE.name}"


def exported_series() -> dict[str, set[str]]:
    """Every series name a worker exports (counters with `_total`, histograms with `_bucket`/`_sum`/`_count`) and
    its labels, read from the metric objects of app/service/metrics.py itself."""
    from app.service.metrics import ServiceMetrics

    suffixes = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created"),
                "gauge": ("",), "summary": ("", "_sum", "_count", "_created")}
    series: dict[str, set[str]] = {}
    for collector in vars(ServiceMetrics()).values():
        if not hasattr(collector, "_labelnames"):
            continue
        for family in collector.describe():
            for suffix in suffixes[family.type]:
                labels = set(collector._labelnames) | ({"le"} if suffix == "_bucket" else set())
                series[family.name + suffix] = labels
    return series


def promql_series_and_labels(expr: str) -> tuple[set[str], set[str]]:
    """(series names, label names) a PromQL expression uses. A small scanner, enough for dashboard queries:
    strings, ranges and Grafana variables are dropped; `{...}` matchers and `by/without (...)` give the labels."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    labels = set()
    for matchers in re.findall(r"\{([^}]*)\}", text):
        labels |= set(re.findall(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)", matchers))
    for grouping in re.findall(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)", text):
        labels |= {label.strip() for label in grouping.split(",") if label.strip()}
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(?:by|without|on|ignoring)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\$\{?\w+\}?", " ", text)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        name, after = match.group(0), text[match.end():].lstrip()
        if after.startswith("(") or name.lower() in PROMQL_KEYWORDS:
            continue  # a function or an aggregation
        names.add(name)
    return names, labels


def test_the_promql_scanner_finds_names_and_labels():
    names, labels = promql_series_and_labels(
        'histogram_quantile(0.99, sum by (le, channel) (rate(x_bucket{outcome="A{b}", stage=~"$s"}[$__rate_interval])))'
        " / on (instance) group_left y_total"
    )
    assert names == {"x_bucket", "y_total"}
    assert labels == {"le", "channel", "outcome", "stage", "instance"}


def test_dashboard_is_grafana_json_whose_queries_name_metrics_the_workers_export():
    dashboard = json.loads(DASHBOARD_FILE.read_text())
    assert dashboard["uid"] and dashboard["title"] and isinstance(dashboard["schemaVersion"], int)
    panels = dashboard["panels"]
    assert len({panel["id"] for panel in panels}) == len(panels)
    exported = exported_series()
    used: set[str] = set()
    for panel in panels:
        assert panel["type"] in ("timeseries", "stat"), panel["title"]
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24 and grid["w"] > 0 and grid["h"] > 0, panel["title"]
        assert panel["targets"], f"panel {panel['title']!r} has no query"
        assert len({target["refId"] for target in panel["targets"]}) == len(panel["targets"])
        for target in panel["targets"]:
            names, labels = promql_series_and_labels(target["expr"])
            assert names, f"{panel['title']!r}: no series in {target['expr']!r}"
            unknown = names - set(exported) - PROMETHEUS_BUILTIN_SERIES
            assert not unknown, f"{panel['title']!r} queries {sorted(unknown)}, not exported by app/service/metrics.py"
            available = set().union(*(exported.get(name, set()) for name in names)) | TARGET_LABELS
            assert labels <= available, f"{panel['title']!r}: labels {sorted(labels - available)} do not exist"
            used |= names
    for variable in dashboard["templating"]["list"]:
        metric, label = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", variable["query"]["query"]).groups()
        assert label in exported[metric]
    # The panels the operations guide promises: throughput, lag, latency, dead letters, reservations, changes.
    for required in ("availability_events_ingested_total", "availability_consumer_lag_records",
                     "availability_end_to_end_latency_seconds_bucket", "availability_dead_letters_total",
                     "availability_reservation_decisions_total", "availability_publications_total"):
        assert required in used, f"no panel shows {required}"


def test_the_exported_series_are_the_documented_ones():
    operations = (REPOSITORY / "docs" / "OPERATIONS.md").read_text()
    documented = set(re.findall(r"`(availability_[a-z_]+)`", operations))
    base_names = {re.sub(r"_(bucket|sum|count|created)$", "", name) for name in exported_series()}
    assert {name for name in base_names if not name.endswith("_created")} <= documented | {
        name.removesuffix("_total") for name in documented
    }


# ------------------------------------------------------------------------------------------- safe by default
def test_compose_refuses_to_start_without_the_secrets_in_env(compose):
    required = set(re.findall(r"\$\{(\w+):\?", COMPOSE_FILE.read_text()))
    assert required == set(FILLED_ENV)
    for missing in FILLED_ENV:
        for absent in ({name: value for name, value in FILLED_ENV.items() if name != missing},
                       {**FILLED_ENV, missing: ""}):
            with pytest.raises(MissingVariable, match=rf"{missing}.*set {missing} in \.env"):
                interpolated(compose, absent)
    workers = interpolated(compose, FILLED_ENV)["services"]["worker"]["environment"]
    assert workers["AVAILABILITY_API_TOKEN"] == FILLED_ENV["AVAILABILITY_API_TOKEN"]
    assert workers["AVAILABILITY_WEB_HOST"] == "0.0.0.0"  # all interfaces of the container: hence the token


def test_env_example_names_every_secret_empty_and_env_itself_is_never_committed_or_built_in():
    example = dict(line.split("=", 1) for line in ENV_EXAMPLE.read_text().splitlines()
                   if line.strip() and not line.startswith("#"))
    assert example == {name: "" for name in FILLED_ENV}  # no usable default: compose refuses until they are set
    ignored = subprocess.run(["git", "check-ignore", "--quiet", ".env"], cwd=REPOSITORY, timeout=30)
    assert ignored.returncode == 0, ".gitignore does not leave .env out"
    tracked = subprocess.run(["git", "ls-files", "--error-unmatch", ".env"], cwd=REPOSITORY, capture_output=True,
                             timeout=30)
    assert tracked.returncode != 0, ".env is committed"
    assert ".env" in (REPOSITORY / ".dockerignore").read_text().splitlines()


def test_prometheus_scrapes_the_workers_with_their_token(compose, prometheus_config):
    from app.http.security import OPEN_PATHS

    assert "/metrics" not in OPEN_PATHS  # with a token set, /metrics needs it too
    worker_job = {job["job_name"]: job for job in prometheus_config["scrape_configs"]}[WORKER_JOB]
    authorization = worker_job["authorization"]
    assert authorization.get("type", "Bearer") == "Bearer"
    secret_name = authorization["credentials_file"].removeprefix("/run/secrets/")
    assert authorization["credentials_file"] == f"/run/secrets/{secret_name}"  # where compose mounts a secret
    assert secret_name in compose["services"]["prometheus"]["secrets"]
    # The same variable the workers check requests against.
    assert compose["secrets"][secret_name] == {"environment": "AVAILABILITY_API_TOKEN"}
    assert "${AVAILABILITY_API_TOKEN:?" in compose["services"]["worker"]["environment"]["AVAILABILITY_API_TOKEN"]


def test_grafana_takes_its_admin_password_from_env_and_lets_no_one_in_anonymously(compose):
    grafana = compose["services"]["grafana"]["environment"]
    assert grafana["GF_SECURITY_ADMIN_PASSWORD"].startswith("${GRAFANA_ADMIN_PASSWORD:?")  # no default password
    assert str(grafana["GF_AUTH_ANONYMOUS_ENABLED"]).lower() == "false"


def test_nothing_is_published_beyond_this_host_and_kafka_is_marked_dev_only(compose):
    for name, service in compose["services"].items():
        for port in service.get("ports", ()):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} on every interface"
    assert "worker" not in {name for name, service in compose["services"].items() if service.get("ports")}
    kafka_line = next(line for line in COMPOSE_FILE.read_text().splitlines() if '"127.0.0.1:9092:9092"' in line)
    assert "dev only" in kafka_line
