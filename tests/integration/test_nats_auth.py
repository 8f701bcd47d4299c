"""Joining a NATS that asks for more than a URL (NATS_TLS_*, NATS_CREDS, NATS_NKEY_SEED): real nats-servers
with mutual TLS, nkey users and decentralised auth (operator / account / user JWTs), never a mock of them."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import nkeys
import pytest

from bus.auth import NatsAuth
from bus.client import Bus
from bus.embedded import free_port
from bus.errors import BusUnavailable, NatsRefused
from config.settings import ConfigError, load_settings, warnings_for
from schemas.messages import RiskAlert, now_ms
from schemas.subjects import Subjects
from tbx.runner import nats_auth
from tests.natsauth import make_certs, nats_server, new_nkey, operator_setup

ROOT = Path(__file__).resolve().parents[2]


async def _trade_a_write(url: str, auth: NatsAuth) -> None:
    """Connect, make the whole layout (streams, KV buckets) and store one event: JetStream works through it."""
    bus = await Bus.connect(url, name="auth-test", subjects=Subjects("authx"), auth=auth)
    try:
        await bus.ensure_layout()
        alert = RiskAlert(severity="warning", code="T", message="hello", ts=now_ms())
        assert await bus.js_publish(bus.subjects.risk_events, alert) >= 1
    finally:
        await bus.close()


async def test_mutual_tls_with_the_settings_files(tmp_path: Path) -> None:
    certs = make_certs(tmp_path / "certs")
    tls = (
        f'tls {{ cert_file: "{certs["server_cert"]}", key_file: "{certs["server_key"]}", '
        f'ca_file: "{certs["ca"]}", verify: true, timeout: 2 }}\n'
    )
    with nats_server(tmp_path / "srv", tls) as port:
        url = f"tls://127.0.0.1:{port}"
        settings = load_settings(
            {"NATS_URL": url, "NATS_TLS_CA": str(certs["ca"]), "NATS_TLS_CERT": str(certs["client_cert"]),
             "NATS_TLS_KEY": str(certs["client_key"])}
        )  # fmt: skip
        await _trade_a_write(url, nats_auth(settings))
        # no client certificate: the server refuses; a CA that did not sign the server: we refuse it. Neither is
        # "cannot reach" (waited for): a config error naming the settings to check (regression, review finding 7)
        with pytest.raises(NatsRefused, match=r"certificate required.*NATS_TLS_CA.*NATS_TLS_CERT.*NATS_TLS_KEY"):
            await Bus.connect(url, name="x", subjects=Subjects("authx"), connect_timeout=3,
                              auth=NatsAuth(tls_ca=str(certs["ca"])))  # fmt: skip
        other = make_certs(tmp_path / "other")
        with pytest.raises(NatsRefused, match=r"certificate verify failed.*NATS_TLS_CA"):
            await Bus.connect(url, name="x", subjects=Subjects("authx"), connect_timeout=3,
                              auth=NatsAuth(tls_ca=str(other["ca"]), tls_cert=str(certs["client_cert"]),
                                            tls_key=str(certs["client_key"])))  # fmt: skip


async def test_an_nkey_user(tmp_path: Path) -> None:
    user = new_nkey(nkeys.PREFIX_BYTE_USER)
    seed = tmp_path / "user.nk"
    seed.write_text(user.seed.decode() + "\n")
    with nats_server(
        tmp_path / "srv", f'authorization {{ users: [ {{ nkey: "{user.public_key.decode()}" }} ] }}\n'
    ) as port:
        url = f"nats://127.0.0.1:{port}"
        await _trade_a_write(url, nats_auth(load_settings({"NATS_URL": url, "NATS_NKEY_SEED": str(seed)})))
        stranger = tmp_path / "stranger.nk"
        stranger.write_text(new_nkey(nkeys.PREFIX_BYTE_USER).seed.decode())
        with pytest.raises(NatsRefused, match=r"Authorization Violation.*NATS_CREDS and NATS_NKEY_SEED"):
            await Bus.connect(url, name="x", subjects=Subjects("authx"), connect_timeout=3,
                              auth=NatsAuth(nkey_seed=str(stranger)))  # fmt: skip
        with pytest.raises(NatsRefused, match=r"Authorization Violation"):  # no key at all
            await Bus.connect(url, name="x", subjects=Subjects("authx"), connect_timeout=3)


async def test_a_creds_file_of_an_account_with_jetstream(tmp_path: Path) -> None:
    """Decentralised auth as `nsc` sets it up: the operator's JWT on the server, the account preloaded, the user
    holding a .creds file (its JWT and seed)."""
    setup = operator_setup(tmp_path / "op")
    with nats_server(tmp_path / "srv", str(setup["config"])) as port:
        url = f"nats://127.0.0.1:{port}"
        await _trade_a_write(url, nats_auth(load_settings({"NATS_URL": url, "NATS_CREDS": str(setup["creds"])})))
        with pytest.raises(NatsRefused):
            await Bus.connect(url, name="x", subjects=Subjects("authx"), connect_timeout=3)


async def test_nats_not_there_is_waited_for_not_refused() -> None:
    """Nothing listening is "cannot reach" (the supervisor waits for it), never a refusal."""
    with pytest.raises(BusUnavailable, match="cannot reach NATS") as err:
        await Bus.connect(f"nats://127.0.0.1:{free_port()}", name="x", subjects=Subjects("authx"), connect_timeout=2)
    assert not isinstance(err.value, NatsRefused)


def test_tbx_actor_with_a_wrong_password_exits_2_naming_the_settings(tmp_path: Path) -> None:
    """Regression (review of issue 19 part A, finding 7): wrong credentials were "cannot reach NATS ...:
    'Authorization Violation'", waited for forever. Now a config error: exit 2, one line naming what to check."""
    with nats_server(tmp_path / "srv", "authorization { user: tbx, password: right }\n") as port:
        env = {
            **os.environ, "NATS_URL": f"nats://tbx:wrong@127.0.0.1:{port}", "BUS_PREFIX": "authbad",
            "DATA_DIR": str(tmp_path / "data"), "LOG_LEVEL": "INFO",
        }  # fmt: skip
        proc = subprocess.run(
            [sys.executable, "-m", "tbx.cli", "actor", "portfolio-ledger"], cwd=ROOT, env=env, capture_output=True,
            text=True, timeout=120,
        )  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out[-3000:]
    (line,) = [ln for ln in proc.stderr.splitlines() if ln.startswith("tbx: config error:")]
    assert "Authorization Violation" in line and "NATS_URL" in line and "NATS_CREDS" in line, line
    assert "wrong" not in line  # (the password is never printed)
    assert "cannot reach" not in out and "waits for it" not in out, out[-3000:]


