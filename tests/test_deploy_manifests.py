"""Static checks of the deployment files: docker-compose.yml, deploy/Dockerfile, the Prometheus
and Grafana configuration, and the Kubernetes manifests in deploy/k8s.

No Docker and no cluster here: every file is parsed, then checked against the code it deploys
(setting names from ingestor.config, metric names and types from ingestor.metrics) and against
the other files it must agree with (ports, labels, names, timeouts). Each check stands for a
mistake that would otherwise only show up at deploy time, or in production.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import tomllib
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase
from pydantic import BaseModel

import ingestor.metrics as metrics_module
from ingestor.config import Settings

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
GRAFANA_DIR = ROOT / "deploy" / "grafana"
K8S_DIR = ROOT / "deploy" / "k8s"

INGESTOR_SERVICES = ("ingestor", "ingestor-gpu")
# Labels that Prometheus attaches to every scraped series, on top of the metric's own.
TARGET_LABELS = {"instance", "job"}


# --- helpers: the code under deployment -----------------------------------------------------------


def setting_env_names() -> set[str]:
    """Every environment variable that Settings reads: INGESTOR_<SECTION>__<FIELD>."""
    names = set()
    for section, field in Settings.model_fields.items():
        model = field.annotation
        assert isinstance(model, type) and issubclass(model, BaseModel), section
        names.update(f"INGESTOR_{section.upper()}__{name.upper()}" for name in model.model_fields)
    return names


def exported_series() -> dict[str, tuple[str, set[str]]]:
    """Series name -> (kind, label names) for every metric in ingestor/metrics.py.

    kind is 'counter' for series that only go up (counters, and a histogram's _bucket, _sum and
    _count), 'gauge' for gauges; '_bucket' series also carry `le`.
    """
    series: dict[str, tuple[str, set[str]]] = {}
    for obj in vars(metrics_module).values():
        if isinstance(obj, MetricWrapperBase):
            families = [(family, set(obj._labelnames)) for family in obj.describe()]
        elif isinstance(obj, metrics_module.RecordLedger):  # a custom collector: its families name their labels
            families = [(family, set(getattr(family, "_labelnames", ()))) for family in obj.collect()]
        else:
            continue
        for family, labels in families:
            if family.type == "counter":
                series[family.name + "_total"] = ("counter", labels)
            elif family.type == "gauge":
                series[family.name] = ("gauge", labels)
            elif family.type == "histogram":
                series[family.name + "_bucket"] = ("counter", labels | {"le"})
                series[family.name + "_sum"] = ("counter", labels)
                series[family.name + "_count"] = ("counter", labels)
            else:  # a new kind in metrics.py: teach this helper about it
                raise AssertionError(f"unhandled metric type {family.type} for {family.name}")
    return series


SERIES = exported_series()
# `up` is Prometheus' own per-target series.
KNOWN_SERIES = {**SERIES, "up": ("gauge", set())}


def settings_from_env(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> Settings:
    """The Settings a process would build from exactly this environment."""
    for name in list(os.environ):
        if name.startswith("INGESTOR_"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, str(value))
    return Settings()


# --- helpers: PromQL ------------------------------------------------------------------------------

_PROMQL_KEYWORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
    "atan2",
    "inf",
    "nan",
}
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_TOKEN = re.compile(r"(?P<num>\d[\w.]*)|(?P<id>[A-Za-z_:][A-Za-z0-9_:]*)")


def _strip_promql(expr: str) -> str:
    """The expression without string literals, label matchers and range/subquery brackets."""
    s = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    s = re.sub(r"\{[^}]*\}", "", s)
    return re.sub(r"\[[^\]]*\]", "", s)


def promql_metrics(expr: str) -> set[str]:
    """Series names an expression selects (function names, keywords and numbers excluded)."""
    s = _GROUPING.sub("", _strip_promql(expr))
    names = set()
    for m in _TOKEN.finditer(s):
        name = m.group("id")
        if name is None or name.lower() in _PROMQL_KEYWORDS:
            continue
        if s[m.end() :].lstrip().startswith("("):  # a function call
            continue
        names.add(name)
    return names


def promql_grouping_labels(expr: str) -> set[str]:
    """Labels named in by(...)/without(...)/on(...) clauses."""
    labels = set()
    for m in _GROUPING.finditer(_strip_promql(expr)):
        labels.update(x.strip() for x in m.group(2).split(",") if x.strip())
    return labels


def promql_balanced(expr: str) -> bool:
    s = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    pairs, stack = {")": "(", "]": "[", "}": "{"}, []
    for ch in s:
        if ch in "([{":
            stack.append(ch)
        elif ch in pairs:
            if not stack or stack.pop() != pairs[ch]:
                return False
    return not stack


def check_promql(expr: str, where: str) -> None:
    """Every series exists; functions get series of the kind they are meant for; groupings
    name labels the series have; histogram_quantile gets buckets aggregated by `le`."""
    assert promql_balanced(expr), f"{where}: unbalanced brackets in {expr!r}"
    used = promql_metrics(expr)
    assert used, f"{where}: no metric found in {expr!r}"
    unknown = used - KNOWN_SERIES.keys()
    assert not unknown, f"{where}: unknown series {sorted(unknown)} in {expr!r}"

    stripped = _strip_promql(expr)
    for fn, arg in re.findall(r"\b(rate|irate|increase|deriv|delta|idelta)\(\s*([A-Za-z_:][\w:]*)", stripped):
        if arg not in KNOWN_SERIES:  # an inner aggregation or subquery, not a series
            continue
        kind = KNOWN_SERIES[arg][0]
        want = "gauge" if fn in ("deriv", "delta", "idelta") else "counter"
        assert kind == want, f"{where}: {fn}() over the {kind} {arg} in {expr!r}"
    for name in used:
        if KNOWN_SERIES[name][0] == "counter" and not re.search(
            rf"\b(rate|irate|increase)\(\s*{re.escape(name)}\b", stripped
        ):
            raise AssertionError(f"{where}: counter {name} used as a raw value (no rate/increase) in {expr!r}")

    available = set.intersection(*(KNOWN_SERIES[n][1] for n in used)) | TARGET_LABELS
    missing = promql_grouping_labels(expr) - available
    assert not missing, f"{where}: grouping by labels {sorted(missing)} that {sorted(used)} lack"

    if "histogram_quantile" in expr:
        for q in re.findall(r"histogram_quantile\(\s*([0-9.]+)", expr):
            assert 0 < float(q) < 1, f"{where}: quantile {q} outside (0, 1)"
        assert all(n.endswith("_bucket") for n in used), f"{where}: histogram_quantile over non-bucket series"
        assert "le" in promql_grouping_labels(expr), f"{where}: buckets aggregated without `by (le)`"


def duration_seconds(text: str | int | float) -> float:
    """A Prometheus/compose duration such as 15m, 1m30s or 90s."""
    if isinstance(text, (int, float)):
        return float(text)
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)", text)
    assert parts and "".join(a + b for a, b in parts) == text, f"not a duration: {text!r}"
    return sum(float(n) * units[u] for n, u in parts)


class TestPromqlHelpers:
    """The checks above are only as good as the PromQL parsing behind them."""

    def test_metric_extraction(self) -> None:
        expr = (
            "histogram_quantile(0.99, sum by (le, instance) (rate(ingestor_embed_duration_seconds_bucket"
            '{job="x"}[$__rate_interval]))) / on(instance) group_left up offset 5m > 1e3'
        )
        assert promql_metrics(expr) == {"ingestor_embed_duration_seconds_bucket", "up"}
        assert promql_grouping_labels(expr) == {"le", "instance"}

    def test_rejects_wrong_usage(self) -> None:
        bad = [
            "rate(ingestor_no_such_metric_total[5m])",  # unknown series
            "rate(ingestor_records_in_flight[5m])",  # rate over a gauge
            "ingestor_records_consumed_total > 5",  # raw counter
            "sum by (dependency) (ingestor_partitions_paused)",  # label it lacks
            "histogram_quantile(0.99, sum(rate(ingestor_batch_tokens_bucket[5m])))",  # no le
            "sum(rate(ingestor_records_consumed_total[5m])",  # unbalanced
            "histogram_quantile(99, sum by (le) (rate(ingestor_batch_tokens_bucket[5m])))",
        ]
        for expr in bad:
            with pytest.raises(AssertionError):
                check_promql(expr, "self-test")

    def test_accepts_correct_usage(self) -> None:
        check_promql("sum by (reason) (rate(ingestor_records_dead_lettered_total[5m])) > 1", "self-test")


# --- compose --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(data, dict) and isinstance(data.get("services"), dict)
    return data


@pytest.fixture(scope="module")
def compose_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    # Not `services`: tests/conftest.py has a fixture of that name that starts the real services.
    return compose["services"]


def env_of(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def depends_of(service: dict[str, Any]) -> dict[str, dict[str, Any]]:
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return {name: {"condition": "service_started"} for name in deps}
    return deps


def healthcheck_text(service: dict[str, Any]) -> str:
    test = (service.get("healthcheck") or {}).get("test")
    if isinstance(test, list):
        assert test and test[0] in ("CMD", "CMD-SHELL"), f"healthcheck test must start with CMD/CMD-SHELL: {test}"
        return " ".join(test[1:])
    return test or ""


def published_ports(service: dict[str, Any]) -> Iterator[tuple[str | None, str, str]]:
    """(host ip, host port, container port) of each published port."""
    for entry in service.get("ports") or []:
        if isinstance(entry, dict):
            yield entry.get("host_ip"), str(entry.get("published", "")), str(entry["target"])
        else:
            parts = str(entry).split("/")[0].split(":")
            if len(parts) == 3:
                yield parts[0], parts[1], parts[2]
            elif len(parts) == 2:
                yield None, parts[0], parts[1]
            else:
                yield None, "", parts[0]


def compose_settings(monkeypatch: pytest.MonkeyPatch, service: dict[str, Any]) -> Settings:
    """Settings inside the container: the image's ENV (for services built from deploy/Dockerfile),
    overridden by the service's environment, with each `*_FILE` it names laid out (as
    secrets-init makes them) in a directory of its own."""
    env = {}
    if service.get("build"):
        env = {k: v for k, v in dockerfile_env(final_stage()).items() if k.startswith("INGESTOR_")}
    env = {**env, **env_of(service)}
    there = Path(tempfile.mkdtemp(prefix="compose-secrets-"))
    for name, value in list(env.items()):
        if name.endswith("_FILE"):
            laid = there / value.lstrip("/")
            laid.parent.mkdir(parents=True, exist_ok=True)
            laid.write_text("a-made-up-secret\n")
            env[name] = str(laid)
    return settings_from_env(monkeypatch, env)


def volume_mounts(service: dict[str, Any]) -> dict[str, str]:
    """Container path -> volume or host path, for each of a service's mounts (short syntax)."""
    mounts = {}
    for entry in service.get("volumes") or []:
        source, target = str(entry).split(":")[:2]
        mounts[target] = source
    return mounts


