"""How every Kafka client of the project connects: one place for bootstrap servers, security
protocol, SASL and TLS.

`kafka_options(settings)` returns the keyword arguments that `AIOKafkaConsumer`,
`AIOKafkaProducer` and `AIOKafkaAdminClient` all accept; add the client's own options next to
them (`AIOKafkaProducer(**kafka_options(settings), acks="all")`).

`check_kafka(settings)` connects once, at start, and turns what can go wrong into one
`KafkaConnectError` line naming the cause and the setting to look at: the broker refused the
user's credentials, its certificate did not verify, it speaks another protocol than
`JOURNEYSTREAM_KAFKA_SECURITY_PROTOCOL`, or it could not be reached (retried with backoff
until the timeout). No secret is ever part of a message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from typing import Any

from journeystream.config import PREFIX, Settings
from journeystream.errors import ConfigError, KafkaConnectError

log = logging.getLogger(__name__)

CHECK_TIMEOUT_S = 30.0
"""Default time `check_kafka` keeps trying an unreachable broker."""

_HANDSHAKE_TIMEOUT_S = 10.0
_NAME_MISMATCH = (62, 64)  # X509_V_ERR_HOSTNAME_MISMATCH, X509_V_ERR_IP_ADDRESS_MISMATCH
_MAX_BACKOFF_S = 5.0

_PROTOCOL = PREFIX + "KAFKA_SECURITY_PROTOCOL"
_CAFILE = PREFIX + "KAFKA_SSL_CAFILE"
_CERTFILE = PREFIX + "KAFKA_SSL_CERTFILE"
_CHECK_HOSTNAME = PREFIX + "KAFKA_SSL_CHECK_HOSTNAME"
_USERNAME = PREFIX + "KAFKA_SASL_USERNAME"
_PASSWORD_FILE = PREFIX + "KAFKA_SASL_PASSWORD_FILE"


def kafka_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for any aiokafka client: bootstrap servers and security.

    The TLS context is built here (CA file, client certificate and key for mTLS, hostname
    verification as configured); ConfigError names the setting whose file is unusable.
    """
    protocol = settings.kafka_security_protocol
    options: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap,
        "security_protocol": protocol,
    }
    if protocol.startswith("SASL_"):
        options["sasl_mechanism"] = settings.kafka_sasl_mechanism
        options["sasl_plain_username"] = settings.kafka_sasl_username
        options["sasl_plain_password"] = settings.kafka_sasl_password
    if protocol in ("SSL", "SASL_SSL"):
        options["ssl_context"] = ssl_context(settings)
    return options


def ssl_context(settings: Settings) -> ssl.SSLContext:
    """A client TLS context: the configured CA file (else the system's CAs), the client
    certificate and key when set (mTLS), certificate and hostname verification."""
    cafile = settings.kafka_ssl_cafile or None
    try:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=cafile)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(f"{_CAFILE}={cafile!r}: not a usable PEM CA file ({_reason(exc)})") from None
    if settings.kafka_ssl_certfile:
        key_password = settings.kafka_ssl_key_password

        def password() -> str:
            return key_password  # never prompts on a terminal for an encrypted key

        try:
            context.load_cert_chain(
                settings.kafka_ssl_certfile, settings.kafka_ssl_keyfile or None, password=password
            )
        except (ssl.SSLError, OSError) as exc:
            raise ConfigError(
                f"{_CERTFILE}={settings.kafka_ssl_certfile!r}: cannot load the client certificate and "
                f"its key ({_reason(exc)}; check {PREFIX}KAFKA_SSL_KEYFILE and "
                f"{PREFIX}KAFKA_SSL_KEY_PASSWORD_FILE)"
            ) from None
    context.check_hostname = settings.kafka_ssl_check_hostname
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def bootstrap_servers(bootstrap: str) -> list[tuple[str, int]]:
    """`host:port,host:port` → [(host, port), ...]; ConfigError on a malformed entry."""
    servers = []
    for entry in bootstrap.split(","):
        host, _, port = entry.strip().rpartition(":")
        host = host.strip("[]")
        if not host or not port.isdigit():
            raise ConfigError(f"{PREFIX}KAFKA_BOOTSTRAP={bootstrap!r}: expected host:port[,host:port...]")
        servers.append((host, int(port)))
    return servers


async def check_kafka(settings: Settings, timeout_s: float = CHECK_TIMEOUT_S) -> None:
    """Connect to a bootstrap server once, as every client will (TLS, SASL), and ask for
    metadata. Returns when that works; raises KafkaConnectError (one line) when it does not.

    An unreachable broker (refused, no route, unknown host) is retried with backoff for
    `timeout_s` across the bootstrap servers; a broker that answers but refuses the
    credentials, fails TLS verification or speaks another protocol fails at once.
    """
    options = kafka_options(settings)
    servers = bootstrap_servers(settings.kafka_bootstrap)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    backoff = 0.25
    attempts = 0
    last_error = ""
    while True:
        for host, port in servers:
            attempts += 1
            remaining = max(0.5, deadline - loop.time())
            try:
                await _reach(host, port, min(_HANDSHAKE_TIMEOUT_S, remaining))
            except (OSError, TimeoutError) as exc:
                last_error = f"{host}:{port}: {_reason(exc)}"
                continue
            await _handshake(host, port, options, settings, min(_HANDSHAKE_TIMEOUT_S, remaining))
            return
        if loop.time() + backoff > deadline:
            raise KafkaConnectError(
                "unreachable",
                f"Kafka broker unreachable at {settings.kafka_bootstrap} after {attempts} attempts "
                f"in {timeout_s:g}s (last: {last_error}); check {PREFIX}KAFKA_BOOTSTRAP",
            )
        await asyncio.sleep(backoff)
        backoff = min(backoff * 2, _MAX_BACKOFF_S)


