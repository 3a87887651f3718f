"""Kafka, ClickHouse and Alertmanager security settings: what is accepted, what is refused
(one line naming the setting), the client options they give, and that no secret is shown."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from pathlib import Path

import pytest

from journeystream.cli import main
from journeystream.config import Settings
from journeystream.errors import ConfigError, KafkaConnectError
from journeystream.kafka_options import bootstrap_servers, check_kafka, kafka_options
from journeystream.supervise import free_port
from tests.tls import Authority, Certificate, issue, make_ca

SECRET = "s3cr3t-Kafka-pw"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[Authority, Certificate]:
    folder = tmp_path_factory.mktemp("pki")
    ca = make_ca(folder, "ca")
    return ca, issue(ca, folder, "client", usage="clientAuth")


@pytest.fixture
def password_file(tmp_path: Path) -> Path:
    path = tmp_path / "kafka-password"
    path.write_text(SECRET + "\n")  # as `echo secret > file` writes it
    return path


def sasl_ssl_env(password_file: Path, ca: Path, **extra: str) -> dict[str, str]:
    env = {
        "JOURNEYSTREAM_KAFKA_BOOTSTRAP": "kafka-1:9093,kafka-2:9093",
        "JOURNEYSTREAM_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "JOURNEYSTREAM_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "JOURNEYSTREAM_KAFKA_SASL_USERNAME": "journeystream",
        "JOURNEYSTREAM_KAFKA_SASL_PASSWORD_FILE": str(password_file),
        "JOURNEYSTREAM_KAFKA_SSL_CAFILE": str(ca),
    }
    env.update({f"JOURNEYSTREAM_{key.upper()}": value for key, value in extra.items()})
    return env


def test_plaintext_by_default() -> None:
    settings = Settings.from_env({})
    assert settings.kafka_security_protocol == "PLAINTEXT"
    assert settings.kafka_ssl_check_hostname is True
    plain = {"bootstrap_servers": "127.0.0.1:9092", "security_protocol": "PLAINTEXT"}
    assert kafka_options(settings) == plain


def test_sasl_ssl_options_read_the_password_file_and_verify_the_broker(
    password_file: Path, pki: tuple[Authority, Certificate]
) -> None:
    ca, _ = pki
    settings = Settings.from_env(sasl_ssl_env(password_file, ca.cert))
    assert settings.kafka_sasl_password == SECRET  # trailing newline dropped
    options = kafka_options(settings)
    context = options.pop("ssl_context")
    assert options == {
        "bootstrap_servers": "kafka-1:9093,kafka-2:9093",
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "journeystream",
        "sasl_plain_password": SECRET,
    }
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname is True
    assert any("ca" in str(cert.get("subject")) for cert in context.get_ca_certs())


def test_hostname_verification_can_be_turned_off(
    password_file: Path, pki: tuple[Authority, Certificate]
) -> None:
    ca, _ = pki
    env = sasl_ssl_env(password_file, ca.cert, kafka_ssl_check_hostname="false")
    context = kafka_options(Settings.from_env(env))["ssl_context"]
    assert context.check_hostname is False
    assert context.verify_mode == ssl.CERT_REQUIRED  # the certificate itself is still verified


def test_mutual_tls_loads_the_client_certificate(pki: tuple[Authority, Certificate]) -> None:
    ca, client = pki
    env = {
        "JOURNEYSTREAM_KAFKA_SECURITY_PROTOCOL": "SSL",
        "JOURNEYSTREAM_KAFKA_SSL_CAFILE": str(ca.cert),
        "JOURNEYSTREAM_KAFKA_SSL_CERTFILE": str(client.cert),
        "JOURNEYSTREAM_KAFKA_SSL_KEYFILE": str(client.key),
    }
    options = kafka_options(Settings.from_env(env))
    assert options["security_protocol"] == "SSL"
    assert "sasl_plain_password" not in options
    assert isinstance(options["ssl_context"], ssl.SSLContext)


def test_a_key_that_does_not_match_the_certificate_is_refused(
    tmp_path: Path, pki: tuple[Authority, Certificate]
) -> None:
    ca, client = pki
    other = issue(ca, tmp_path, "other", usage="clientAuth")
    env = {
        "JOURNEYSTREAM_KAFKA_SECURITY_PROTOCOL": "SSL",
        "JOURNEYSTREAM_KAFKA_SSL_CERTFILE": str(client.cert),
        "JOURNEYSTREAM_KAFKA_SSL_KEYFILE": str(other.key),
    }
    with pytest.raises(ConfigError, match=r"JOURNEYSTREAM_KAFKA_SSL_CERTFILE=.*cannot load"):
        kafka_options(Settings.from_env(env))


def test_a_ca_file_that_is_not_pem_is_refused(tmp_path: Path) -> None:
    bogus = tmp_path / "ca.pem"
    bogus.write_text("not a certificate\n")
    env = {"JOURNEYSTREAM_KAFKA_SECURITY_PROTOCOL": "SSL", "JOURNEYSTREAM_KAFKA_SSL_CAFILE": str(bogus)}
    with pytest.raises(ConfigError, match=r"JOURNEYSTREAM_KAFKA_SSL_CAFILE=.*not a usable PEM CA file"):
        kafka_options(Settings.from_env(env))


def _refusals(tmp: Path) -> list[tuple[dict[str, str], str]]:
    empty = tmp / "empty"
    empty.write_text("\n")
    secret = tmp / "secret"
    secret.write_text(SECRET)
    missing = str(tmp / "missing")
    sasl = {"JOURNEYSTREAM_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "JOURNEYSTREAM_KAFKA_SASL_USERNAME": "u"}
    server = {"JOURNEYSTREAM_CLICKHOUSE_DSN": "https://writer@clickhouse:8443/journeystream"}
    return [
        ({"JOURNEYSTREAM_KAFKA_SECURITY_PROTOCOL": "TLS"}, "JOURNEYSTREAM_KAFKA_SECURITY_PROTOCOL"),
        ({"JOURNEYSTREAM_KAFKA_SASL_MECHANISM": "GSSAPI"}, "JOURNEYSTREAM_KAFKA_SASL_MECHANISM"),
        ({"JOURNEYSTREAM_KAFKA_SSL_CHECK_HOSTNAME": "maybe"}, "JOURNEYSTREAM_KAFKA_SSL_CHECK_HOSTNAME"),
        (
            {**sasl, "JOURNEYSTREAM_KAFKA_SASL_USERNAME": "", "JOURNEYSTREAM_KAFKA_SASL_PASSWORD": SECRET},
            "JOURNEYSTREAM_KAFKA_SASL_USERNAME is required",
        ),
        (sasl, "JOURNEYSTREAM_KAFKA_SASL_PASSWORD_FILE .* is required"),
        (
            {
                **sasl,
                "JOURNEYSTREAM_KAFKA_SASL_PASSWORD": SECRET,
                "JOURNEYSTREAM_KAFKA_SASL_PASSWORD_FILE": str(secret),
            },
            "not both",
        ),
        ({**sasl, "JOURNEYSTREAM_KAFKA_SASL_PASSWORD_FILE": missing}, "PASSWORD_FILE=.*cannot read it"),
        ({**sasl, "JOURNEYSTREAM_KAFKA_SASL_PASSWORD_FILE": str(empty)}, "PASSWORD_FILE=.*is empty"),
        ({"JOURNEYSTREAM_KAFKA_SASL_USERNAME": "u"}, "USERNAME is set but .*=PLAINTEXT does not use SASL"),
        (
            {"JOURNEYSTREAM_KAFKA_SASL_PASSWORD_FILE": str(secret)},
            "PASSWORD_FILE is set but .*=PLAINTEXT does not use SASL",
        ),
        (
            {
                **sasl,
                "JOURNEYSTREAM_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
                "JOURNEYSTREAM_KAFKA_SASL_PASSWORD": "x",
                "JOURNEYSTREAM_KAFKA_SSL_CAFILE": str(secret),
            },
            "CAFILE is set but .*=SASL_PLAINTEXT does not use TLS",
        ),
        (
            {"JOURNEYSTREAM_KAFKA_SECURITY_PROTOCOL": "SSL", "JOURNEYSTREAM_KAFKA_SSL_CAFILE": missing},
            "JOURNEYSTREAM_KAFKA_SSL_CAFILE=.*cannot read it",
        ),
        (
            {"JOURNEYSTREAM_KAFKA_SECURITY_PROTOCOL": "SSL", "JOURNEYSTREAM_KAFKA_SSL_KEYFILE": str(secret)},
            "KEYFILE is set without JOURNEYSTREAM_KAFKA_SSL_CERTFILE",
        ),
        (
            {"JOURNEYSTREAM_CLICKHOUSE_PASSWORD_FILE": str(secret)},
            "CLICKHOUSE_PASSWORD_FILE is set but .* is not a server",
        ),
        (
            {
                "JOURNEYSTREAM_CLICKHOUSE_DSN": "https://writer:pw@clickhouse:8443/journeystream",
                "JOURNEYSTREAM_CLICKHOUSE_PASSWORD_FILE": str(secret),
            },
            "has a password and JOURNEYSTREAM_CLICKHOUSE_PASSWORD_FILE is set",
        ),
        ({**server, "JOURNEYSTREAM_CLICKHOUSE_PASSWORD_FILE": missing}, "CLICKHOUSE_PASSWORD_FILE=.*cannot"),
        (
            {
                "JOURNEYSTREAM_CLICKHOUSE_DSN": "http://writer@clickhouse:8123/journeystream",
                "JOURNEYSTREAM_CLICKHOUSE_CA_FILE": str(secret),
            },
            "CLICKHOUSE_CA_FILE is set but .* is not https://",
        ),
        ({"JOURNEYSTREAM_ALERTMANAGER_USERNAME": "am"}, "ALERTMANAGER_USERNAME is set but .* is empty"),
        (
            {
                "JOURNEYSTREAM_ALERTMANAGER_URL": "https://alertmanager:9093",
                "JOURNEYSTREAM_ALERTMANAGER_USERNAME": "am",
            },
            "set both JOURNEYSTREAM_ALERTMANAGER_USERNAME and JOURNEYSTREAM_ALERTMANAGER_PASSWORD_FILE",
        ),
        (
            {
                "JOURNEYSTREAM_ALERTMANAGER_URL": "http://alertmanager:9093",
                "JOURNEYSTREAM_ALERTMANAGER_CA_FILE": str(secret),
            },
            "ALERTMANAGER_CA_FILE is set but .* is not https://",
        ),
    ]


def test_impossible_combinations_are_refused_with_one_line_naming_the_setting(tmp_path: Path) -> None:
    for env, message in _refusals(tmp_path):
        with pytest.raises(ConfigError, match=message) as caught:
            Settings.from_env(env)
        text = str(caught.value)
        assert "\n" not in text
        assert SECRET not in text, f"{text} shows the secret"


def test_secrets_are_masked_and_never_in_repr(
    tmp_path: Path, password_file: Path, pki: tuple[Authority, Certificate]
) -> None:
    ca, _ = pki
    files = {}
    for name in ("clickhouse", "alertmanager"):
        files[name] = tmp_path / f"{name}-password"
        files[name].write_text(f"{name}-{SECRET}")
    env = sasl_ssl_env(
        password_file,
        ca.cert,
        clickhouse_dsn="https://writer@clickhouse:8443/journeystream",
        clickhouse_password_file=str(files["clickhouse"]),
        clickhouse_ca_file=str(ca.cert),
        alertmanager_url="https://alertmanager:9093",
        alertmanager_username="am",
        alertmanager_password_file=str(files["alertmanager"]),
        alertmanager_ca_file=str(ca.cert),
    )
    settings = Settings.from_env(env)
    assert settings.clickhouse_password == f"clickhouse-{SECRET}"
    assert settings.alertmanager_password == f"alertmanager-{SECRET}"
    assert sorted(settings.secrets()) == sorted([SECRET, f"clickhouse-{SECRET}", f"alertmanager-{SECRET}"])
    shown = settings.describe()
    for name in ("kafka_sasl_password", "clickhouse_password", "alertmanager_password"):
        assert shown[name] == "***"
    assert shown["kafka_sasl_password_file"] == str(password_file)  # paths are not secrets
    for text in (str(shown), repr(settings)):
        assert SECRET not in text


def test_config_command_masks_the_password(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("JOURNEYSTREAM_KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("JOURNEYSTREAM_KAFKA_SASL_USERNAME", "alice")
    monkeypatch.setenv("JOURNEYSTREAM_KAFKA_SASL_PASSWORD", SECRET)
    assert main(["config"]) == 0
    out = capsys.readouterr().out
    assert "kafka_sasl_password = ***" in out
    assert "kafka_sasl_username = alice" in out
    assert SECRET not in out


def test_bootstrap_servers_are_parsed() -> None:
    assert bootstrap_servers("a:1, b:2,[::1]:3") == [("a", 1), ("b", 2), ("::1", 3)]
    with pytest.raises(ConfigError, match="JOURNEYSTREAM_KAFKA_BOOTSTRAP"):
        bootstrap_servers("kafka")


def test_an_unreachable_broker_fails_after_retries_within_the_timeout() -> None:
    port = free_port()  # nothing listens there
    settings = Settings.from_env({"JOURNEYSTREAM_KAFKA_BOOTSTRAP": f"127.0.0.1:{port}"})
    started = time.monotonic()
    with pytest.raises(KafkaConnectError) as caught:
        asyncio.run(check_kafka(settings, timeout_s=1.5))
    assert time.monotonic() - started < 5
    assert caught.value.reason == "unreachable"
    message = str(caught.value)
    assert f"Kafka broker unreachable at 127.0.0.1:{port} after" in message
    assert "attempts" in message and "\n" not in message


def test_hostname_verification_refuses_a_certificate_for_another_name(
    tmp_path: Path, pki: tuple[Authority, Certificate]
) -> None:
    """A TLS listener on 127.0.0.1 whose certificate (signed by the trusted CA) names another
    host: refused as a TLS failure pointing at the setting; with the check off, TLS passes
    (and the listener, which is no Kafka broker, then fails the Kafka handshake)."""
    ca, _ = pki
    elsewhere = issue(ca, tmp_path, "elsewhere", names="DNS:kafka.elsewhere.example")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(elsewhere.cert, elsewhere.key)

    async def scenario(check_hostname: str) -> KafkaConnectError:
        async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            with contextlib.suppress(Exception):
                await reader.read(1 << 16)
            writer.close()

        server = await asyncio.start_server(silent, "127.0.0.1", 0, ssl=context)
        port = server.sockets[0].getsockname()[1]
        env = {
            "JOURNEYSTREAM_KAFKA_BOOTSTRAP": f"127.0.0.1:{port}",
            "JOURNEYSTREAM_KAFKA_SECURITY_PROTOCOL": "SSL",
            "JOURNEYSTREAM_KAFKA_SSL_CAFILE": str(ca.cert),
            "JOURNEYSTREAM_KAFKA_SSL_CHECK_HOSTNAME": check_hostname,
        }
        try:
            with pytest.raises(KafkaConnectError) as caught:
                await check_kafka(Settings.from_env(env), timeout_s=3)
        finally:
            server.close()
        return caught.value

    refused = asyncio.run(scenario("true"))
    assert refused.reason == "tls"
    assert "TLS verification failed" in str(refused)
    assert "certificate does not name 127.0.0.1" in str(refused)
    assert "JOURNEYSTREAM_KAFKA_SSL_CHECK_HOSTNAME" in str(refused)
    assert asyncio.run(scenario("false")).reason == "protocol"
