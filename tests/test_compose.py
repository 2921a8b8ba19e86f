"""docker-compose.yml against the code (no Docker engine needed): every setting it passes is one
the service reads, every command names a module that exists, URLs name services that exist,
dependencies wait on something that can report, and workers can be scaled onto GPUs."""

from __future__ import annotations

import ast
import importlib.util
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from core.config import Settings
from queueing.queues import all_queues, webhook_queue

# Variables read by the third-party images themselves, not by our code.
# Read by the images' own programs (PostgreSQL, MinIO) or by uvicorn itself (its worker count).
IMAGE_VARS = {
    "POSTGRES_USER",
    "POSTGRES_PASSWORD",
    "POSTGRES_DB",
    "MINIO_ROOT_USER",
    "MINIO_ROOT_PASSWORD",
    "WEB_CONCURRENCY",
}
# Hosts that clients (browsers, the CLI) use from outside the compose network.
CLIENT_HOSTS = {"localhost", "127.0.0.1"}
# Services meant to be run more than once (`--scale`), so no fixed name or host port.
SCALED = ("worker", "webhooks")
_INTERPOLATION = re.compile(r"\$\{(\w+)(?::?-([^}]*))?\}")


@pytest.fixture(scope="module")
def compose(repo_root: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((repo_root / "docker-compose.yml").read_text())
    return loaded


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose["services"]
    return found


def _environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # the `- NAME=value` form
        env = dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


def _resolved(value: str) -> str:
    """A value as compose would run it when the host sets nothing: `${X:-d}` becomes `d`."""
    return _INTERPOLATION.sub(lambda m: m.group(2) or "", value)


def _commands(service: dict[str, Any]) -> list[list[str]]:
    found = []
    for command in (service.get("command"), (service.get("healthcheck") or {}).get("test")):
        if isinstance(command, list):
            found.append([c for c in command if c not in ("CMD", "CMD-SHELL")])
        elif isinstance(command, str):
            found.append(command.split())
    return found


def _module_exists(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


def _defines(module: str, attribute: str) -> bool:
    spec = importlib.util.find_spec(module)
    assert spec is not None and spec.origin is not None
    tree = ast.parse(Path(spec.origin).read_text())
    return any(
        isinstance(node, ast.Assign)
        and any(isinstance(t, ast.Name) and t.id == attribute for t in node.targets)
        for node in tree.body
    )


def test_every_environment_variable_is_a_setting(services: dict[str, dict[str, Any]]) -> None:
    fields = {name.upper() for name in Settings.model_fields}
    for name, service in services.items():
        for var in _environment(service):
            assert var in fields or var in IMAGE_VARS, f"{name}: {var} is not a field of core.config.Settings"


def test_the_environment_parses_as_settings(services: dict[str, dict[str, Any]]) -> None:
    # The values themselves must validate (types, ranges, cross-field rules).
    for name in ("api", "worker", "webhooks", "migrate"):
        env = {k.lower(): _resolved(v) for k, v in _environment(services[name]).items()}
        Settings.model_validate({k: v for k, v in env.items() if v != ""})


def test_every_command_names_existing_code(services: dict[str, dict[str, Any]]) -> None:
    checked = 0
    for name, service in services.items():
        for argv in _commands(service):
            if argv[:2] == ["python", "-m"]:
                assert _module_exists(argv[2]), f"{name}: python -m {argv[2]}: no such module"
                checked += 1
            elif argv[0] == "uvicorn":
                module, _, attribute = argv[1].partition(":")
                assert _module_exists(module) and _defines(module, attribute), f"{name}: {argv[1]}"
                checked += 1
            elif argv[0] == "celery":
                app_module = argv[argv.index("-A") + 1]
                assert _module_exists(app_module) and _defines(app_module, "app"), f"{name}: {app_module}"
                checked += 1
    assert checked >= 6  # migrate, api, worker, webhooks, weights, the health checks


def test_worker_queues_are_the_codes_queues(
    services: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    # compose sets no QUEUE_NAME: the default applies, whatever this test process has set
    monkeypatch.delenv("QUEUE_NAME", raising=False)
    settings = Settings(_env_file=None)  # type: ignore[call-arg]

    def queues(service: dict[str, Any]) -> set[str]:
        argv = service["command"]
        return set(argv[argv.index("-Q") + 1].split(","))

    assert queues(services["worker"]) == set(all_queues(settings))
    assert queues(services["webhooks"]) == {webhook_queue(settings)}


def test_urls_name_existing_services(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        for var, value in _environment(service).items():
            value = _resolved(value)
            if "://" not in value:
                continue
            host = urlsplit(value).hostname
            assert host in services or host in CLIENT_HOSTS, f"{name}: {var} points at unknown host {host}"


def test_dependencies_wait_on_something_that_reports(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        for target, spec in (service.get("depends_on") or {}).items():
            assert target in services, f"{name} depends on unknown service {target}"
            condition = spec.get("condition") if isinstance(spec, dict) else None
            if condition == "service_healthy":
                assert "healthcheck" in services[target], (
                    f"{name} waits for {target}'s health: it has no check"
                )
            elif condition == "service_completed_successfully":
                one_shot = services[target].get("restart", "no")
                assert one_shot == "no", f"{name} waits for {target} to finish, but it restarts"


def test_long_running_services_have_health_checks(services: dict[str, dict[str, Any]]) -> None:
    for name in ("postgres", "redis", "minio", "api", "worker", "webhooks"):
        assert services[name].get("healthcheck", {}).get("test"), f"{name} has no health check"


def test_migrations_run_once_before_the_app(services: dict[str, dict[str, Any]]) -> None:
    assert services["migrate"]["command"][:3] == ["python", "-m", "core.migrate"]
    for name in ("api", "worker", "webhooks"):
        condition = services[name]["depends_on"]["migrate"]["condition"]
        assert condition == "service_completed_successfully", name


def test_workers_scale_onto_gpus(services: dict[str, dict[str, Any]]) -> None:
    for name in SCALED:
        assert "container_name" not in services[name], f"{name} cannot be scaled with a fixed name"
        assert "ports" not in services[name], f"{name} cannot be scaled with host ports"
    devices = services["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert any(d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", []) for d in devices)


def test_named_volumes_are_declared(compose: dict[str, Any], services: dict[str, dict[str, Any]]) -> None:
    declared = set(compose.get("volumes") or {})
    for name, service in services.items():
        for volume in service.get("volumes") or []:
            source = str(volume).split(":", 1)[0]
            if not source.startswith((".", "/")):
                assert source in declared, f"{name} mounts undeclared volume {source}"


def test_the_image_ships_every_package(repo_root: Path) -> None:
    # `pip install .` in the Dockerfile needs each package directory copied in first, and
    # pyproject.toml must name it; only the local stack and the benchmarks stay out of the image.
    dockerfile = (repo_root / "Dockerfile").read_text()
    pyproject = (repo_root / "pyproject.toml").read_text()
    packages = {p.name for p in repo_root.iterdir() if (p / "__init__.py").is_file()}
    for package in sorted(packages - {"tests", "bench", "stack"}) + ["migrations"]:
        assert f"COPY {package} " in dockerfile, f"the Dockerfile does not copy {package}/"
    for package in sorted(packages - {"tests", "bench"}):
        assert f'"{package}*"' in pyproject, f"pyproject.toml does not include {package}"
