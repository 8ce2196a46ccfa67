"""TLS for Baton's gRPC: one definition read by every service's settings.

Plaintext stays the default (every service on 127.0.0.1, `make run`). In a
cluster the services listen on real addresses (README.md, "Network"):

- `BATON_GRPC_TLS_CERT` + `BATON_GRPC_TLS_KEY` (PEM files): every gRPC server
  of the process serves TLS with them, and nothing else.
- `BATON_GRPC_TLS_CA` (PEM): every client of the process uses TLS and accepts
  only servers whose certificate this CA signed, for the name it dials (the
  certificate must name each address others dial: IP or DNS SAN).
- `BATON_GRPC_TLS_CLIENT_CERT` + `BATON_GRPC_TLS_CLIENT_KEY` (mutual TLS):
  clients present this certificate, and servers then demand one signed by
  `BATON_GRPC_TLS_CA` from every caller, health probes included.

The internal credential (services/runtime/internal_auth.py) still goes on
every call on top; TLS is what keeps it, and everything else, off the wire.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import grpc

from services.runtime.settings import ConfigError, Env

CERT = "BATON_GRPC_TLS_CERT"
KEY = "BATON_GRPC_TLS_KEY"
CA = "BATON_GRPC_TLS_CA"
CLIENT_CERT = "BATON_GRPC_TLS_CLIENT_CERT"
CLIENT_KEY = "BATON_GRPC_TLS_CLIENT_KEY"


def read_pem(name: str, path: str | None) -> bytes | None:
    """The contents of the PEM file `path` (named by setting `name`), or a ConfigError."""
    if path is None:
        return None
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"{name}={path}: cannot read it ({exc.strerror})") from None
    if b"-----BEGIN " not in data:
        raise ConfigError(f"{name}={path}: not a PEM file")
    return data


def _pair(env: Env, cert_name: str, key_name: str) -> tuple[bytes | None, bytes | None]:
    cert, key = env.optional(cert_name), env.optional(key_name)
    if (cert is None) != (key is None):
        raise ConfigError(f"set both {cert_name} and {key_name}, or neither")
    return read_pem(cert_name, cert), read_pem(key_name, key)


@dataclass(frozen=True)
class GrpcTls:
    """PEM bytes, read once at start-up; all empty means plaintext."""

    cert: bytes | None = None
    key: bytes | None = field(default=None, repr=False)
    ca: bytes | None = None
    client_cert: bytes | None = None
    client_key: bytes | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if (self.cert is None) != (self.key is None):
            raise ConfigError(f"set both {CERT} and {KEY}, or neither")
        if (self.client_cert is None) != (self.client_key is None):
            raise ConfigError(f"set both {CLIENT_CERT} and {CLIENT_KEY}, or neither")
        if self.client_cert is not None and self.ca is None:
            raise ConfigError(
                f"{CLIENT_CERT} needs {CA}: servers check client certificates with it"
            )

    @classmethod
    def from_env(cls, env: Env) -> GrpcTls:
        cert, key = _pair(env, CERT, KEY)
        client_cert, client_key = _pair(env, CLIENT_CERT, CLIENT_KEY)
        return cls(
            cert=cert,
            key=key,
            ca=read_pem(CA, env.optional(CA)),
            client_cert=client_cert,
            client_key=client_key,
        )

    @property
    def serves_tls(self) -> bool:
        return self.cert is not None

    @property
    def dials_tls(self) -> bool:
        return self.ca is not None

    @property
    def mutual(self) -> bool:
        return self.client_cert is not None

    def server_credentials(self) -> grpc.ServerCredentials | None:
        """TLS credentials for a server, or None for plaintext."""
        if self.cert is None or self.key is None:
            return None
        return grpc.ssl_server_credentials(
            [(self.key, self.cert)],
            root_certificates=self.ca if self.mutual else None,
            require_client_auth=self.mutual,
        )

    def channel_credentials(self) -> grpc.ChannelCredentials | None:
        """TLS credentials for a client, or None for plaintext."""
        if self.ca is None:
            return None
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca,
            private_key=self.client_key,
            certificate_chain=self.client_cert,
        )


PLAINTEXT = GrpcTls()