def test_the_settings_name_what_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"NATS_CREDS=.* the file does not exist"):
        load_settings({"NATS_URL": "nats://127.0.0.1:4222", "NATS_CREDS": str(tmp_path / "none.creds")})
    with pytest.raises(ConfigError, match=r"NATS_TLS_CA=.* a directory"):
        load_settings({"NATS_URL": "nats://127.0.0.1:4222", "NATS_TLS_CA": str(tmp_path)})
    cert = tmp_path / "c.pem"
    cert.write_text("x")
    with pytest.raises(ConfigError, match="NATS_TLS_KEY is not set"):
        load_settings({"NATS_URL": "nats://127.0.0.1:4222", "NATS_TLS_CERT": str(cert)})
    with pytest.raises(ConfigError, match="NATS_NKEY_SEED is not allowed together with NATS_CREDS"):
        load_settings({"NATS_URL": "nats://h:4222", "NATS_CREDS": str(cert), "NATS_NKEY_SEED": str(cert)})
    # without NATS_URL the embedded server asks for nothing: said, not silently dropped
    (warning,) = [w for w in warnings_for(load_settings({"NATS_TLS_CA": str(cert)})) if "NATS_TLS_CA" in w]
    assert "ignored" in warning


def test_tbx_actor_joins_a_tls_nats_with_the_files(tmp_path: Path) -> None:
    """The launcher hands the files to every connection it makes (`tbx actor` against a mutual-TLS server)."""
    certs = make_certs(tmp_path / "certs")
    tls = (
        f'tls {{ cert_file: "{certs["server_cert"]}", key_file: "{certs["server_key"]}", '
        f'ca_file: "{certs["ca"]}", verify: true, timeout: 2 }}\n'
    )
    with nats_server(tmp_path / "srv", tls) as port:
        env = {
            **os.environ, "NATS_URL": f"tls://127.0.0.1:{port}", "NATS_TLS_CA": str(certs["ca"]),
            "NATS_TLS_CERT": str(certs["client_cert"]), "NATS_TLS_KEY": str(certs["client_key"]),
            "BUS_PREFIX": "authtbx", "DATA_DIR": str(tmp_path / "data"), "LOG_LEVEL": "INFO",
        }  # fmt: skip
        log = tmp_path / "actor.log"
        with open(log, "wb") as fh:
            proc = subprocess.Popen([sys.executable, "-m", "tbx.cli", "actor", "portfolio-ledger"], cwd=ROOT, env=env,
                                    stdout=fh, stderr=subprocess.STDOUT)  # fmt: skip
        try:
            deadline = time.monotonic() + 60
            while "ready:" not in log.read_text(errors="replace"):
                assert proc.poll() is None, log.read_text(errors="replace")[-3000:]
                assert time.monotonic() < deadline, log.read_text(errors="replace")[-3000:]
                time.sleep(0.1)
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