def test_compose_services_present(compose_services: dict[str, Any]) -> None:
    required = {"kafka", "redis", "etcd", "minio", "milvus", "ingestor", "prometheus", "grafana"}
    assert required <= compose_services.keys(), f"missing services: {sorted(required - compose_services.keys())}"


def test_compose_images_pinned(compose_services: dict[str, Any]) -> None:
    for name, service in compose_services.items():
        image = service.get("image")
        assert image or service.get("build"), f"{name}: neither image nor build"
        if not image:
            continue
        repo, sep, tag = image.rpartition(":")
        assert sep and repo and tag and "/" not in tag, f"{name}: image {image!r} has no tag"
        assert tag != "latest", f"{name}: image {image!r} is not pinned"


def test_compose_official_images(compose_services: dict[str, Any]) -> None:
    expected = {
        "kafka": "apache/kafka",
        "redis": "redis",
        "etcd": "quay.io/coreos/etcd",
        "minio": "minio/minio",
        "milvus": "milvusdb/milvus",
        "prometheus": "prom/prometheus",
        "grafana": "grafana/grafana",
    }
    for name, repo in expected.items():
        assert compose_services[name]["image"].rpartition(":")[0] == repo, name
    assert compose_services["redis"]["image"].rpartition(":")[2].split(".")[0] == "7"