async def _reach(host: str, port: int, timeout_s: float) -> None:
    """A plain TCP connection, closed at once: is anything listening there?"""
    async with asyncio.timeout(timeout_s):
        _, writer = await asyncio.open_connection(host, port)
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()


async def _handshake(
    host: str, port: int, options: dict[str, Any], settings: Settings, timeout_s: float
) -> None:
    """TLS and SASL as the clients do them, then one metadata request."""
    from aiokafka import errors
    from aiokafka.conn import create_conn
    from aiokafka.protocol.metadata import MetadataRequest

    protocol = settings.kafka_security_protocol
    where = f"the Kafka broker at {host}:{port}"
    mismatch = f"is {_PROTOCOL}={protocol} the protocol of this listener?"
    connection_options = {k: v for k, v in options.items() if k != "bootstrap_servers"}
    try:
        async with asyncio.timeout(timeout_s):
            conn = await create_conn(
                host,
                port,
                client_id="journeystream-check",
                request_timeout_ms=int(timeout_s * 1000),
                **connection_options,
            )
    except ssl.SSLCertVerificationError as exc:
        cafile = settings.kafka_ssl_cafile
        trust = f"{_CAFILE}={cafile!r}" if cafile else f"{_CAFILE} (empty: the system's CAs)"
        if exc.verify_code in _NAME_MISMATCH:
            advice = (
                f"the certificate does not name {host}: connect by a name it lists "
                f"({PREFIX}KAFKA_BOOTSTRAP) or turn {_CHECK_HOSTNAME} off"
            )
        else:
            advice = f"check {trust}"
        problem = (exc.verify_message or _reason(exc)).rstrip(".")
        raise KafkaConnectError("tls", f"TLS verification failed for {where}: {problem}; {advice}") from None
    except errors.UnsupportedSaslMechanismError:
        raise KafkaConnectError(
            "protocol",
            f"{where} does not enable the SASL mechanism {settings.kafka_sasl_mechanism}: check "
            f"{PREFIX}KAFKA_SASL_MECHANISM",
        ) from None
    except (errors.SaslAuthenticationFailed, errors.AuthenticationFailedError) as exc:
        raise KafkaConnectError(
            "authentication",
            f"Kafka authentication failed for user {settings.kafka_sasl_username!r} "
            f"({settings.kafka_sasl_mechanism}) at {host}:{port}: {_broker_message(exc)}; check "
            f"{_USERNAME} and {_PASSWORD_FILE}",
        ) from None
    except ssl.SSLError as exc:
        raise KafkaConnectError(
            "protocol", f"TLS handshake with {where} failed ({_reason(exc)}): {mismatch}"
        ) from None
    except (errors.KafkaError, OSError, TimeoutError, EOFError) as exc:
        context = options.get("ssl_context")
        alert = await _tls_alert(host, port, context) if context is not None else None
        if alert is not None:
            raise KafkaConnectError("tls", _client_certificate_refused(where, alert, settings)) from None
        raise KafkaConnectError(
            "protocol",
            f"{where} closed or did not answer the {protocol} handshake ({_reason(exc)}): {mismatch}",
        ) from None
    try:
        async with asyncio.timeout(timeout_s):
            await conn.send(MetadataRequest([]))
    except (errors.KafkaError, OSError, TimeoutError) as exc:
        expects = "SASL (SASL_SSL or SASL_PLAINTEXT)" if not protocol.startswith("SASL_") else "more"
        raise KafkaConnectError(
            "protocol",
            f"{where} refused requests after the {protocol} handshake ({_reason(exc)}): does its "
            f"listener expect {expects}? {mismatch}",
        ) from None
    finally:
        conn.close()
    log.info("connected to Kafka at %s:%d (%s)", host, port, protocol)


async def _tls_alert(host: str, port: int, context: ssl.SSLContext, timeout_s: float = 2.0) -> str | None:
    """After a failed handshake over TLS: does the broker end the session with a TLS alert
    right after the TLS handshake (as it does when it requires a client certificate it did
    not get or does not trust)? The alert's name, or None."""
    try:
        async with asyncio.timeout(timeout_s):
            reader, writer = await asyncio.open_connection(host, port, ssl=context)
            try:
                await reader.read(1)
            finally:
                writer.close()
    except ssl.SSLError as exc:
        reason = str(exc.reason or "")
        return reason if "ALERT" in reason.upper() else None
    except (OSError, TimeoutError):
        return None
    return None


def _client_certificate_refused(where: str, alert: str, settings: Settings) -> str:
    if not settings.kafka_ssl_certfile:
        return (
            f"{where} requires a TLS client certificate (mutual TLS; TLS alert {alert}): set {_CERTFILE} "
            f"and {PREFIX}KAFKA_SSL_KEYFILE"
        )
    return (
        f"{where} refused the TLS client certificate (TLS alert {alert}): check {_CERTFILE}="
        f"{settings.kafka_ssl_certfile!r} (signed by a CA the broker trusts, for client authentication)"
    )


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return str(exc.reason)
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    if isinstance(exc, TimeoutError) or not str(exc):
        return type(exc).__name__
    return str(exc).splitlines()[0]


def _broker_message(exc: BaseException) -> str:
    """The broker's explanation of an authentication failure (it never echoes a secret)."""
    text = " ".join(str(arg) for arg in exc.args if arg) if exc.args else ""
    return (text or str(exc) or "SASL authentication failed").splitlines()[0]
