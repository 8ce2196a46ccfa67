"""A real S3-compatible HTTP server for the tests: moto's, on a free loopback
port, with one bucket made (README.md, "Recording")."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import boto3
from moto.server import ThreadedMotoServer

from services.display.settings import RecordingBucket

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

ACCESS_KEY = "test-access-key"
SECRET_KEY = "test-secret-key"


@dataclass
class S3Server:
    server: ThreadedMotoServer
    host: str
    port: int
    up: bool = True

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def bucket(self, prefix: str = "rec/") -> RecordingBucket:
        """Settings for a new, empty bucket of this server."""
        name = f"baton-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return RecordingBucket(
            bucket=name,
            endpoint_url=self.url,
            prefix=prefix,
            access_key_id=ACCESS_KEY,
            secret_access_key=SECRET_KEY,
        )

    def client(self) -> S3Client:
        return boto3.client(
            "s3",
            endpoint_url=self.url,
            region_name="us-east-1",
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
        )

    def stop(self) -> None:
        if self.up:
            self.server.stop()
            self.up = False

    def restart(self) -> None:
        """Up again on the same port; moto keeps its buckets in the process."""
        self.server = ThreadedMotoServer(self.host, self.port, verbose=False)
        self.server.start()
        self.up = True


@contextlib.contextmanager
def s3_server() -> Iterator[S3Server]:
    server = ThreadedMotoServer("127.0.0.1", 0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    running = S3Server(server, host, port)
    try:
        yield running
    finally:
        running.stop()
