"""docker-compose.yml, the Dockerfile, deploy/k8s, deploy/prometheus, deploy/clickhouse and
the Grafana provisioning agree with the code and with each other: configuration names,
ports, mounted files, health checks, users. No Docker needed: the files are parsed."""

from __future__ import annotations

import importlib.util
import re
import shlex
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from journeystream.cli import _parser
from journeystream.config import _SETTINGS, PREFIX, Settings
from journeystream.kafka_options import kafka_options

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
SECURED_COMPOSE = ROOT / "docker-compose.secured.yml"
DOCKERFILE = ROOT / "Dockerfile"
K8S = ROOT / "deploy" / "k8s"
PROMETHEUS = ROOT / "deploy" / "prometheus" / "prometheus.yml"
USERS_XML = ROOT / "deploy" / "clickhouse" / "users.d" / "journeystream.xml"
GRAFANA = ROOT / "grafana"

DEFAULT_PORT = int(_SETTINGS["http_port"].default)
REQUIRED_SERVICES = {"kafka", "clickhouse", "grafana", "prometheus", "alertmanager", "worker", "simulator"}


def known_variables() -> set[str]:
    """Every JOURNEYSTREAM_* name the code reads: the settings table, plus names read
    directly from the environment (e.g. JOURNEYSTREAM_SCHEMAS_DIR in sinks/store.py)."""
    names = {PREFIX + setting.env for setting in _SETTINGS.values()}
    for path in (ROOT / "src" / "journeystream").rglob("*.py"):
        names |= set(re.findall(r"[\"'](JOURNEYSTREAM_[A-Z0-9_]+)[\"']", path.read_text()))
    return names


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def k8s() -> dict[str, dict[str, Any]]:
    """kind/name -> manifest, for every manifest under deploy/k8s."""
    found = {}
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and "kind" in doc and "metadata" in doc:
                found[f"{doc['kind']}/{doc['metadata']['name']}"] = doc
    return found


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    found = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            found.append((keyword.upper(), rest.strip()))
    return found


def dockerfile_env() -> dict[str, str]:
    env = {}
    for keyword, rest in dockerfile_instructions():
        if keyword == "ENV":
            for item in shlex.split(rest):
                key, _, value = item.partition("=")
                env[key] = value
    return env


def compose_defaults(value: str) -> str:
    """`${VAR:-default}` -> default (what compose uses when VAR is unset)."""
    return re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", value)


# -- compose ----------------------------------------------------------------------------------


def test_compose_has_every_service_with_a_healthcheck(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) >= REQUIRED_SERVICES
    for name, service in services.items():
        check = service.get("healthcheck")
        assert check and check.get("test") and not check.get("disable"), f"{name}: no health check"
        for needed, condition in (service.get("depends_on") or {}).items():
            assert needed in services, f"{name} depends on unknown {needed}"
            assert condition["condition"] in (
                "service_healthy",
                "service_started",
                "service_completed_successfully",
            )