def test_compose_healthchecks(compose_services: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    expectations = {
        "kafka": ["/opt/kafka/bin/kafka-topics.sh", "--list"],
        "redis": ["redis-cli", "ping"],
        "milvus": ["curl", "-f", "http://localhost:9091/healthz"],
    }
    for name in INGESTOR_SERVICES:  # slim images have no curl; the port is the one the daemon binds
        port = compose_settings(monkeypatch, compose_services[name]).metrics.port
        expectations[name] = ["python", f":{port}/healthz"]
    for name, needles in expectations.items():
        text = healthcheck_text(compose_services[name])
        for needle in needles:
            assert needle in text, f"{name}: healthcheck {text!r} lacks {needle!r}"


def test_compose_ingestor_waits_for_healthy_dependencies(compose_services: dict[str, Any]) -> None:
    for name in INGESTOR_SERVICES:
        deps = depends_of(compose_services[name])
        for dep in ("kafka", "redis", "milvus"):
            assert deps.get(dep, {}).get("condition") == "service_healthy", f"{name} -> {dep}"


def test_compose_dependency_graph(compose_services: dict[str, Any]) -> None:
    for name, service in compose_services.items():
        for dep, spec in depends_of(service).items():
            assert dep in compose_services, f"{name} depends on unknown service {dep}"
            if spec.get("condition") == "service_healthy":
                assert healthcheck_text(compose_services[dep]), f"{name} waits for {dep}, which has no healthcheck"
            # A service that starts by default cannot wait for one behind a profile.
            if not service.get("profiles"):
                assert not compose_services[dep].get("profiles"), f"{name} depends on profiled {dep}"

    state: dict[str, str] = {}

    def visit(node: str, path: list[str]) -> None:
        if state.get(node) == "done":
            return
        assert state.get(node) != "active", f"dependency cycle: {' -> '.join(path + [node])}"
        state[node] = "active"
        for dep in depends_of(compose_services[node]):
            visit(dep, path + [node])
        state[node] = "done"

    for name in compose_services:
        visit(name, [])


def test_compose_published_ports_loopback_only(compose_services: dict[str, Any]) -> None:
    seen = set()
    for name, service in compose_services.items():
        for host_ip, host_port, _ in published_ports(service):
            assert host_ip == "127.0.0.1", f"{name}: port {host_port} published beyond loopback"
            assert host_port not in seen, f"{name}: host port {host_port} published twice"
            seen.add(host_port)


def test_compose_ingestor_env_names_are_settings(compose_services: dict[str, Any]) -> None:
    known = setting_env_names()
    found = 0
    for name, service in compose_services.items():
        for var in env_of(service):
            if var.startswith("INGESTOR_"):
                found += 1
                assert var in known, f"{name}: {var} is not a setting"
    assert found, "no INGESTOR_* variables in compose"


def test_compose_ingestor_settings_validate(compose_services: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    for name in INGESTOR_SERVICES:
        settings = compose_settings(monkeypatch, compose_services[name])
        # Every dependency is reached by its compose service name, never the loopback defaults.
        assert settings.kafka.bootstrap_servers.split(":")[0] == "kafka", name
        assert settings.redis.url is not None
        assert settings.redis.url.get_secret_value().startswith("redis://redis:"), name
        assert settings.milvus.uri.startswith("http://milvus:") and not settings.milvus.is_lite, name
        assert settings.metrics.host == "0.0.0.0", f"{name}: metrics bound to loopback inside the container"
        published = {c for _, _, c in published_ports(compose_services[name])}
        assert str(settings.metrics.port) in published, f"{name}: metrics port not the published one"


def test_compose_secrets_are_files_on_the_secrets_volume_never_environment(
    compose_services: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    init = compose_services["secrets-init"]
    assert volume_mounts(init).get("/secrets") == "secrets"
    redis = compose_services["redis"]
    assert depends_of(redis)["secrets-init"]["condition"] == "service_completed_successfully"
    command = redis["command"]
    acl = command[command.index("--aclfile") + 1]
    assert volume_mounts(redis).get(str(PurePosixPath(acl).parent)) == "secrets"
    assert "redis-password" in healthcheck_text(redis), "the healthcheck must log in"
    for name in INGESTOR_SERVICES:
        env = env_of(compose_services[name])
        assert not [k for k in env if k.endswith(("PASSWORD", "TOKEN"))], f"{name}: a secret in the environment"
        path = PurePosixPath(env["INGESTOR_REDIS__PASSWORD_FILE"])
        assert volume_mounts(compose_services[name]).get(str(path.parent)) == "secrets", name
        settings = compose_settings(monkeypatch, compose_services[name])
        assert settings.redis.password is not None
        assert settings.redis.password.get_secret_value() == "a-made-up-secret", name


def test_compose_secrets_init_makes_a_password_that_redis_accepts(tmp_path: Path) -> None:
    """The script the `secrets-init` service runs, then Redis with the ACL file it wrote: the
    password logs in, no password does not, and the file holds only the password's hash."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server not installed (deploy/local/bootstrap.sh installs it)")
    from tests.support import harness

    secrets = tmp_path / "secrets"
    script = ROOT / "deploy" / "compose" / "secrets-init.sh"
    subprocess.run(["sh", str(script), str(secrets)], check=True)
    password = (secrets / "redis-password").read_text().strip()
    assert len(password) == 48 and password not in (secrets / "users.acl").read_text()
    subprocess.run(["sh", str(script), str(secrets)], check=True)
    assert (secrets / "redis-password").read_text().strip() == password, "a second run keeps the password"
    port = harness.free_port()
    server = subprocess.Popen(
        [
            "redis-server",
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--save",
            "",
            "--aclfile",
            str(secrets / "users.acl"),
            "--dir",
            str(tmp_path),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        import redis

        def answers() -> bool:
            try:
                return bool(redis.Redis(port=port, password=password).ping())
            except redis.ConnectionError:
                return False

        harness.wait_for(answers, timeout_s=10, what="redis-server with the ACL file")
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=port).ping()
    finally:
        server.terminate()
        server.wait(10)


def test_compose_stop_grace_covers_shutdown(compose_services: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    for name in INGESTOR_SERVICES:
        settings = compose_settings(monkeypatch, compose_services[name])
        grace = duration_seconds(compose_services[name].get("stop_grace_period", "10s"))
        assert grace > settings.runtime.shutdown_timeout_s, name


def test_compose_gpu_only_behind_profile(compose_services: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    def gpu_devices(service: dict[str, Any]) -> list[dict[str, Any]]:
        devices = (((service.get("deploy") or {}).get("resources") or {}).get("reservations") or {}).get("devices")
        return [d for d in devices or [] if d.get("driver") == "nvidia"]

    for name, service in compose_services.items():
        if gpu_devices(service):
            assert service.get("profiles"), f"{name} reserves a GPU but starts by default"
    gpu = compose_services["ingestor-gpu"]
    assert gpu.get("profiles") == ["gpu"]
    assert gpu_devices(gpu) and "gpu" in gpu_devices(gpu)[0].get("capabilities", [])
    assert compose_settings(monkeypatch, gpu).model.device.startswith("cuda")
    assert not gpu_devices(compose_services["ingestor"]) and not compose_services["ingestor"].get("profiles")
    assert compose_settings(monkeypatch, compose_services["ingestor"]).model.device == "cpu"


def test_compose_ingestor_built_from_dockerfile(compose_services: dict[str, Any]) -> None:
    for name in INGESTOR_SERVICES:
        build = compose_services[name]["build"]
        context = ROOT / build["context"]
        assert context.resolve() == ROOT, name
        assert (context / build["dockerfile"]).resolve() == DOCKERFILE


def test_compose_volumes_exist(compose: dict[str, Any], compose_services: dict[str, Any]) -> None:
    declared = set((compose.get("volumes") or {}).keys())
    for name, service in compose_services.items():
        for volume in service.get("volumes") or []:
            source = volume.split(":")[0] if isinstance(volume, str) else volume["source"]
            if source.startswith((".", "/")):
                assert (ROOT / source).exists(), f"{name}: bind mount {source} does not exist"
            else:
                assert source in declared, f"{name}: volume {source} not declared"


def test_compose_kafka_kraft_single_node(compose_services: dict[str, Any]) -> None:
    env = env_of(compose_services["kafka"])
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    node_id = env["KAFKA_NODE_ID"]
    voters = env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(",")
    assert len(voters) == 1 and voters[0].startswith(f"{node_id}@kafka:")

    def listeners(value: str) -> dict[str, str]:
        return dict(item.split("://", 1) for item in value.split(","))

    bound = listeners(env["KAFKA_LISTENERS"])
    advertised = listeners(env["KAFKA_ADVERTISED_LISTENERS"])
    protocols = dict(item.split(":") for item in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    assert set(bound) <= set(protocols)
    assert env["KAFKA_CONTROLLER_LISTENER_NAMES"] in bound
    assert env["KAFKA_CONTROLLER_LISTENER_NAMES"] not in advertised  # controllers are not advertised
    assert env["KAFKA_INTER_BROKER_LISTENER_NAME"] in advertised
    assert set(advertised) <= set(bound)
    # One listener is advertised under the service name, for containers on the compose network,
    # and it is the one the ingestor's bootstrap servers point at.
    in_network = [name for name, addr in advertised.items() if addr.startswith("kafka:")]
    assert in_network
    bootstrap = env_of(compose_services["ingestor"])["INGESTOR_KAFKA__BOOTSTRAP_SERVERS"]
    assert f"kafka:{advertised[in_network[0]].split(':')[1]}" == bootstrap
    # Single broker: any internal topic asking for more replicas would never be created.
    for key in ("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR", "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"):
        assert env[key] == "1", key
    # Listeners published to the host are advertised at the address the host dials.
    for _, host_port, container_port in published_ports(compose_services["kafka"]):
        host_facing = [n for n, addr in advertised.items() if addr.endswith(f":{container_port}")]
        assert host_facing and advertised[host_facing[0]] == f"127.0.0.1:{host_port}"


def test_compose_redis_is_a_bounded_lru_cache(compose_services: dict[str, Any]) -> None:
    command = compose_services["redis"]["command"]
    args = shlex.split(command) if isinstance(command, str) else [str(a) for a in command]
    assert args[args.index("--maxmemory") + 1] not in ("0", "")
    assert args[args.index("--maxmemory-policy") + 1] == "allkeys-lru"


def test_compose_milvus_standalone(compose_services: dict[str, Any]) -> None:
    milvus = compose_services["milvus"]
    command = milvus["command"]
    assert (command.split() if isinstance(command, str) else command) == ["milvus", "run", "standalone"]
    env = env_of(milvus)
    assert env["ETCD_ENDPOINTS"].split(":")[0] == "etcd"
    assert env["MINIO_ADDRESS"].split(":")[0] == "minio"
    assert {"etcd", "minio"} <= depends_of(milvus).keys()


# --- Dockerfile -----------------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = DOCKERFILE.read_text(encoding="utf-8")
    lines, current = [], ""
    for raw in text.splitlines():
        if raw.lstrip().startswith("#") or not raw.strip():
            continue
        current += raw.rstrip()
        if current.endswith("\\"):
            current = current[:-1] + " "
            continue
        lines.append(current.strip())
        current = ""
    out = []
    for line in lines:
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def final_stage() -> list[tuple[str, str]]:
    instructions = dockerfile_instructions()
    last_from = max(i for i, (word, _) in enumerate(instructions) if word == "FROM")
    return instructions[last_from:]


def dockerfile_args() -> dict[str, str]:
    """Defaults of the ARGs declared before the first FROM (the ones FROM lines can use)."""
    args = {}
    for word, rest in dockerfile_instructions():
        if word == "FROM":
            break
        if word == "ARG" and "=" in rest:
            key, value = rest.split("=", 1)
            args[key] = value.strip('"')
    return args


def dockerfile_env(stage: list[tuple[str, str]]) -> dict[str, str]:
    env = {}
    for word, rest in stage:
        if word == "ENV":
            for token in shlex.split(rest):
                key, _, value = token.partition("=")
                env[key] = value
    return env


def test_dockerfile_base_and_entrypoint() -> None:
    stage = final_stage()
    base = stage[0][1].split()[0]
    base = re.sub(r"\$\{(\w+)\}", lambda m: dockerfile_args()[m.group(1)], base)
    assert base == "python:3.11-slim"
    words = dict(stage)
    assert json.loads(words["ENTRYPOINT"]) == ["ingestor"]
    assert json.loads(words["CMD"]) == ["run"]
    # The entrypoint is the console script, and `run` is one of its commands.
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["scripts"]
    assert "ingestor" in scripts
    from ingestor.cli import app

    commands = {c.name or c.callback.__name__ for c in app.registered_commands}
    assert "run" in commands


def test_dockerfile_installs_the_package() -> None:
    runs = " ".join(rest for word, rest in dockerfile_instructions() if word == "RUN")
    assert re.search(r"pip install (--no-deps )?\.(\s|$)", runs)
    copied_to_final = [rest for word, rest in final_stage() if word == "COPY"]
    assert any("--from=" in c for c in copied_to_final), "final stage must copy the built venv"


def test_dockerfile_runs_as_numeric_non_root_user() -> None:
    users = [rest for word, rest in final_stage() if word == "USER"]
    assert users, "the image would run as root"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, "use a numeric uid: runAsNonRoot cannot verify a name"


def test_dockerfile_metrics_port_and_healthcheck() -> None:
    stage = final_stage()
    env = dockerfile_env(stage)
    known = setting_env_names()
    for key in env:
        if key.startswith("INGESTOR_"):
            assert key in known, f"{key} is not a setting"
    assert env["INGESTOR_METRICS__HOST"] == "0.0.0.0"
    port = int(env.get("INGESTOR_METRICS__PORT", Settings.model_fields["metrics"].default_factory().port))
    exposed = {p.split("/")[0] for word, rest in stage if word == "EXPOSE" for p in rest.split()}
    assert str(port) in exposed
    health = [rest for word, rest in stage if word == "HEALTHCHECK"]
    assert len(health) == 1
    assert "python" in health[0] and "/healthz" in health[0] and "curl" not in health[0]
    assert f"'{port}'" in health[0] or f":{port}/" in health[0], "healthcheck probes another port"


def test_dockerfile_copies_exist_and_are_not_ignored() -> None:
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    sources = []
    for word, rest in dockerfile_instructions():
        if word == "COPY" and "--from=" not in rest:
            sources += [s for s in rest.split()[:-1] if not s.startswith("--")]
    assert sources
    for source in sources:
        assert (ROOT / source).exists(), f"COPY {source}: no such path"
        assert not dockerignored(source, patterns), f"COPY {source} is excluded by .dockerignore"
    # pyproject's readme must be in the context too, or the build of the package fails.
    readme = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["readme"]
    assert readme in sources


def test_dockerignore_excludes_local_state() -> None:
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    for path in [
        ".git/HEAD",
        ".state/services/kafka.log",
        "ingestor.db",
        "data/x.db",
        ".pytest_cache/v/cache",
        ".hypothesis/examples/x",
        "ingestor/__pycache__/a.pyc",
    ]:
        assert dockerignored(path, patterns), f"{path} would be sent to the build"
    for path in ["pyproject.toml", "README.md", "ingestor/config/sections.py", "ingestor/data/sample.jsonl"]:
        assert not dockerignored(path, patterns), f"{path} would be missing from the build"


def _docker_glob(pattern: str) -> re.Pattern[str]:
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out, i = out + pattern[i : end + 1], end + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out + r"\Z")


def dockerignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last matching pattern wins; a match on a directory covers its content."""
    parts = PurePosixPath(path).parts
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        regex = _docker_glob(pattern.lstrip("!").strip("/"))
        if any(regex.match(p) for p in prefixes):
            ignored = not negate
    return ignored


# --- Prometheus -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def prometheus_config() -> dict[str, Any]:
    return yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def alert_rules() -> list[dict[str, Any]]:
    data = yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text(encoding="utf-8"))
    rules = [rule for group in data["groups"] for rule in group["rules"]]
    assert rules
    return rules


def container_path_to_host(service: dict[str, Any], container_path: str) -> Path | None:
    """Where a path inside a compose container comes from, through the service's bind mounts."""
    for volume in service.get("volumes") or []:
        source, target = volume.split(":")[:2]
        if not source.startswith((".", "/")):
            continue
        target = target.rstrip("/")
        if container_path == target or container_path.startswith(target + "/"):
            return ROOT / source / container_path[len(target) :].lstrip("/")
    return None


def ingestor_scrape_job(prometheus_config: dict[str, Any]) -> dict[str, Any]:
    jobs = [j for j in prometheus_config["scrape_configs"] if j["job_name"] == "ingestor"]
    assert len(jobs) == 1
    return jobs[0]


def test_prometheus_scrapes_ingestor_metrics_port(
    prometheus_config: dict[str, Any], compose_services: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    job = ingestor_scrape_job(prometheus_config)
    assert job.get("metrics_path", "/metrics") == "/metrics"
    targets: list[tuple[str, int]] = []
    for static in job.get("static_configs") or []:
        for target in static["targets"]:
            host, port = target.rsplit(":", 1)
            targets.append((host, int(port)))
    for dns in job.get("dns_sd_configs") or []:
        assert dns.get("type", "SRV") == "A", "A records carry no port; SRV lookups need SRV records"
        targets += [(name, int(dns["port"])) for name in dns["names"]]
    assert targets
    hosts = {host for host, _ in targets}
    assert "ingestor" in hosts
    for host, port in targets:
        assert host in compose_services, f"scrape target {host} is not a compose service"
        assert port == compose_settings(monkeypatch, compose_services[host]).metrics.port, f"{host}:{port}"


def test_prometheus_loads_the_alert_rules(prometheus_config: dict[str, Any], compose_services: dict[str, Any]) -> None:
    prometheus = compose_services["prometheus"]
    command = " ".join(prometheus.get("command") or [])
    config_path = re.search(r"--config\.file=(\S+)", command)
    config_in_container = config_path.group(1) if config_path else "/etc/prometheus/prometheus.yml"
    assert container_path_to_host(prometheus, config_in_container) == PROMETHEUS_DIR / "prometheus.yml"
    rule_files = [container_path_to_host(prometheus, p) for p in prometheus_config["rule_files"]]
    assert PROMETHEUS_DIR / "alerts.yml" in rule_files
    assert all(p is not None and p.is_file() for p in rule_files)


def test_alert_rules_are_complete(alert_rules: list[dict[str, Any]]) -> None:
    names = [r.get("alert") for r in alert_rules]
    assert len(names) == len(set(names)), "duplicate alert names"
    for rule in alert_rules:
        assert rule.get("alert"), f"not an alerting rule: {rule}"
        assert rule.get("expr"), rule["alert"]
        assert "for" in rule, rule["alert"]
        duration_seconds(rule["for"])
        assert rule.get("labels", {}).get("severity") in ("warning", "critical"), rule["alert"]
        annotations = rule.get("annotations") or {}
        for key in ("summary", "description"):
            assert str(annotations.get(key, "")).strip(), f"{rule['alert']}: no {key}"


def test_alert_rules_reference_real_metrics(
    alert_rules: list[dict[str, Any]], prometheus_config: dict[str, Any]
) -> None:
    jobs = {j["job_name"] for j in prometheus_config["scrape_configs"]}
    for rule in alert_rules:
        expr = rule["expr"]
        check_promql(expr, rule["alert"])
        for job in re.findall(r'job\s*=~?\s*"([^"]*)"', expr):
            assert job in jobs, f"{rule['alert']}: no scrape job {job!r}"
        # Labels templated into the text must survive the expression's aggregation.
        used = promql_metrics(expr)
        grouped = promql_grouping_labels(expr)
        aggregates = re.search(r"\b(sum|avg|min|max|count|topk|bottomk|quantile)\b", _strip_promql(expr))
        available = grouped if aggregates else set.union(*(KNOWN_SERIES[n][1] for n in used)) | TARGET_LABELS
        for text in rule["annotations"].values():
            for label in re.findall(r"\$labels\.(\w+)", text):
                assert label in available, f"{rule['alert']}: $labels.{label} is aggregated away"


# name -> (series it must use, for: seconds, comparison the rule needs)
EXPECTED_ALERTS = {
    "IngestorLagGrowing": ("ingestor_consumer_lag_records", 15 * 60, r"deriv\("),
    "IngestorDeadLetterRate": ("ingestor_records_dead_lettered_total", 10 * 60, r"\)\s*>\s*1\s*$"),
    "IngestorTimeToSearchableP99High": ("ingestor_time_to_searchable_seconds_bucket", 10 * 60, r"0\.99.*>\s*60\s*$"),
    "IngestorWorkerRestarts": (
        "ingestor_worker_restarts_total",
        None,
        r"increase\(ingestor_worker_restarts_total\[15m\]\).*>\s*3\s*$",
    ),
    "IngestorDown": ("up", 5 * 60, r"up\{[^}]*\}\s*==\s*0"),
    "IngestorRetrying": ("ingestor_retries_total", 10 * 60, r"\)\s*>\s*0\s*$"),
}


@pytest.mark.parametrize("name", sorted(EXPECTED_ALERTS))
def test_alert_rule_semantics(name: str, alert_rules: list[dict[str, Any]]) -> None:
    rule = next((r for r in alert_rules if r["alert"] == name), None)
    assert rule is not None, f"alert {name} missing"
    series, for_seconds, shape = EXPECTED_ALERTS[name]
    expr = " ".join(rule["expr"].split())
    assert series in promql_metrics(expr)
    if for_seconds is not None:
        assert duration_seconds(rule["for"]) == for_seconds
    assert re.search(shape, expr), f"{name}: {expr!r} does not match {shape!r}"
    if name == "IngestorLagGrowing":
        # Both halves: still growing, and big enough to matter.
        assert re.search(r"\)\s*>\s*0\s+and\s+", expr) and re.search(r"\band\b.*>\s*[1-9]\d*\s*$", expr)


def test_time_to_searchable_threshold_within_buckets(alert_rules: list[dict[str, Any]]) -> None:
    # Past the largest finite bucket histogram_quantile cannot tell values apart: an alert
    # threshold there would be meaningless.
    rule = next(r for r in alert_rules if r["alert"] == "IngestorTimeToSearchableP99High")
    threshold = float(re.search(r">\s*([0-9.]+)\s*$", rule["expr"].strip()).group(1))
    bounds = [
        float(s.labels["le"])
        for f in metrics_module.TIME_TO_SEARCHABLE.collect()
        for s in f.samples
        if s.name.endswith("_bucket")
    ]
    finite = [b for b in bounds if b != float("inf")]
    assert finite and threshold < max(finite)
    assert threshold in finite, "threshold between buckets is interpolated, not measured"


# --- Grafana --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return json.loads((GRAFANA_DIR / "dashboards" / "ingestor.json").read_text(encoding="utf-8"))


def dashboard_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    panels = []
    for panel in dashboard["panels"]:
        panels.append(panel)
        panels += panel.get("panels", [])  # collapsed rows keep their panels inside
    return [p for p in panels if p.get("type") != "row"]


def dashboard_exprs(dashboard: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in dashboard_panels(dashboard) for t in p.get("targets", [])]


@pytest.fixture(scope="module")
def grafana_datasources() -> list[dict[str, Any]]:
    out = []
    for path in sorted((GRAFANA_DIR / "provisioning" / "datasources").glob("*.y*ml")):
        out += yaml.safe_load(path.read_text(encoding="utf-8"))["datasources"]
    assert out
    return out


def test_dashboard_panels_query_real_metrics(dashboard: dict[str, Any]) -> None:
    panels = dashboard_panels(dashboard)
    assert panels
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "duplicate panel ids"
    for panel in panels:
        targets = panel.get("targets") or []
        assert targets, f"panel {panel['title']!r} has no query"
        ref_ids = [t["refId"] for t in targets]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]
        for target in targets:
            check_promql(target["expr"], f"panel {panel['title']!r}")


def test_dashboard_covers_the_pipeline(dashboard: dict[str, Any]) -> None:
    exprs = " ".join(dashboard_exprs(dashboard))
    used = promql_metrics(exprs)
    for series in [
        "ingestor_records_consumed_total",
        "ingestor_records_upserted_total",
        "ingestor_records_skipped_total",
        "ingestor_records_dead_lettered_total",
        "ingestor_consumer_lag_records",
        "ingestor_time_to_searchable_seconds_bucket",
        "ingestor_embed_duration_seconds_bucket",
        "ingestor_batch_tokens_bucket",
        "ingestor_records_cache_hit_total",
        "ingestor_records_embedded_total",
        "ingestor_retries_total",
        "ingestor_partitions_paused",
        "ingestor_worker_restarts_total",
        "ingestor_records_deleted_total",
        "ingestor_records_superseded_total",
        "ingestor_records_dropped_total",
        "ingestor_records_in_flight",
    ]:
        assert series in used, f"no panel shows {series}"
    flat = [" ".join(e.split()) for e in dashboard_exprs(dashboard)]

    def quantiles(series: str) -> set[float]:
        return {float(q) for e in flat if series in e for q in re.findall(r"histogram_quantile\(\s*([0-9.]+)", e)}

    assert {0.5, 0.99} <= quantiles("ingestor_time_to_searchable_seconds_bucket")
    assert 0.99 in quantiles("ingestor_embed_duration_seconds_bucket")
    assert any(
        "ingestor_consumer_lag_records" in e and {"topic", "partition"} <= promql_grouping_labels(e) for e in flat
    )
    assert any("ingestor_retries_total" in e and "dependency" in promql_grouping_labels(e) for e in flat)


def test_dashboard_uses_the_provisioned_datasource(
    dashboard: dict[str, Any], grafana_datasources: list[dict[str, Any]]
) -> None:
    uids = {d["uid"] for d in grafana_datasources if d["type"] == "prometheus"}
    assert uids
    for panel in dashboard_panels(dashboard):
        refs = [panel.get("datasource")] + [t.get("datasource") for t in panel["targets"]]
        for ref in refs:
            if ref is not None:
                assert ref.get("uid") in uids, f"panel {panel['title']!r} uses datasource {ref}"


def test_grafana_datasource_points_at_compose_prometheus(
    grafana_datasources: list[dict[str, Any]], compose_services: dict[str, Any]
) -> None:
    source = next(d for d in grafana_datasources if d["type"] == "prometheus")
    m = re.fullmatch(r"http://([\w.-]+):(\d+)/?", source["url"])
    assert m, source["url"]
    assert m.group(1) == "prometheus" and m.group(1) in compose_services
    command = " ".join(compose_services["prometheus"].get("command") or [])
    listen = re.search(r"--web\.listen-address=\S*:(\d+)", command)
    assert m.group(2) == (listen.group(1) if listen else "9090")


def test_grafana_dashboard_provider_finds_the_dashboard(compose_services: dict[str, Any]) -> None:
    grafana = compose_services["grafana"]
    provisioning = container_path_to_host(grafana, "/etc/grafana/provisioning")
    assert provisioning is not None and provisioning.resolve() == (GRAFANA_DIR / "provisioning").resolve()
    providers = []
    for path in sorted((GRAFANA_DIR / "provisioning" / "dashboards").glob("*.y*ml")):
        providers += yaml.safe_load(path.read_text(encoding="utf-8"))["providers"]
    assert providers
    for provider in providers:
        assert provider["type"] == "file"
        folder = container_path_to_host(grafana, provider["options"]["path"])
        assert folder is not None and (folder / "ingestor.json").is_file(), provider["options"]["path"]


# --- Kubernetes -----------------------------------------------------------------------------------


K8s = dict[str, list[dict[str, Any]]]  # file name -> its documents


def k8s_files() -> K8s:
    files = {}
    for path in sorted(K8S_DIR.glob("*.y*ml")):
        docs = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]
        files[path.name] = docs
    return files


@pytest.fixture(scope="module")
def k8s() -> K8s:
    return k8s_files()


def one(k8s: K8s, kind: str, name: str | None = None) -> dict[str, Any]:
    found = [
        d
        for docs in k8s.values()
        for d in docs
        if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)
    ]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


