"""The edge as a program: settings, `python -m services.edge`, HTTPS and WSS."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import os
import re
import signal
import socket
import ssl
import sys
from pathlib import Path

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from websockets.asyncio.client import connect
from websockets.typing import Subprotocol

from services.edge.server import bind_listener
from services.edge.settings import EdgeSettings
from services.runtime.settings import ConfigError, Env
from tests.conftest import INTERNAL_TOKEN, free_port
from tests.edge.harness import SERVER_VERSION, bearer, running_stack, user_token

REPO = Path(__file__).resolve().parents[2]


def test_settings_defaults_and_environment() -> None:
    internal = {"BATON_INTERNAL_TOKEN": INTERNAL_TOKEN.value}
    assert EdgeSettings.from_env(Env(internal)) == EdgeSettings(internal_token=INTERNAL_TOKEN)
    settings = EdgeSettings.from_env(
        Env(
            {
                **internal,
                "BATON_EDGE_HOST": "0.0.0.0",
                "BATON_EDGE_PORT": "9443",
                "BATON_SESSION_PORT": "6000",
                "BATON_API_TOKEN": "t0ken",
                "BATON_JWT_SECRET": "s3cret-of-at-least-32-bytes-0123",
                "BATON_TLS_CERT": "/etc/baton/cert.pem",
                "BATON_TLS_KEY": "/etc/baton/key.pem",
            }
        )
    )
    assert (settings.host, settings.port) == ("0.0.0.0", 9443)
    assert settings.session_address == "127.0.0.1:6000"
    assert (settings.api_token, settings.jwt_secret) == (
        "t0ken",
        "s3cret-of-at-least-32-bytes-0123",
    )
    assert settings.tls
    with pytest.raises(ConfigError, match="BATON_TLS_KEY"):
        EdgeSettings.from_env(Env({"BATON_TLS_CERT": "/etc/baton/cert.pem"}))
    # Short enough to guess offline from one token, then forge anyone's.
    with pytest.raises(ConfigError, match="BATON_JWT_SECRET"):
        EdgeSettings.from_env(Env({"BATON_JWT_SECRET": "s3cret"}))


async def read_console_url(stream: asyncio.StreamReader) -> str:
    while True:
        line = (await stream.readline()).decode()
        assert line, "the edge exited before printing the console URL"
        found = re.search(r"Baton console: (\S+)", line)
        if found:
            return found.group(1)


async def test_main_generates_a_token_prints_the_url_and_stops_on_sigterm() -> None:
    port = free_port()
    env = {
        **os.environ,
        "BATON_EDGE_PORT": str(port),
        "BATON_SESSION_PORT": str(free_port()),
        "BATON_API_TOKEN": "",
        "BATON_INTERNAL_TOKEN": INTERNAL_TOKEN.value,
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.edge",
        cwd=REPO,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stderr is not None
        url = await read_console_url(process.stderr)
        base, _, token = url.partition("/#token=")
        assert base == f"http://127.0.0.1:{port}"
        assert len(token) >= 32
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/api/browser-session", headers=bearer(token)) as answer:
                # Authenticated, but no session service is listening.
                assert answer.status == 503
            async with http.get(f"{base}/api/browser-session", headers=bearer("guess")) as answer:
                assert answer.status == 401
        process.send_signal(signal.SIGTERM)
        assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


def write_self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


async def test_https_and_wss_with_a_certificate(tmp_path: Path) -> None:
    cert, key = write_self_signed(tmp_path)
    trust = ssl.create_default_context(cafile=str(cert))
    alice = user_token("alice")
    async with running_stack(tls_certfile=str(cert), tls_keyfile=str(key)) as stack:
        assert stack.url.startswith("https://127.0.0.1:")
        async with stack.http.get(f"{stack.url}/healthz", ssl=trust) as answer:
            assert answer.status == 200
        async with stack.http.post(
            f"{stack.url}/api/browser-session",
            json={"task": "t", "url": "http://127.0.0.1:9/"},
            headers=bearer(alice),
            ssl=trust,
        ) as answer:
            session = await answer.json()
        async with stack.http.get(
            f"{stack.url}/api/browser-session/{session['id']}/stream",
            headers=bearer(alice),
            ssl=trust,
        ) as answer:
            url = (await answer.json())["url"]
        assert url.startswith(f"wss://127.0.0.1:{stack.edge.port}/")
        async with connect(
            url, subprotocols=[Subprotocol("binary")], ssl=trust, proxy=None
        ) as viewer:
            assert await viewer.recv() == SERVER_VERSION


async def test_accepted_connections_send_without_waiting_for_acks() -> None:
    # Without TCP_NODELAY a response written as head then body waits for the
    # client's delayed ACK: about 40 ms per request on a kept-alive connection.
    listener = bind_listener("127.0.0.1", 0)
    nodelay: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    def accepted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        nodelay.set_result(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        writer.close()

    server = await asyncio.start_server(accepted, sock=listener)
    async with server:
        _, writer = await asyncio.open_connection(*listener.getsockname()[:2])
        assert await asyncio.wait_for(nodelay, 5) != 0
        writer.close()
        await writer.wait_closed()