def test_compose_images_target_the_agreed_versions(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert services["kafka"]["image"].startswith("apache/kafka:4.0")
    assert services["clickhouse"]["image"].startswith("clickhouse/clickhouse-server:")
    assert services["grafana"]["image"].startswith("grafana/grafana:11.")
    assert "grafana-clickhouse-datasource" in environment(services["grafana"])["GF_INSTALL_PLUGINS"]
    kafka = environment(services["kafka"])
    assert "controller" in kafka["KAFKA_PROCESS_ROLES"]  # KRaft, no ZooKeeper
    for name in ("worker", "simulator"):
        build = services[name]["build"]
        assert (ROOT / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE


def test_compose_uses_only_real_settings(compose: dict[str, Any]) -> None:
    known = known_variables()
    used = set()
    for name, service in compose["services"].items():
        for key in environment(service):
            if key.startswith(PREFIX):
                assert key in known, f"{name}: {key} is not a journeystream setting"
                used.add(key)
    assert {
        "JOURNEYSTREAM_KAFKA_BOOTSTRAP",
        "JOURNEYSTREAM_CLICKHOUSE_DSN",
        "JOURNEYSTREAM_HTTP_HOST",
    } <= used


def test_compose_settings_parse(compose: dict[str, Any]) -> None:
    """The worker's and simulator's environments are valid settings (Settings.from_env)."""
    for name in ("worker", "simulator"):
        env = {k: compose_defaults(v) for k, v in environment(compose["services"][name]).items()}
        settings = Settings.from_env(env)
        assert settings.kafka_bootstrap.split(":")[0] in compose["services"]
    worker = Settings.from_env(
        {k: compose_defaults(v) for k, v in environment(compose["services"]["worker"]).items()}
    )
    assert worker.http_host == "0.0.0.0"
    dsn = urlsplit(worker.clickhouse_dsn)
    assert dsn.hostname in compose["services"] and dsn.port == 8123


def test_compose_commands_are_valid_cli_calls(compose: dict[str, Any]) -> None:
    parser = _parser()
    assert compose["services"]["worker"]["command"] == ["worker"]
    command = compose["services"]["simulator"]["command"]
    args = parser.parse_args(command)  # unknown flags exit with SystemExit
    assert args.to == "kafka" and args.rate == 200 and args.start == "now"


def test_secured_compose_override_reaches_kafka_over_sasl_ssl(
    compose: dict[str, Any], tmp_path: Path
) -> None:
    """docker-compose.secured.yml: the clients' SASL_SSL settings name compose secrets that
    deploy/kafka/dev-secrets.sh makes, the broker serves SASL_SSL where they connect, and the
    one-shot kafka-users service creates their SCRAM user before they start."""
    secured = yaml.safe_load(SECURED_COMPOSE.read_text())
    services = secured["services"]
    assert set(services) - {"kafka-users"} <= set(compose["services"])
    # the secrets: made by dev-secrets.sh under the folder the file names
    made = tmp_path / "compose-secrets"
    done = subprocess.run(
        [str(ROOT / "deploy" / "kafka" / "dev-secrets.sh"), str(made)], capture_output=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    files = {}
    for name, secret in secured["secrets"].items():
        source = Path(secret["file"])
        assert source.parent == Path(".local/compose-secrets"), f"{name}: {source}"
        assert (made / source.name).is_file(), f"{name}: dev-secrets.sh makes no {source.name}"
        files[name] = (made / source.name).read_text()
    kafka = {**environment(compose["services"]["kafka"]), **environment(services["kafka"])}
    for name in ("worker", "simulator"):
        service = services[name]
        env = {**environment(compose["services"][name]), **environment(service)}
        env = {k: compose_defaults(v) for k, v in env.items()}
        assert all(key in known_variables() for key in env if key.startswith(PREFIX))
        mounted = {"/run/secrets": {secret: files[secret] for secret in service["secrets"]}}
        resolved, pointing = materialize(env, mounted, tmp_path / name)
        assert pointing == {"JOURNEYSTREAM_KAFKA_SASL_PASSWORD_FILE", "JOURNEYSTREAM_KAFKA_SSL_CAFILE"}
        settings = Settings.from_env(resolved)
        assert settings.kafka_security_protocol == "SASL_SSL"
        kafka_options(settings)  # the CA file is a usable PEM CA
        # the broker advertises a SASL_SSL listener at the bootstrap address
        advertised = dict(
            reversed(item.split("://", 1)) for item in kafka["KAFKA_ADVERTISED_LISTENERS"].split(",")
        )
        protocols = dict(item.split(":") for item in kafka["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
        assert protocols[advertised[settings.kafka_bootstrap]] == "SASL_SSL"
        assert settings.kafka_sasl_mechanism in kafka["KAFKA_SASL_ENABLED_MECHANISMS"].split(",")
        assert service["depends_on"]["kafka-users"]["condition"] == "service_completed_successfully"
        user_command = " ".join(services["kafka-users"]["command"])
        assert f"--entity-name {settings.kafka_sasl_username}" in user_command
        assert (
            f"{settings.kafka_sasl_mechanism}=[password=$$(cat /run/secrets/kafka-password)]" in user_command
        )
        assert "kafka-password" in services["kafka-users"]["secrets"]
    # every SASL_SSL listener has its JAAS entry; the keystore is a mounted secret
    for listener, protocol in protocols.items():
        if protocol.startswith("SASL_"):
            jaas = f"KAFKA_LISTENER_NAME_{listener.replace('_', '__')}_SCRAM___SHA___512_SASL_JAAS_CONFIG"
            assert "ScramLoginModule required" in kafka[jaas], listener
    keystore = kafka["KAFKA_SSL_KEYSTORE_LOCATION"]
    assert keystore.startswith("/run/secrets/") and keystore.split("/")[-1] in services["kafka"]["secrets"]
    assert kafka["KAFKA_SSL_KEYSTORE_TYPE"] == "PEM"
    # the host listener stays on 127.0.0.1 only
    assert all(str(port).startswith("127.0.0.1:") for port in compose["services"]["kafka"]["ports"])


def test_compose_mounted_paths_exist(compose: dict[str, Any]) -> None:
    named = set(compose.get("volumes") or {})
    mounted = 0
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0] if isinstance(volume, str) else volume["source"]
            if source in named:
                continue
            assert source.startswith("./"), f"{name}: {source} is neither a named volume nor a repo path"
            assert (ROOT / source).exists(), f"{name}: {source} does not exist"
            mounted += 1
    assert mounted >= 5


def container_port(service: dict[str, Any]) -> set[int]:
    return {int(str(port).rsplit(":", 1)[-1].split("/")[0]) for port in service.get("ports", [])}


def test_worker_port_is_the_same_everywhere(compose: dict[str, Any], k8s: dict[str, dict[str, Any]]) -> None:
    worker = compose["services"]["worker"]
    port = int(environment(worker).get("JOURNEYSTREAM_HTTP_PORT", DEFAULT_PORT))
    assert port == DEFAULT_PORT == int(dockerfile_env()["JOURNEYSTREAM_HTTP_PORT"])
    assert f"EXPOSE {port}" in DOCKERFILE.read_text()
    assert port in container_port(worker)
    assert f"127.0.0.1:{port}/ready" in " ".join(worker["healthcheck"]["test"])
    # Prometheus scrapes worker:<port>, a compose service
    scrape = yaml.safe_load(PROMETHEUS.read_text())
    targets = [
        target
        for job in scrape["scrape_configs"]
        if job["job_name"] == "journeystream"
        for static in job["static_configs"]
        for target in static["targets"]
    ]
    assert targets == [f"worker:{port}"]
    # Kubernetes: ConfigMap, container port, probes, service and scrape annotations
    config = k8s["ConfigMap/journeystream-config"]["data"]
    assert int(config["JOURNEYSTREAM_HTTP_PORT"]) == port
    pod = k8s["StatefulSet/journeystream-worker"]["spec"]["template"]
    container = pod["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["http"] == port
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert container[probe]["httpGet"]["port"] in ("http", port)
    service = k8s["Service/journeystream-worker"]
    assert service["spec"]["ports"][0]["port"] == port
    assert service["spec"]["ports"][0]["targetPort"] in ("http", port)
    assert int(pod["metadata"]["annotations"]["prometheus.io/port"]) == port


def test_prometheus_rules_and_alertmanager_are_wired(compose: dict[str, Any]) -> None:
    scrape = yaml.safe_load(PROMETHEUS.read_text())
    for rule_file in scrape["rule_files"]:
        assert (PROMETHEUS.parent / rule_file).exists()
    alertmanagers = [
        t for am in scrape["alerting"]["alertmanagers"] for s in am["static_configs"] for t in s["targets"]
    ]
    for target in alertmanagers:
        host, port = target.split(":")
        assert host in compose["services"]
        assert int(port) in container_port(compose["services"][host])
    # the prometheus service mounts the directory holding prometheus.yml and the rules
    volumes = compose["services"]["prometheus"]["volumes"]
    assert any(v.startswith("./deploy/prometheus:") for v in volumes)


# -- Dockerfile -------------------------------------------------------------------------------


def test_dockerfile_copies_existing_sources_and_runs_the_cli() -> None:
    instructions = dockerfile_instructions()
    assert instructions[0] == ("FROM", "python:3.11-slim")
    copies = [rest for keyword, rest in instructions if keyword == "COPY"]
    assert copies
    for rest in copies:
        *sources, _destination = [part for part in rest.split() if not part.startswith("--")]
        for source in sources:
            assert (ROOT / source).exists(), f"COPY {source}: missing"
    assert any(keyword == "RUN" and "pip install ." in rest for keyword, rest in instructions)
    env = dockerfile_env()
    known = known_variables()
    assert all(key in known for key in env if key.startswith(PREFIX))
    assert (ROOT / env["JOURNEYSTREAM_SCHEMAS_DIR"].removeprefix("/app/")).is_dir()
    assert env["JOURNEYSTREAM_HTTP_HOST"] == "0.0.0.0"
    assert ("ENTRYPOINT", '["journeystream"]') in instructions
    scripts = re.search(r"\[project\.scripts\]\s*\n(.*?)\n\n", (ROOT / "pyproject.toml").read_text(), re.S)
    assert scripts and "journeystream =" in scripts.group(1)
    ignored = (ROOT / ".dockerignore").read_text().split()
    for needed in ("!src", "!schemas", "!pyproject.toml", "!README.md"):
        assert needed in ignored


# -- ClickHouse users -----------------------------------------------------------------------


def test_clickhouse_users_match_compose_and_grafana(compose: dict[str, Any]) -> None:
    tree = ET.parse(USERS_XML).getroot()
    users = {user.tag: user for user in tree.find("users")}
    profiles = {profile.tag: profile for profile in tree.find("profiles")}
    clickhouse_env = environment(compose["services"]["clickhouse"])
    for user in users.values():
        password = user.find("password")
        assert password is not None and password.get("from_env") in clickhouse_env
    # the worker writes as a user that exists, with the password the server gets
    dsn = urlsplit(environment(compose["services"]["worker"])["JOURNEYSTREAM_CLICKHOUSE_DSN"])
    assert dsn.username in users
    writer_password_env = users[dsn.username].find("password").get("from_env")
    assert dsn.password == clickhouse_env[writer_password_env]
    # Grafana reads as the read-only user
    grafana_env = environment(compose["services"]["grafana"])
    reader = users[grafana_env["CLICKHOUSE_GRAFANA_USER"]]
    profile = profiles[reader.find("profile").text]
    assert profile.find("readonly").text in ("1", "2")
    grants = [query.text for query in reader.find("grants")]
    assert grants and all(grant.startswith("GRANT SELECT ON ") for grant in grants)
    assert "GRANT SELECT ON journeystream.*" in grants
    reader_password_env = reader.find("password").get("from_env")
    assert grafana_env["CLICKHOUSE_GRAFANA_PASSWORD"] == clickhouse_env[reader_password_env]
    mounts = compose["services"]["clickhouse"]["volumes"]
    assert any(
        v.startswith("./deploy/clickhouse/users.d/journeystream.xml:/etc/clickhouse-server/users.d/")
        for v in mounts
    )


def test_replicated_ddl_is_generated_from_the_schemas() -> None:
    spec = importlib.util.spec_from_file_location(
        "replicated_generate", ROOT / "deploy" / "clickhouse" / "replicated" / "generate.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--check"]) == 0, "run deploy/clickhouse/replicated/generate.py"
    for name, text in module.render().items():
        assert "ReplicatedReplacingMergeTree(" in text and "ENGINE = Distributed(" in text
        assert " ON CLUSTER '${cluster}'" in text
        schema = (ROOT / "schemas" / "clickhouse" / name).read_text()
        columns = re.findall(r"^\s{4}(\w+)\s+\S", schema, re.M)
        for column in columns:
            assert re.search(rf"^\s{{4}}{column}\s", text, re.M), f"{name}: column {column} missing"


# -- Grafana provisioning -------------------------------------------------------------------


def test_grafana_provisioning_points_at_the_dashboards(compose: dict[str, Any]) -> None:
    grafana = compose["services"]["grafana"]
    mounts = {}
    for volume in grafana["volumes"]:
        source, target = volume.split(":")[:2]
        mounts[target] = source
    assert mounts["/etc/grafana/provisioning"] == "./grafana/provisioning"
    providers = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "journeystream.yaml").read_text())
    for provider in providers["providers"]:
        path = provider["options"]["path"]
        source = next(
            (src for target, src in mounts.items() if path == target or path.startswith(target + "/")), None
        )
        assert source, f"dashboard provider path {path} is not mounted into grafana"
        folder = ROOT / source / path[len(next(t for t in mounts if mounts[t] == source)) :].lstrip("/")
        assert folder.is_dir() and sorted(folder.glob("*.json")), f"{folder}: no dashboards"
    home = environment(grafana)["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    target = next(t for t in mounts if home.startswith(t + "/"))
    assert (ROOT / mounts[target] / home[len(target) + 1 :]).is_file()


def test_grafana_datasources_are_provisioned_from_set_variables(compose: dict[str, Any]) -> None:
    path = GRAFANA / "provisioning" / "datasources" / "journeystream.yaml"
    text = path.read_text()
    sources = {s["uid"]: s for s in yaml.safe_load(text)["datasources"]}
    assert sources["clickhouse"]["type"] == "grafana-clickhouse-datasource"
    assert sources["prometheus"]["type"] == "prometheus"
    env = environment(compose["services"]["grafana"])
    for variable in re.findall(r"\$\{(\w+)\}", text):
        assert variable in env, f"grafana service does not set {variable}"
    assert urlsplit(env["PROMETHEUS_URL"]).hostname in compose["services"]
    assert env["CLICKHOUSE_HOST"] in compose["services"]
    assert sources["clickhouse"]["jsonData"]["port"] in container_port(compose["services"]["clickhouse"])


# -- Kubernetes -------------------------------------------------------------------------------


def materialize(
    settings_env: dict[str, str], files: dict[str, dict[str, str]], root: Path
) -> tuple[dict[str, str], set[str]]:
    """Write `files` (mount path -> {file name: content}) under `root` and point the settings
    that name them there. Returns the rewritten settings and the names of those settings;
    a setting naming a path under a mount but not one of its files fails the test."""
    env = dict(settings_env)
    pointing = set()
    for mount, contents in files.items():
        for name, content in contents.items():
            target = root / mount.lstrip("/") / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(content)
        for key, value in settings_env.items():
            if value.startswith(mount.rstrip("/") + "/"):
                name = value[len(mount.rstrip("/")) + 1 :]
                assert name in contents, f"{key}={value}: no file {name!r} in what is mounted at {mount}"
                env[key] = str(root / mount.lstrip("/") / name)
                pointing.add(key)
    return env, pointing


FILE_SETTINGS = {
    "JOURNEYSTREAM_KAFKA_SASL_PASSWORD_FILE",
    "JOURNEYSTREAM_KAFKA_SSL_CAFILE",
    "JOURNEYSTREAM_CLICKHOUSE_PASSWORD_FILE",
    "JOURNEYSTREAM_CLICKHOUSE_CA_FILE",
}


def test_k8s_manifests_use_real_settings_and_secrets(k8s: dict[str, dict[str, Any]], tmp_path: Path) -> None:
    known = known_variables()
    config = k8s["ConfigMap/journeystream-config"]["data"]
    for key in config:
        assert key in known, f"{key} is not a journeystream setting"
    # no secret in the ConfigMap: passwords come from files of mounted Secrets
    assert urlsplit(config["JOURNEYSTREAM_CLICKHOUSE_DSN"]).password is None
    assert not [key for key in config if key.endswith("PASSWORD")]
    statefulset = k8s["StatefulSet/journeystream-worker"]
    pod = statefulset["spec"]["template"]["spec"]
    container = pod["containers"][0]
    refs = {ref.get("configMapRef", ref.get("secretRef"))["name"] for ref in container["envFrom"]}
    assert refs == {"journeystream-config"}
    secret_volumes = {v["name"]: v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
    assert set(secret_volumes.values()) == {"journeystream-kafka", "journeystream-clickhouse"}
    mounted = {}
    for mount in container["volumeMounts"]:
        if mount["name"] in secret_volumes:
            assert mount.get("readOnly") is True
            mounted[mount["mountPath"]] = k8s[f"Secret/{secret_volumes[mount['name']]}"]["stringData"]
    for volume in pod["volumes"]:
        if "secret" in volume:
            assert volume["secret"]["defaultMode"] & 0o007 == 0, "secret files readable by others"
    env, pointing = materialize(config, mounted, tmp_path)
    assert pointing == FILE_SETTINGS, "every secret setting names a file of a mounted Secret"
    settings = Settings.from_env(env)
    assert settings.kafka_security_protocol == "SASL_SSL"
    assert settings.kafka_sasl_password == "CHANGE-ME" and settings.clickhouse_password == "CHANGE-ME"
    assert urlsplit(settings.clickhouse_dsn).scheme == "https"
    assert settings.kafka_ssl_check_hostname is True
    assert settings.store == "rocksdb://"
    assert settings.http_host == "0.0.0.0"
    assert statefulset["spec"]["replicas"] <= settings.partitions, "workers beyond partitions stay idle"
    for item in container.get("env", []):
        assert item["name"] in known
    # RocksDB state on the pod's own volume, mounted at DATA_DIR
    claims = {claim["metadata"]["name"] for claim in statefulset["spec"]["volumeClaimTemplates"]}
    mounts = {mount["name"]: mount["mountPath"] for mount in container["volumeMounts"]}
    assert any(mounts.get(claim) == settings.data_dir for claim in claims)
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    resources = container["resources"]
    assert resources["requests"]["cpu"] and resources["requests"]["memory"] and resources["limits"]["memory"]
    # one process per core the container may use: more would share cores, fewer leave one idle
    assert settings.processes == int(resources["limits"]["cpu"]), "JOURNEYSTREAM_PROCESSES = the CPU limit"


def test_k8s_objects_select_each_other(k8s: dict[str, dict[str, Any]]) -> None:
    statefulset = k8s["StatefulSet/journeystream-worker"]
    labels = statefulset["spec"]["template"]["metadata"]["labels"]
    selector = statefulset["spec"]["selector"]["matchLabels"]
    assert selector.items() <= labels.items()
    service = k8s[f"Service/{statefulset['spec']['serviceName']}"]
    assert service["spec"]["clusterIP"] == "None"  # headless: stable pod names
    assert service["spec"]["selector"].items() <= labels.items()
    pdb = k8s["PodDisruptionBudget/journeystream-worker"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    for resource in kustomization["resources"]:
        assert (K8S / resource).exists()
    image = statefulset["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image in {entry["name"] for entry in kustomization["images"]}