WORKER, SERVE = "ingestor", "ingestor-serve"  # the Deployments: the workers, the query side


def pod_spec(k8s: K8s, name: str = WORKER) -> dict[str, Any]:
    return one(k8s, "Deployment", name)["spec"]["template"]["spec"]


def container(k8s: K8s, name: str = WORKER) -> dict[str, Any]:
    containers = pod_spec(k8s, name)["containers"]
    assert len(containers) == 1, "one process per pod"
    return containers[0]


def pod_labels(k8s: K8s, name: str = WORKER) -> dict[str, str]:
    return one(k8s, "Deployment", name)["spec"]["template"]["metadata"]["labels"]


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def pod_env(k8s: K8s, name: str = WORKER) -> dict[str, str]:
    """The INGESTOR_* environment a pod gets: envFrom sources first, then env (which wins)."""
    env: dict[str, str] = {}
    for source in container(k8s, name).get("envFrom", []):
        if "configMapRef" in source:
            env.update(one(k8s, "ConfigMap", source["configMapRef"]["name"])["data"])
        if "secretRef" in source:
            env.update(one(k8s, "Secret", source["secretRef"]["name"])["stringData"])
    for item in container(k8s, name).get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
        elif item.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.name":
            env[item["name"]] = "ingestor-5d8f7b9c4-x2k7q"  # what the downward API yields
    return env


