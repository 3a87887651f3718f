"""Test certificates made with openssl: a CA, a certificate it signs for 127.0.0.1/localhost,
and (through deploy/kafka/dev-secrets.sh) the folder `deploy/kafka/broker.sh` reads in
SASL_SSL mode."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path


def _openssl(*args: str, cwd: Path) -> None:
    done = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args[:2])} failed:\n{done.stderr}")


@dataclass(frozen=True)
class Authority:
    """A CA's certificate (PEM) and key."""

    cert: Path
    key: Path


@dataclass(frozen=True)
class Certificate:
    """A certificate signed by an Authority, its unencrypted key, and the CA certificate."""

    cert: Path
    key: Path
    ca: Path


def make_ca(folder: Path, name: str) -> Authority:
    folder.mkdir(parents=True, exist_ok=True)
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        "-keyout", f"{name}.key", "-out", f"{name}.pem", "-subj", f"/CN={name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        "-addext", "subjectKeyIdentifier=hash",
        cwd=folder,
    )  # fmt: skip
    return Authority(folder / f"{name}.pem", folder / f"{name}.key")


def issue(
    ca: Authority,
    folder: Path,
    name: str,
    usage: str = "serverAuth",
    names: str = "IP:127.0.0.1,DNS:localhost",
) -> Certificate:
    """A certificate for `names` (subjectAltName; `usage`: serverAuth or clientAuth)."""
    folder.mkdir(parents=True, exist_ok=True)
    extensions = folder / f"{name}.ext"
    extensions.write_text(
        "basicConstraints=CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        f"extendedKeyUsage={usage}\n"
        f"subjectAltName={names}\n"
        "subjectKeyIdentifier=hash\n"
        "authorityKeyIdentifier=keyid\n"
    )
    _openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
        "-subj", f"/CN={name}", cwd=folder,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", str(ca.cert), "-CAkey", str(ca.key),
        "-CAcreateserial", "-days", "2", "-out", f"{name}.pem", "-extfile", str(extensions),
        cwd=folder,
    )  # fmt: skip
    return Certificate(folder / f"{name}.pem", folder / f"{name}.key", ca.cert)


DEV_SECRETS = Path(__file__).resolve().parents[1] / "deploy" / "kafka" / "dev-secrets.sh"


@dataclass(frozen=True)
class SecuredBrokerFiles:
    """What broker.sh's KAFKA_SASL_SSL_DIR holds, and what a client needs."""

    folder: Path
    ca: Path
    users: dict[str, str]


def broker_folder(folder: Path, users: dict[str, str]) -> SecuredBrokerFiles:
    """deploy/kafka/dev-secrets.sh: CA, broker key and certificate (127.0.0.1), SCRAM users
    (the broker's own inter-broker user first, then `users`)."""
    done = subprocess.run(
        [str(DEV_SECRETS), str(folder), *(f"{name}={secret}" for name, secret in users.items())],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if done.returncode != 0:
        raise RuntimeError(f"dev-secrets.sh failed:\n{done.stderr}")
    return SecuredBrokerFiles(folder, folder / "ca.pem", users)
