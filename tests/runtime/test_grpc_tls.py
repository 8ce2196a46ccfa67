"""gRPC TLS (services/runtime/grpc_tls.py): real servers and clients on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from services.runtime import grpc_tls
from services.runtime.grpc_client import is_serving, open_channel
from services.runtime.grpc_server import RunningServer, start_server
from services.runtime.grpc_tls import PLAINTEXT, GrpcTls
from services.runtime.settings import ConfigError, Env
from tests.conftest import INTERNAL_TOKEN
from tests.runtime.test_grpc_runtime import register
from tests.tls_certs import TestCa


def tls_env(ca: TestCa, mutual: bool = False) -> dict[str, str]:
    server = ca.issue("server")
    env = {
        grpc_tls.CERT: str(server.cert),
        grpc_tls.KEY: str(server.key),
        grpc_tls.CA: str(ca.cert),
    }
    if mutual:
        client = ca.issue("client")
        env |= {grpc_tls.CLIENT_CERT: str(client.cert), grpc_tls.CLIENT_KEY: str(client.key)}
    return env


async def start(tls: GrpcTls) -> RunningServer:
    return await start_server(register, ["test.Probe"], "127.0.0.1:0", INTERNAL_TOKEN, tls)


async def trace_call(channel: grpc.aio.Channel) -> bytes:
    """An authenticated call: the internal credential crossed the TLS channel."""
    reply: bytes = await channel.unary_unary("/test.Probe/TraceId", None, None)(b"", timeout=5)
    return reply


@pytest.fixture
async def tls_server(tmp_path: Path) -> AsyncIterator[tuple[RunningServer, GrpcTls]]:
    tls = GrpcTls.from_env(Env(tls_env(TestCa(tmp_path))))
    running = await start(tls)
    yield running, tls
    await running.stop(grace=1)


async def test_a_client_with_the_ca_calls_a_tls_server(
    tls_server: tuple[RunningServer, GrpcTls],
) -> None:
    running, tls = tls_server
    async with open_channel(f"127.0.0.1:{running.port}", INTERNAL_TOKEN, tls) as channel:
        assert await is_serving(channel)
        assert len(await trace_call(channel)) == 32


async def test_a_plaintext_client_is_refused(tls_server: tuple[RunningServer, GrpcTls]) -> None:
    running, tls = tls_server
    target = f"127.0.0.1:{running.port}"
    async with open_channel(target, INTERNAL_TOKEN, PLAINTEXT) as channel:
        assert not await is_serving(channel, deadline_s=2)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await trace_call(channel)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    # The same server at the same moment, with the CA: it was live.
    async with open_channel(target, INTERNAL_TOKEN, tls) as channel:
        assert await is_serving(channel)


async def test_a_client_trusting_another_ca_is_refused(
    tls_server: tuple[RunningServer, GrpcTls], tmp_path: Path
) -> None:
    running, tls = tls_server
    other = GrpcTls(ca=TestCa(tmp_path / "other", "Someone else's CA").cert.read_bytes())
    target = f"127.0.0.1:{running.port}"
    async with open_channel(target, INTERNAL_TOKEN, other) as channel:
        assert not await is_serving(channel, deadline_s=2)
    async with open_channel(target, INTERNAL_TOKEN, tls) as channel:
        assert await is_serving(channel)


async def test_a_server_refuses_a_certificate_made_for_another_address(tmp_path: Path) -> None:
    ca = TestCa(tmp_path)
    elsewhere = ca.issue("elsewhere", ("10.201.0.9",))
    tls = GrpcTls(
        cert=elsewhere.cert.read_bytes(), key=elsewhere.key.read_bytes(), ca=ca.cert.read_bytes()
    )
    running = await start(tls)
    try:
        async with open_channel(f"127.0.0.1:{running.port}", INTERNAL_TOKEN, tls) as channel:
            assert not await is_serving(channel, deadline_s=2)
    finally:
        await running.stop(grace=1)


async def test_mutual_tls_refuses_a_client_without_a_certificate(tmp_path: Path) -> None:
    tls = GrpcTls.from_env(Env(tls_env(TestCa(tmp_path), mutual=True)))
    assert tls.mutual
    running = await start(tls)
    target = f"127.0.0.1:{running.port}"
    try:
        anonymous = GrpcTls(ca=tls.ca)
        async with open_channel(target, INTERNAL_TOKEN, anonymous) as channel:
            assert not await is_serving(channel, deadline_s=2)
        async with open_channel(target, INTERNAL_TOKEN, tls) as channel:
            assert await is_serving(channel)
            assert len(await trace_call(channel)) == 32
    finally:
        await running.stop(grace=1)


async def test_tls_keeps_the_internal_credential_required(
    tls_server: tuple[RunningServer, GrpcTls],
) -> None:
    running, tls = tls_server
    credentials = tls.channel_credentials()
    assert credentials is not None
    async with grpc.aio.secure_channel(f"127.0.0.1:{running.port}", credentials) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await trace_call(channel)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_settings_are_plaintext_by_default_and_refuse_half_configurations(
    tmp_path: Path,
) -> None:
    assert GrpcTls.from_env(Env({})) == PLAINTEXT
    assert not PLAINTEXT.serves_tls and not PLAINTEXT.dials_tls
    env = tls_env(TestCa(tmp_path), mutual=True)
    with pytest.raises(ConfigError, match="BATON_GRPC_TLS_KEY"):
        GrpcTls.from_env(Env({grpc_tls.CERT: env[grpc_tls.CERT]}))
    with pytest.raises(ConfigError, match="needs BATON_GRPC_TLS_CA"):
        GrpcTls.from_env(Env({k: env[k] for k in (grpc_tls.CLIENT_CERT, grpc_tls.CLIENT_KEY)}))
    with pytest.raises(ConfigError, match="cannot read"):
        GrpcTls.from_env(Env({grpc_tls.CA: str(tmp_path / "missing.pem")}))
    (tmp_path / "junk.pem").write_text("not a certificate")
    with pytest.raises(ConfigError, match="not a PEM"):
        GrpcTls.from_env(Env({grpc_tls.CA: str(tmp_path / "junk.pem")}))
    # The private keys never appear in a printed settings object.
    assert "PRIVATE" not in repr(GrpcTls.from_env(Env(env)))
