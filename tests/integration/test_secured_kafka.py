"""Kafka over SASL_SSL (SCRAM-SHA-512, TLS with a test CA), against a second real broker.

The module starts its own broker (deploy/kafka/broker.sh with KAFKA_SASL_SSL_DIR): a CA and a
broker certificate made with openssl, SCRAM users created by Kafka's storage tool at format
time, the client listener SASL_SSL on 127.0.0.1, the controller PLAINTEXT on 127.0.0.1.
The simulator and the worker run as real processes with the secured settings; a wrong
password, an untrusted CA and a protocol mismatch each end the start within seconds with one
line; no output carries the password.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from journeystream.cli import _parser, sim_config
from journeystream.config import Settings
from journeystream.runtime.topics import ensure_topics
from journeystream.simulate import generate
from journeystream.supervise import WorkerProcess, free_port_pair, metric_sum
from tests.conftest import running_broker
from tests.integration.helpers import consume_all, produce, query, wait_for_sink_rows, worker_env
from tests.tls import Authority, SecuredBrokerFiles, broker_folder, issue, make_ca

pytestmark = pytest.mark.integration

USER = "journeystream"
PASSWORD = f"pw-{secrets.token_urlsafe(18)}"  # unique per run: scanned for in every output
FAIL_FAST_S = 15.0


@dataclass(frozen=True)
class SecuredBroker:
    bootstrap: str
    ca: Path
    password_file: Path
    folder: Path

    def env(self, **overrides: str) -> dict[str, str]:
        """The client settings of this broker (`overrides` by lower-case setting name)."""
        env = {
            "JOURNEYSTREAM_KAFKA_BOOTSTRAP": self.bootstrap,
            "JOURNEYSTREAM_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "JOURNEYSTREAM_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
            "JOURNEYSTREAM_KAFKA_SASL_USERNAME": USER,
            "JOURNEYSTREAM_KAFKA_SASL_PASSWORD_FILE": str(self.password_file),
            "JOURNEYSTREAM_KAFKA_SSL_CAFILE": str(self.ca),
        }
        env.update({f"JOURNEYSTREAM_{key.upper()}": value for key, value in overrides.items()})
        return env


@pytest.fixture(scope="module")
def broker_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[SecuredBrokerFiles, Path]:
    """The secured brokers' folder (deploy/kafka/dev-secrets.sh) and the user's password file."""
    folder = tmp_path_factory.mktemp("secured-kafka")
    password_file = folder / "kafka-password"
    password_file.write_text(PASSWORD + "\n")
    return broker_folder(folder / "broker", {USER: PASSWORD}), password_file


@pytest.fixture(scope="module")
def secured_broker(broker_files: tuple[SecuredBrokerFiles, Path]) -> Iterator[SecuredBroker]:
    files, password_file = broker_files
    port = free_port_pair()
    with running_broker(port, "test-kafka-secured", KAFKA_SASL_SSL_DIR=str(files.folder)) as bootstrap:
        yield SecuredBroker(bootstrap, files.ca, password_file, files.folder)


def simulate_args() -> list[str]:
    return [
        "simulate",
        "--to",
        "kafka",
        "--events",
        "3000",
        "--customers",
        "300",
        "--seed",
        "11",
        "--start",
        "2026-11-02T08:00:00+00:00",
        "--invalid-share",
        "0.03",
        "--duplicate-share",
        "0.02",
    ]


def run_cli(args: list[str], env: dict[str, str]) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "journeystream", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    return done, time.monotonic() - started


def assert_no_secret(*texts: str | bytes) -> None:
    for text in texts:
        data = text.encode() if isinstance(text, str) else text
        assert PASSWORD.encode() not in data, "the SASL password leaked into an output"


async def test_simulator_produces_over_sasl_ssl_and_a_consumer_reads_exactly_that(
    secured_broker: SecuredBroker, unique_name: str
) -> None:
    env = secured_broker.env(topic_interactions=f"{unique_name}.interactions")
    args = simulate_args()
    done, _ = run_cli(args, env)
    assert done.returncode == 0, done.stderr
    assert "sent 3000 messages" in done.stdout
    assert_no_secret(done.stdout, done.stderr)

    expected = Counter((m.key, m.value) for m in generate(sim_config(_parser().parse_args(args))))
    assert sum(expected.values()) == 3000
    settings = Settings.from_env(env)
    topic = settings.topic_interactions
    records = await consume_all(settings.kafka_bootstrap, topic, 3000, settings=settings)
    assert Counter((record.key, record.value) for record in records) == expected


def assert_fails_fast(
    done: subprocess.CompletedProcess[str], seconds: float, starts_with: str, *secrets_: str
) -> str:
    assert done.returncode == 2, (done.returncode, done.stderr)
    assert seconds < FAIL_FAST_S, f"took {seconds:.1f}s"
    assert "Traceback" not in done.stderr + done.stdout
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"journeystream: {starts_with}"), lines[0]
    assert_no_secret(done.stdout, done.stderr)
    for secret in secrets_:
        assert secret not in done.stdout + done.stderr
    return lines[0]


def test_a_wrong_password_fails_fast_with_one_line(secured_broker: SecuredBroker, tmp_path: Path) -> None:
    wrong = f"wrong-{secrets.token_hex(8)}"
    wrong_file = tmp_path / "wrong-password"
    wrong_file.write_text(wrong)
    env = secured_broker.env(kafka_sasl_password_file=str(wrong_file), topic_interactions="never.created")
    done, seconds = run_cli(simulate_args(), env)
    line = assert_fails_fast(done, seconds, f"Kafka authentication failed for user '{USER}'", wrong)
    assert "SCRAM-SHA-512" in line and "JOURNEYSTREAM_KAFKA_SASL_PASSWORD_FILE" in line


def test_an_untrusted_ca_fails_fast_with_one_line(secured_broker: SecuredBroker, tmp_path: Path) -> None:
    other = make_ca(tmp_path, "other-ca")  # a valid CA, just not the one that signed the broker
    env = secured_broker.env(kafka_ssl_cafile=str(other.cert), topic_interactions="never.created")
    done, seconds = run_cli(simulate_args(), env)
    line = assert_fails_fast(done, seconds, "TLS verification failed for the Kafka broker")
    assert "JOURNEYSTREAM_KAFKA_SSL_CAFILE" in line


def test_a_protocol_mismatch_fails_fast_with_one_line(secured_broker: SecuredBroker) -> None:
    env = {
        "JOURNEYSTREAM_KAFKA_BOOTSTRAP": secured_broker.bootstrap,
        "JOURNEYSTREAM_KAFKA_SECURITY_PROTOCOL": "PLAINTEXT",
        "JOURNEYSTREAM_TOPIC_INTERACTIONS": "never.created",
    }
    done, seconds = run_cli(simulate_args(), env)
    line = assert_fails_fast(done, seconds, "the Kafka broker at")
    assert "JOURNEYSTREAM_KAFKA_SECURITY_PROTOCOL=PLAINTEXT" in line


# -- mutual TLS on top of SASL ----------------------------------------------------------------


@pytest.fixture(scope="module")
def mtls_broker(broker_files: tuple[SecuredBrokerFiles, Path]) -> Iterator[SecuredBroker]:
    """A second secured broker that also requires a client certificate signed by the CA."""
    files, password_file = broker_files
    port = free_port_pair()
    extra = {"KAFKA_SASL_SSL_DIR": str(files.folder), "KAFKA_SSL_CLIENT_AUTH": "required"}
    with running_broker(port, "test-kafka-mtls", **extra) as bootstrap:
        yield SecuredBroker(bootstrap, files.ca, password_file, files.folder)


async def test_mutual_tls_with_the_client_certificate_and_without(
    mtls_broker: SecuredBroker, unique_name: str, tmp_path: Path
) -> None:
    ca = Authority(mtls_broker.folder / "ca.pem", mtls_broker.folder / "ca.key")
    client = issue(ca, tmp_path, "journeystream-client", usage="clientAuth")
    topic = f"{unique_name}.mtls"
    env = mtls_broker.env(kafka_ssl_certfile=str(client.cert), kafka_ssl_keyfile=str(client.key))
    settings = Settings.from_env(env)
    assert await ensure_topics(settings, [topic]) == [topic]  # check_kafka passed, admin client too
    messages = [(f"k{i}".encode(), f"v{i}".encode()) for i in range(50)]
    assert await produce(mtls_broker.bootstrap, topic, messages, settings=settings) == 50
    records = await consume_all(mtls_broker.bootstrap, topic, 50, settings=settings)
    assert sorted((r.key, r.value) for r in records) == sorted(messages)

    without = mtls_broker.env(topic_interactions="never.created")
    done, seconds = run_cli(simulate_args(), without)
    line = assert_fails_fast(done, seconds, "the Kafka broker at")
    assert "requires a TLS client certificate" in line and "JOURNEYSTREAM_KAFKA_SSL_CERTFILE" in line

    stranger = issue(make_ca(tmp_path / "other", "other-ca"), tmp_path / "other", "stranger", "clientAuth")
    untrusted = {**without, **mtls_broker.env(kafka_ssl_certfile=str(stranger.cert))}
    untrusted["JOURNEYSTREAM_KAFKA_SSL_KEYFILE"] = str(stranger.key)
    done, seconds = run_cli(simulate_args(), untrusted)
    line = assert_fails_fast(done, seconds, "the Kafka broker at")
    assert "refused the TLS client certificate" in line


# -- the worker over SASL_SSL ------------------------------------------------------------------

VALID = 2_000
INVALID = 100


def invalid_messages(count: int) -> list[tuple[bytes, bytes, str]]:
    good = {"occurred_at": "2026-03-01T10:00:00Z", "customer_id": "C1", "channel": "web", "type": "page_view"}
    makers = [
        (lambda i: b"{not json " + str(i).encode(), "not_json"),
        (lambda i: orjson.dumps({**good, "event_id": f"u{i}", "colour": "red"}), "unknown_field"),
        (lambda i: orjson.dumps({**good, "event_id": f"c{i}", "channel": "fax"}), "invalid_field"),
        (lambda i: orjson.dumps({**good, "event_id": f"t{i}", "occurred_at": "soon"}), "bad_time"),
    ]
    return [(f"bad-{i}".encode(), makers[i % 4][0](i), makers[i % 4][1]) for i in range(count)]


@pytest.mark.secured_worker
async def test_worker_runs_end_to_end_over_sasl_ssl(
    secured_broker: SecuredBroker, unique_name: str, tmp_path: Path
) -> None:
    """The worker, every Kafka client of it built with kafka_options, over SASL_SSL: exact
    tables, the rejected topic byte for byte, and no secret in its log, metrics or headers."""
    security = {
        key.removeprefix("JOURNEYSTREAM_").lower(): value
        for key, value in secured_broker.env().items()
        if key != "JOURNEYSTREAM_KAFKA_BOOTSTRAP"
    }
    env = worker_env(secured_broker.bootstrap, unique_name, tmp_path / "data", **security)
    settings = Settings.from_env(env)
    await ensure_topics(settings)

    an_hour_ago = datetime.fromtimestamp(time.time() - 3600, UTC).isoformat()
    args = ["simulate", "--events", str(VALID), "--customers", "200", "--seed", "3", "--start", an_hour_ago]
    valid = [(m.key, m.value) for m in generate(sim_config(_parser().parse_args(args))) if m.valid]
    assert len(valid) == VALID
    valid_ids = {orjson.loads(value)["event_id"] for _, value in valid}
    invalid = invalid_messages(INVALID)

    worker = WorkerProcess(env, tmp_path / "worker.log")
    worker.start()
    try:
        worker.wait_ready(timeout=90)
    except (RuntimeError, TimeoutError) as exc:
        worker.stop()
        assert_no_secret(worker.log_path.read_bytes())  # not even a failed start shows it
        tail = "\n".join(worker.log_path.read_text(errors="replace").splitlines()[-5:])
        pytest.fail(
            f"the worker did not start over SASL_SSL ({exc}): do all of the runtime's Kafka clients "
            f"take kafka_options(settings)? Last lines of its log:\n{tail}"
        )
    try:
        mixed: list[tuple[bytes | None, bytes]] = [*valid, *((k, v) for k, v, _ in invalid)]
        sent = await produce(secured_broker.bootstrap, settings.topic_interactions, mixed, settings=settings)
        assert sent == len(mixed)
        wait_for_sink_rows(worker, {"interaction_events": len(valid), "rejected_events": INVALID})
        metrics = worker.metrics()
        _, metrics_body = worker.get("/metrics")
    except BaseException:
        worker.stop()
        raise
    assert worker.stop() == 0, f"worker did not stop cleanly; see {worker.log_path}"

    assert metric_sum(metrics, "journeystream_events_consumed_total") == len(mixed)
    assert metric_sum(metrics, "journeystream_events_valid_total") == len(valid)
    stored = {row[0] for row in query(env, "SELECT event_id FROM {db}.interaction_events FINAL")}
    assert stored == valid_ids
    rejected = query(env, "SELECT kafka_key, reason_code FROM {db}.rejected_events FINAL")
    assert sorted(rejected) == sorted((key.decode(), code) for key, _, code in invalid)

    records = await consume_all(secured_broker.bootstrap, settings.topic_rejected, INVALID, settings=settings)
    originals = {key: (value, code) for key, value, code in invalid}
    assert len(records) == INVALID
    for record in records:
        value, code = originals[record.key]
        assert record.value == value
        headers = dict(record.headers)
        assert headers["journeystream.reason_code"].decode() == code
        assert_no_secret(*headers.values())

    assert_no_secret(worker.log_path.read_bytes(), metrics_body)