def secret_mounts(k8s: K8s, name: str = WORKER) -> dict[str, dict[str, str]]:
    """Mount path -> the files there, for every Secret volume the container mounts (the Secret's
    keys, or where the volume lists `items`, those)."""
    volumes = {v["name"]: v for v in pod_spec(k8s, name).get("volumes", [])}
    mounts = {}
    for mount in container(k8s, name).get("volumeMounts", []):
        volume = volumes[mount["name"]]
        if "secret" in volume:
            data = one(k8s, "Secret", volume["secret"]["secretName"])["stringData"]
            items = volume["secret"].get("items")
            mounts[mount["mountPath"]] = data if items is None else {i["path"]: data[i["key"]] for i in items}
    return mounts


def pod_settings(k8s: K8s, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, name: str = WORKER) -> Settings:
    """The Settings a pod builds, with its mounted Secrets laid out as files under tmp_path."""
    env = pod_env(k8s, name)
    for mount, files in secret_mounts(k8s, name).items():
        there = tmp_path / mount.lstrip("/")
        there.mkdir(parents=True)
        for name, value in files.items():
            (there / name).write_text(value)
        env = {
            k: (str(there) + v[len(mount) :] if k.endswith("_FILE") and v.startswith(mount + "/") else v)
            for k, v in env.items()
        }
    return settings_from_env(monkeypatch, env)


