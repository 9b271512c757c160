"""Redis URLs: both clients read them as redis-py does (`gateway.redis_url`); options one client would not honour
are startup errors without the password; a real TLS redis-server (throwaway CA in tmp_path) serves both clients."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from gateway.redis_link import redis_client
from gateway.redis_url import RedisUrlError, redacted, redis_target
from gateway.resp import PipelinedRedis, RedisAuthError
from gateway.settings import SettingsError, load_settings

TLS_PORT = 6415


def _tls_build() -> bool:
    binary = shutil.which("redis-server")
    if not binary:
        return False
    out = subprocess.run([binary, "--port", "0", "--tls-port", "0", "--tls-cert-file", "/nonexistent"],
                         capture_output=True, text=True, timeout=10)
    return "Bad directive" not in out.stdout + out.stderr


TLS = pytest.mark.skipif(not _tls_build(), reason="redis-server built without TLS")


def test_unsupported_options_are_refused_by_name_without_the_password() -> None:
    for url, message in [
        ("redis://:hunter2@h/0?socket_timeout=5", "unsupported option(s) socket_timeout"),
        ("redis://:hunter2@h/0?ssl_cert_reqs=none", "ssl_cert_reqs: TLS options need a rediss:// URL"),
        ("redis+sentinel://u:hunter2@h/mymaster", "'redis+sentinel://u:***@h/mymaster'"),
        ("rediss://:hunter2@h/0?ssl_ca_certs=/nope.crt", "cannot build the TLS context (ssl_ca_certs=/nope.crt)"),
    ]:
        with pytest.raises(RedisUrlError) as info:
            redis_target(url)
        assert message in str(info.value) and "hunter2" not in str(info.value)
    with pytest.raises(SettingsError) as info:
        load_settings(environ={}, overrides={"cache": {"redis_url": "rediss://:hunter2@h/0?ssl_ca_certs=/nope.crt"}})
    assert str(info.value).startswith("cache.redis_url: cannot build the TLS context") and "hunter2" not in str(info.value)
    assert redacted("rediss://app:p@ss@h:1/2?ssl_password=x") == "rediss://app:***@h:1/2?ssl_password=***"


def test_target_follows_redis_py() -> None:
    t = redis_target("unix://app:pw@/tmp/r.sock?db=3&client_name=gw")
    assert (t.path, t.db, t.username, t.password, t.client_name, t.tls) == ("/tmp/r.sock", 3, "app", "pw", "gw", None)
    tls = redis_target("rediss://h:7000/2?ssl_cert_reqs=none").tls
    assert tls is not None and (tls.verify_mode.name, tls.check_hostname) == ("CERT_NONE", False)


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    d = tmp_path_factory.mktemp("pki")
    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True, timeout=30)
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "1", "-subj", "/CN=ca")
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "other.key", "-out", "other.crt", "-days", "1", "-subj", "/CN=other")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost")
    (d / "ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-out",
        "server.crt", "-days", "1", "-extfile", "ext")
    proc = subprocess.Popen(["redis-server", "--port", "0", "--tls-port", str(TLS_PORT), "--bind", "127.0.0.1",
                             "--tls-cert-file", "server.crt", "--tls-key-file", "server.key", "--tls-ca-cert-file",
                             "ca.crt", "--tls-auth-clients", "no", "--save", ""], cwd=d,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.3)
    try:
        yield d
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@TLS
def test_both_clients_over_tls(tls_server: Path) -> None:
    url = f"rediss://127.0.0.1:{TLS_PORT}/14?ssl_ca_certs={tls_server}/ca.crt"

    async def go() -> tuple[object, object]:
        own = PipelinedRedis(url, timeout=2)
        py = redis_client(url, timeout_seconds=2, max_connections=2)
        await py.set("tls:k", b"from redis-py")
        await own.execute("SET", "tls:k2", b"from resp")
        out = (await own.execute("GET", "tls:k"), await py.get("tls:k2"))
        await own.close()
        await py.aclose()
        return out

    assert asyncio.run(asyncio.wait_for(go(), 10)) == (b"from redis-py", b"from resp")


@TLS
def test_wrong_ca_fails_alike(tls_server: Path) -> None:
    url = f"rediss://127.0.0.1:{TLS_PORT}/14?ssl_cert_reqs=required&ssl_ca_certs={tls_server}/other.crt"

    async def go() -> list[str]:
        out = []
        own = PipelinedRedis(url, timeout=2)
        py = redis_client(url, timeout_seconds=2, max_connections=2)
        for call in (lambda: own.execute("PING"), py.ping):
            try:
                await call()
            except (OSError, RedisConnectionError) as exc:  # both: a connection failure (the breakers count it)
                out.append("CERTIFICATE_VERIFY_FAILED" in str(exc))
        await py.aclose()
        return out

    assert asyncio.run(asyncio.wait_for(go(), 10)) == [True, True]


def test_auth_refusal_is_a_connection_error_without_the_password() -> None:
    async def go() -> str:
        own = PipelinedRedis("redis://nobody:hunter2@127.0.0.1:6379/14", timeout=2)
        with pytest.raises(RedisAuthError) as info:
            await own.execute("PING")
        return str(info.value)

    message = asyncio.run(asyncio.wait_for(go(), 10))
    assert message == "redis refused: WRONGPASS invalid username-password pair or user is disabled."
