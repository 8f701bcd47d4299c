"""Test helpers for NATS servers that ask for more than a URL: certificates (mutual TLS), nkey users, and the
JWTs of decentralised auth (operator -> account -> user, as `nsc` writes them), all made here with the
`cryptography` and `nkeys` libraries, and a nats-server started from a config file (stopped by its pid)."""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import hashlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import nkeys
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from bus.embedded import find_binary, free_port

# -- certificates ------------------------------------------------------------------------------------------


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )


def make_certs(folder: Path) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1 / localhost and a client certificate, all signed by the CA."""
    import ipaddress

    folder.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("tbx test CA"))
        .issuer_name(_name("tbx test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    out = {"ca": folder / "ca.pem"}
    out["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    for who, usage in (
        ("server", x509.ExtendedKeyUsageOID.SERVER_AUTH),
        ("client", x509.ExtendedKeyUsageOID.CLIENT_AUTH),
    ):
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(f"tbx test {who}"))
            .issuer_name(ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if who == "server":
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            )
        cert = builder.sign(ca_key, hashes.SHA256())
        out[f"{who}_cert"] = folder / f"{who}.pem"
        out[f"{who}_key"] = folder / f"{who}-key.pem"
        out[f"{who}_cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(key, out[f"{who}_key"])
    return out


# -- nkeys and JWTs ----------------------------------------------------------------------------------------


def new_nkey(prefix: int) -> nkeys.KeyPair:
    """A fresh nkey pair of a kind (nkeys.PREFIX_BYTE_OPERATOR / _ACCOUNT / _USER)."""
    return nkeys.from_seed(bytearray(nkeys.encode_seed(os.urandom(32), prefix)))


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def encode_jwt(claims: dict[str, object], signer: nkeys.KeyPair) -> str:
    """A NATS JWT (alg ed25519-nkey) signed by ``signer``; jti as the nats jwt library computes it."""
    header = _b64(json.dumps({"typ": "JWT", "alg": "ed25519-nkey"}).encode())
    body = dict(claims)
    body.setdefault("iat", int(time.time()))
    body["iss"] = signer.public_key.decode()
    body["jti"] = ""
    digest = hashlib.new("sha512_256", json.dumps(body, separators=(",", ":")).encode()).digest()
    body["jti"] = base64.b32encode(digest).decode().rstrip("=")
    payload = _b64(json.dumps(body, separators=(",", ":")).encode())
    signature = signer.sign(f"{header}.{payload}".encode())
    return f"{header}.{payload}.{_b64(signature)}"


def operator_setup(folder: Path) -> dict[str, object]:
    """An operator, one account with JetStream allowed, one user: the server's config lines and a .creds file."""
    folder.mkdir(parents=True, exist_ok=True)
    op, acct, sys_acct, user = (new_nkey(p) for p in (
        nkeys.PREFIX_BYTE_OPERATOR, nkeys.PREFIX_BYTE_ACCOUNT, nkeys.PREFIX_BYTE_ACCOUNT, nkeys.PREFIX_BYTE_USER
    ))  # fmt: skip
    op_pub = op.public_key.decode()
    op_jwt = encode_jwt({"sub": op_pub, "name": "tbx-op", "nats": {"type": "operator", "version": 2}}, op)
    unlimited = {"subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1, "wildcards": True, "conn": -1,
                 "leaf": -1}  # fmt: skip
    js = {"mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1}
    accounts = {}
    for kp, name, with_js in ((acct, "TBX", True), (sys_acct, "SYS", False)):
        limits = {**unlimited, **(js if with_js else {})}
        claims = {"sub": kp.public_key.decode(), "name": name,
                  "nats": {"type": "account", "version": 2, "limits": limits}}  # fmt: skip
        accounts[kp.public_key.decode()] = encode_jwt(claims, op)
    user_claims = {"sub": user.public_key.decode(), "name": "tbx",
                   "nats": {"type": "user", "version": 2, "pub": {}, "sub": {}, "subs": -1, "data": -1,
                            "payload": -1}}  # fmt: skip
    user_jwt = encode_jwt(user_claims, acct)
    creds = folder / "tbx.creds"
    creds.write_text(
        "-----BEGIN NATS USER JWT-----\n"
        f"{user_jwt}\n"
        "------END NATS USER JWT------\n\n"
        "-----BEGIN USER NKEY SEED-----\n"
        f"{user.seed.decode()}\n"
        "------END USER NKEY SEED------\n"
    )
    preload = ", ".join(f'"{k}": "{v}"' for k, v in accounts.items())
    config = (
        f'operator: "{op_jwt}"\n'
        f'system_account: "{sys_acct.public_key.decode()}"\n'
        "resolver: MEMORY\n"
        f"resolver_preload: {{ {preload} }}\n"
    )
    return {"config": config, "creds": creds}


# -- a nats-server from a config file ----------------------------------------------------------------------


@contextlib.contextmanager
def nats_server(folder: Path, extra_config: str, *, timeout: float = 15.0) -> Iterator[int]:
    """A nats-server with JetStream and ``extra_config`` on a free port of 127.0.0.1; yields the port."""
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    conf = folder / "nats.conf"
    conf.write_text(f'listen: "127.0.0.1:{port}"\njetstream {{ store_dir: "{folder / "js"}" }}\n{extra_config}')
    log = folder / "nats.log"
    with open(log, "ab") as fh:
        proc = subprocess.Popen([find_binary(), "-c", str(conf)], stdout=fh, stderr=fh, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + timeout
        while "Server is ready" not in log.read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"nats-server did not start: {log.read_text(errors='replace')[-2000:]}")
            time.sleep(0.05)
        yield port
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(5)