def quantity(value: str | int) -> float:
    text = str(value)
    suffixes = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 1e3, "M": 1e6, "G": 1e9}
    for suffix, factor in suffixes.items():
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * factor
    return float(text)


EXPECTED_KINDS = {
    "namespace.yaml": {("v1", "Namespace")},
    "configmap.yaml": {("v1", "ConfigMap")},
    "secret.yaml": {("v1", "Secret")},
    "deployment.yaml": {("apps/v1", "Deployment")},
    "service.yaml": {("v1", "Service")},
    "servicemonitor.yaml": {("monitoring.coreos.com/v1", "ServiceMonitor")},
    "pdb.yaml": {("policy/v1", "PodDisruptionBudget")},
    "keda-scaledobject.yaml": {("keda.sh/v1alpha1", "ScaledObject"), ("keda.sh/v1alpha1", "TriggerAuthentication")},
    "serve-deployment.yaml": {("apps/v1", "Deployment")},
    "serve-service.yaml": {("v1", "Service")},
    "serve-scaledobject.yaml": {("keda.sh/v1alpha1", "ScaledObject")},
    "kustomization.yaml": {("kustomize.config.k8s.io/v1beta1", "Kustomization")},
}


def test_k8s_files_parse_with_expected_kinds(k8s: K8s) -> None:
    assert set(k8s) == set(EXPECTED_KINDS)
    for name, docs in k8s.items():
        assert docs, f"{name} is empty"
        assert {(d["apiVersion"], d["kind"]) for d in docs} == EXPECTED_KINDS[name], name
        for doc in docs:
            if doc["kind"] != "Kustomization":
                assert doc["metadata"]["name"], name


def test_k8s_kustomization_lists_every_file(k8s: K8s) -> None:
    kustomization = one(k8s, "Kustomization")
    resources = kustomization["resources"]
    assert len(resources) == len(set(resources))
    assert set(resources) == set(k8s) - {"kustomization.yaml"}
    namespace = kustomization["namespace"]
    assert one(k8s, "Namespace")["metadata"]["name"] == namespace
    for docs in k8s.values():
        for doc in docs:
            if doc["kind"] not in ("Namespace", "Kustomization"):
                assert doc["metadata"].get("namespace") == namespace, doc["metadata"]["name"]


def test_k8s_env_names_are_settings(k8s: K8s) -> None:
    known = setting_env_names()
    names = list(one(k8s, "ConfigMap")["data"])
    for source in container(k8s)["envFrom"]:
        if "secretRef" in source:
            # envFrom injects every key, so every key of that Secret must be a setting.
            names += list(one(k8s, "Secret", source["secretRef"]["name"])["stringData"])
    names += [item["name"] for item in container(k8s).get("env", [])]
    assert names
    for name in names:
        assert name in known, f"{name} is not a setting"


def test_k8s_settings_validate(k8s: K8s, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    settings = pod_settings(k8s, monkeypatch, tmp_path)
    assert settings.model.device.startswith("cuda"), "GPU workers must run the model on the GPU"
    assert settings.metrics.host == "0.0.0.0"
    assert settings.kafka.group_instance_id == "ingestor-5d8f7b9c4-x2k7q"
    assert not settings.milvus.is_lite, "pods need a Milvus server, not a local Milvus Lite file"
    assert settings.kafka.sasl_password is not None and settings.redis.url is not None
    assert settings.milvus.token is not None


def test_k8s_envfrom_and_static_membership(k8s: K8s) -> None:
    sources = container(k8s)["envFrom"]
    assert any("configMapRef" in s for s in sources)  # secrets: test_k8s_secrets_are_mounted_files_never_environment
    env = {item["name"]: item for item in container(k8s)["env"]}
    field = env["INGESTOR_KAFKA__GROUP_INSTANCE_ID"]["valueFrom"]["fieldRef"]["fieldPath"]
    assert field == "metadata.name"
    assert env["INGESTOR_METRICS__HOST"]["value"] == "0.0.0.0"


def test_k8s_secret_holds_placeholders_only(k8s: K8s) -> None:
    secrets = k8s["secret.yaml"]
    app_secret = one(k8s, "Secret", "ingestor-secrets")
    required = {"milvus-token", "redis-url", "kafka-sasl-password"}
    assert required <= set(app_secret["stringData"])
    text = (K8S_DIR / "secret.yaml").read_text(encoding="utf-8")
    assert "EXAMPLE" in text.upper()
    for secret in secrets:
        assert "data" not in secret, "base64 `data` hides what is committed; use stringData placeholders"
        for key in ("milvus-token", "redis-url", "kafka-sasl-password", "password"):
            if key in secret["stringData"]:
                assert "CHANGE-ME" in secret["stringData"][key], f"{key} looks like a real secret"


def test_k8s_secrets_are_mounted_files_never_environment(k8s: K8s) -> None:
    assert not any("secretRef" in s for s in container(k8s).get("envFrom", []))
    assert not any("secretKeyRef" in item.get("valueFrom", {}) for item in container(k8s).get("env", []))
    mounts = secret_mounts(k8s)
    assert mounts, "the Secret is not mounted"
    env = pod_env(k8s)
    pointed = {v for k, v in env.items() if k.endswith("_FILE")}
    for mount, files in mounts.items():
        assert {f"{mount}/{name}" for name in files} == pointed, "every secret file is read, and only those"
    for volume in pod_spec(k8s)["volumes"]:
        if "secret" in volume:
            assert volume["secret"]["defaultMode"] & 0o007 == 0, "secret files must not be world-readable"


def test_k8s_gpu_resources(k8s: K8s) -> None:
    resources = container(k8s)["resources"]
    limits, requests = resources["limits"], resources["requests"]
    assert int(limits["nvidia.com/gpu"]) == 1
    if "nvidia.com/gpu" in requests:  # extended resources: requests must equal limits
        assert int(requests["nvidia.com/gpu"]) == 1
    for key in ("cpu", "memory"):
        assert quantity(requests[key]) <= quantity(limits[key]), key
    spec = pod_spec(k8s)
    assert spec["nodeSelector"], "GPU pods must be placed on GPU nodes"
    assert any(t.get("key") == "nvidia.com/gpu" for t in spec["tolerations"])


def test_k8s_probes_use_the_metrics_port(k8s: K8s, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    c = container(k8s)
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports.get("metrics") == pod_settings(k8s, monkeypatch, tmp_path).metrics.port
    paths = {"livenessProbe": "/healthz", "readinessProbe": "/readyz", "startupProbe": "/healthz"}
    for probe, path in paths.items():
        get = c[probe]["httpGet"]
        assert get["path"] == path, probe
        port = get["port"]
        assert port in ports or port in ports.values(), f"{probe}: port {port} is not a container port"
    startup = c["startupProbe"]
    # The model load must fit in the startup window, or liveness restarts the pod forever.
    assert startup["failureThreshold"] * startup.get("periodSeconds", 10) >= 300


def test_k8s_termination_grace_covers_shutdown(k8s: K8s, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    settings = pod_settings(k8s, monkeypatch, tmp_path)
    assert "INGESTOR_RUNTIME__SHUTDOWN_TIMEOUT_S" in one(k8s, "ConfigMap")["data"]
    assert pod_spec(k8s)["terminationGracePeriodSeconds"] > settings.runtime.shutdown_timeout_s


def test_k8s_non_root_matches_image(k8s: K8s) -> None:
    spec = pod_spec(k8s)
    pod_security = spec["securityContext"]
    assert pod_security["runAsNonRoot"] is True
    image_uid = [rest for word, rest in final_stage() if word == "USER"][-1].split(":")[0]
    assert str(pod_security["runAsUser"]) == image_uid
    security = container(k8s)["securityContext"]
    assert security["allowPrivilegeEscalation"] is False
    if security.get("readOnlyRootFilesystem"):
        # Everything the process writes must then be on a volume.
        mounts = [m["mountPath"] for m in container(k8s).get("volumeMounts", [])]
        volumes = {v["name"] for v in spec.get("volumes", [])}
        assert all(m["name"] in volumes for m in container(k8s)["volumeMounts"])
        hf_home = dockerfile_env(final_stage())["HF_HOME"]
        for path in ("/tmp", hf_home):
            assert any(path == m or path.startswith(m.rstrip("/") + "/") for m in mounts), f"{path} is read-only"


def test_k8s_image_pinned_and_replicas_left_to_keda(k8s: K8s) -> None:
    image = container(k8s)["image"]
    repo, sep, tag = image.rpartition(":")
    assert sep and tag and "/" not in tag and tag != "latest"
    deployment = one(k8s, "Deployment", WORKER)
    assert selects(deployment["spec"]["selector"]["matchLabels"], pod_labels(k8s))
    assert "replicas" not in deployment["spec"], "a fixed replica count fights the KEDA autoscaler"


def test_k8s_service_selects_pods_and_targets_metrics(k8s: K8s) -> None:
    service = one(k8s, "Service", "ingestor-metrics")
    assert service["spec"].get("type", "ClusterIP") == "ClusterIP"
    assert selects(service["spec"]["selector"], pod_labels(k8s))
    ports = {p["name"]: p for p in service["spec"]["ports"]}
    container_ports = {p["name"]: p["containerPort"] for p in container(k8s)["ports"]}
    metrics = ports["metrics"]
    target = metrics.get("targetPort", metrics["port"])
    number = container_ports.get(target, target)
    assert number in container_ports.values(), f"targetPort {target} is no container port"
    annotations = service["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == number


def test_k8s_servicemonitor_selects_service(k8s: K8s) -> None:
    monitor, service = one(k8s, "ServiceMonitor", "ingestor"), one(k8s, "Service", "ingestor-metrics")
    assert selects(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])
    service_ports = {p["name"] for p in service["spec"]["ports"]}
    for endpoint in monitor["spec"]["endpoints"]:
        assert endpoint["port"] in service_ports
        assert endpoint.get("path", "/metrics") == "/metrics"
    names = monitor["spec"].get("namespaceSelector", {}).get("matchNames")
    if names is not None:
        assert service["metadata"]["namespace"] in names


def test_k8s_pdb_selects_pods(k8s: K8s) -> None:
    pdb = one(k8s, "PodDisruptionBudget")["spec"]
    assert pdb["maxUnavailable"] == 1 and "minAvailable" not in pdb
    assert selects(pdb["selector"]["matchLabels"], pod_labels(k8s))


def test_k8s_keda_scales_the_consumer_group(k8s: K8s, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    scaled = one(k8s, "ScaledObject", "ingestor")["spec"]
    deployment = one(k8s, "Deployment", WORKER)
    assert scaled["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert scaled["scaleTargetRef"].get("kind", "Deployment") == "Deployment"
    assert 1 <= scaled["minReplicaCount"] <= scaled["maxReplicaCount"] <= 8
    # The comment that justifies the cap must state the partition count it relies on.
    stated = re.findall(r"(\d+) partitions", (K8S_DIR / "keda-scaledobject.yaml").read_text(encoding="utf-8"))
    assert stated and all(scaled["maxReplicaCount"] <= int(n) for n in stated)

    triggers = scaled["triggers"]
    assert len(triggers) == 1 and triggers[0]["type"] == "kafka"
    meta = triggers[0]["metadata"]
    settings = pod_settings(k8s, monkeypatch, tmp_path)
    assert meta["bootstrapServers"] == settings.kafka.bootstrap_servers
    assert meta["consumerGroup"] == settings.kafka.group_id
    assert settings.kafka.topics == [meta["topic"]], "KEDA must watch the topic the workers consume"
    assert int(meta["lagThreshold"]) > 0
    assert meta.get("offsetResetPolicy", "latest") == settings.kafka.auto_offset_reset
    assert meta.get("allowIdleConsumers", "false") == "false"


def test_k8s_keda_authenticates_like_the_workers(k8s: K8s, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    trigger = one(k8s, "ScaledObject", "ingestor")["spec"]["triggers"][0]
    settings = pod_settings(k8s, monkeypatch, tmp_path)
    if settings.kafka.security_protocol == "PLAINTEXT":
        return  # no auth needed; nothing to agree on
    auth = one(k8s, "TriggerAuthentication", trigger["authenticationRef"]["name"])
    params: dict[str, str] = {}
    for ref in auth["spec"]["secretTargetRef"]:
        secret = one(k8s, "Secret", ref["name"])
        assert ref["key"] in secret["stringData"], f"{ref['name']} has no key {ref['key']}"
        params[ref["parameter"]] = secret["stringData"][ref["key"]]
    if settings.kafka.security_protocol.startswith("SASL"):
        keda_modes = {
            "PLAIN": "plaintext",
            "SCRAM-SHA-256": "scram_sha256",
            "SCRAM-SHA-512": "scram_sha512",
            "GSSAPI": "gssapi",
            "OAUTHBEARER": "oauthbearer",
        }
        assert params["sasl"] == keda_modes[settings.kafka.sasl_mechanism.upper()]
        assert params["username"] == settings.kafka.sasl_username
        assert params["password"] == settings.kafka.sasl_password.get_secret_value()
    assert (params.get("tls") == "enable") == settings.kafka.security_protocol.endswith("SSL")


# --- The query side (`ingestor serve`) ---------------------------------------------------------------


# What decides a collection's model identity (`ingestor.identity`): the query side must agree.
def identity_settings(settings: Settings) -> tuple[Any, ...]:
    return (
        settings.model.name,
        settings.model.backend,
        settings.model.precision,
        settings.model.max_seq_length,
        settings.chunking.enabled,
        settings.chunking.max_tokens,
        settings.chunking.overlap_tokens,
        settings.milvus.uri,
        settings.milvus.collection,
    )


def test_compose_serve_runs_the_workers_model_on_its_published_port(
    compose_services: dict[str, Any], prometheus_config: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    serve = compose_services["ingestor-serve"]
    assert serve["command"] == ["serve"] and serve.get("build"), "the same image as the workers, another command"
    settings = compose_settings(monkeypatch, serve)
    worker = compose_settings(monkeypatch, compose_services["ingestor"])
    assert identity_settings(settings) == identity_settings(worker)
    assert settings.serve.host == "0.0.0.0", "bound to loopback inside the container"
    assert str(settings.serve.port) in {c for _, _, c in published_ports(serve)}
    assert f":{settings.serve.port}/healthz" in healthcheck_text(serve)
    deps = depends_of(serve)
    assert {d for d, spec in deps.items() if spec.get("condition") == "service_healthy"} == {"redis", "milvus"}
    assert "kafka" not in deps, "the query side needs no Kafka"
    [job] = [j for j in prometheus_config["scrape_configs"] if j["job_name"] == "ingestor-serve"]
    [sd] = job["dns_sd_configs"]
    assert sd["names"] == ["ingestor-serve"] and sd["port"] == settings.serve.port


def test_k8s_serve_runs_the_workers_model_and_probes_its_port(
    k8s: K8s, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    c = container(k8s, SERVE)
    assert c["args"] == ["serve"] and c["image"] == container(k8s)["image"]
    settings = pod_settings(k8s, monkeypatch, tmp_path / "serve", SERVE)
    worker = pod_settings(k8s, monkeypatch, tmp_path / "worker")
    assert identity_settings(settings) == identity_settings(worker)
    assert settings.model.device == "cpu" and settings.serve.host == "0.0.0.0"
    assert settings.redis.url is not None and settings.milvus.token is not None
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"http": settings.serve.port}
    for probe, path in {"livenessProbe": "/healthz", "readinessProbe": "/readyz", "startupProbe": "/healthz"}.items():
        assert c[probe]["httpGet"] == {"path": path, "port": "http"}, probe
    startup = c["startupProbe"]
    assert startup["failureThreshold"] * startup.get("periodSeconds", 10) >= 300
    assert pod_spec(k8s, SERVE)["terminationGracePeriodSeconds"] > settings.runtime.shutdown_timeout_s
    assert "nvidia.com/gpu" not in c["resources"]["limits"], "CPU by default; serve-gpu/ adds a GPU"
    # Secrets as files only, and every file mounted is one a setting reads.
    assert not any("secretRef" in s for s in c.get("envFrom", []))
    env = pod_env(k8s, SERVE)
    pointed = {v for k, v in env.items() if k.endswith("_FILE")}
    assert {f"{m}/{f}" for m, files in secret_mounts(k8s, SERVE).items() for f in files} == pointed
    spec = pod_spec(k8s, SERVE)
    assert spec["securityContext"]["runAsUser"] == pod_spec(k8s)["securityContext"]["runAsUser"]
    assert "replicas" not in one(k8s, "Deployment", SERVE)["spec"], "a fixed replica count fights KEDA"


def test_k8s_serve_service_and_monitor_select_the_servers_only(k8s: K8s) -> None:
    service = one(k8s, "Service", SERVE)
    serve_pods, worker_pods = pod_labels(k8s, SERVE), pod_labels(k8s)
    assert selects(service["spec"]["selector"], serve_pods) and not selects(service["spec"]["selector"], worker_pods)
    workers = one(k8s, "Service", "ingestor-metrics")
    assert not selects(workers["spec"]["selector"], serve_pods)
    [port] = service["spec"]["ports"]
    assert (
        port["targetPort"] == "http" and int(service["metadata"]["annotations"]["prometheus.io/port"]) == port["port"]
    )
    monitor = one(k8s, "ServiceMonitor", SERVE)
    assert selects(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])
    assert not selects(
        one(k8s, "ServiceMonitor", "ingestor")["spec"]["selector"]["matchLabels"], service["metadata"]["labels"]
    )
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == ["http"]


def test_k8s_serve_scales_on_its_queue_depth(k8s: K8s, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    scaled = one(k8s, "ScaledObject", SERVE)["spec"]
    assert scaled["scaleTargetRef"]["name"] == SERVE
    assert 1 <= scaled["minReplicaCount"] <= scaled["maxReplicaCount"]
    [trigger] = scaled["triggers"]
    assert trigger["type"] == "prometheus"
    query = trigger["metadata"]["query"]
    check_promql(query, "serve-scaledobject.yaml")
    assert promql_metrics(query) == {"ingestor_serve_queued_tokens"}
    settings = pod_settings(k8s, monkeypatch, tmp_path, SERVE)
    assert 0 < int(trigger["metadata"]["threshold"]) < settings.serve.max_queued_tokens, "scale before 429s"


def test_k8s_serve_gpu_overlay_patches_the_server_onto_a_gpu() -> None:
    overlay = K8S_DIR / "serve-gpu"
    kustomization = yaml.safe_load((overlay / "kustomization.yaml").read_text(encoding="utf-8"))
    assert kustomization["resources"] == [".."]
    [patch] = kustomization["patches"]
    assert patch["target"] == {"kind": "Deployment", "name": SERVE}
    spec = yaml.safe_load((overlay / patch["path"]).read_text(encoding="utf-8"))["spec"]["template"]["spec"]
    [c] = spec["containers"]
    assert c["name"] == container(k8s_files(), SERVE)["name"]
    assert {e["name"]: e["value"] for e in c["env"]}["INGESTOR_MODEL__DEVICE"] == "cuda"
    assert int(c["resources"]["limits"]["nvidia.com/gpu"]) == 1
    assert any(t.get("key") == "nvidia.com/gpu" for t in spec["tolerations"]) and spec["nodeSelector"]
