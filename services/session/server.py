"""Assemble and start the session service."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import grpc

from baton.session.v1 import session_pb2, session_pb2_grpc
from services.runtime.grpc_server import RunningServer, start_server
from services.session.audit_log import AuditLog, MemoryAuditLog, SqliteAuditLog
from services.session.coordination import Coordination, open_coordination
from services.session.etcd_audit_log import EtcdAuditLog, audit_prefix_of
from services.session.etcd_directory import EtcdWorkerDirectory
from services.session.etcd_store import EtcdStore
from services.session.grpc_workers import grpc_worker_host
from services.session.orchestrator import SessionOrchestrator
from services.session.servicer import SessionServicer
from services.session.settings import SessionSettings
from services.session.sqlite_store import SqliteStore
from services.session.store import MemoryStore, SessionStore
from services.session.webhook_delivery import WebhookSender
from services.session.worker_health import WorkerHealthMonitor
from services.session.workers import StaticWorkerDirectory, WorkerDirectory, WorkerHost

SERVICE_NAME = session_pb2.DESCRIPTOR.services_by_name["SessionService"].full_name


def open_store(settings: SessionSettings, coordination: Coordination) -> SessionStore:
    if coordination.etcd is not None:
        return EtcdStore(coordination.etcd)
    if settings.state_dir is not None:
        return SqliteStore.open(settings.state_dir)
    return MemoryStore()


def open_audit_log(store: SessionStore) -> AuditLog:
    """The audit trail beside `store`: in its SQLite file, under its etcd, or in memory."""
    if isinstance(store, SqliteStore):
        return SqliteAuditLog(store.connection)
    if isinstance(store, EtcdStore):
        return EtcdAuditLog(store.etcd, audit_prefix_of(store.prefix))
    return MemoryAuditLog()


async def _nothing() -> None:
    return None


@dataclass
class OpenDirectory:
    directory: WorkerDirectory
    # The fixed host's channels: its health is the service's (worker_health.py).
    channels: list[grpc.aio.Channel] = field(default_factory=list)
    close: Callable[[], Awaitable[None]] = _nothing


async def open_directory(settings: SessionSettings) -> OpenDirectory:
    """The worker hosts sessions are placed on (README.md, "Cluster")."""
    if settings.static_workers:
        # No etcd, or BATON_DISPLAY_ADDRESS set: one fixed host (`make run`).
        host, channels = grpc_worker_host(
            settings.host_id,
            settings.display_address,
            settings.automation_address,
            settings.internal_token,
            settings.grpc_tls,
        )
        return OpenDirectory(StaticWorkerDirectory(host), channels)
    # --- The cluster's directory plugs in here. ---
    # The worker registry (/baton/workers/), with channels to each live host.
    directory = EtcdWorkerDirectory(settings.etcd_endpoints, settings.internal_token)
    await directory.start()
    return OpenDirectory(directory, [], directory.close)


async def start_session_server(
    settings: SessionSettings,
    address: str = "127.0.0.1:0",
    worker: WorkerHost | None = None,
    store: SessionStore | None = None,
    directory: WorkerDirectory | None = None,
) -> RunningServer:
    """Start the service on `address`; the workers (`directory`, or one fixed
    `worker`) and `store` default from settings."""
    if directory is not None:
        opened = OpenDirectory(directory)
    elif worker is not None:
        opened = OpenDirectory(StaticWorkerDirectory(worker))
    else:
        opened = await open_directory(settings)
    # The fence, the create lock and the task claims: shared through etcd by replicas.
    coordination = await open_coordination(settings)
    if store is None:
        store = open_store(settings, coordination)
    # Webhooks go from the replica whose write made the event (webhooks.py).
    webhooks = WebhookSender(settings.webhook) if settings.webhook.enabled else None
    orchestrator = SessionOrchestrator(
        store,
        opened.directory,
        settings,
        owners=coordination.owners,
        fence=coordination.fence,
        user_lock=coordination.user_lock,
        webhooks=webhooks,
        audit_log=open_audit_log(store),
    )
    servicer = SessionServicer(orchestrator, webhooks.stats if webhooks else None)
    running = await start_server(
        lambda server: session_pb2_grpc.add_SessionServiceServicer_to_server(servicer, server),
        [SERVICE_NAME],
        address,
        settings.internal_token,
        settings.grpc_tls,
    )
    orchestrator.start_background()
    channels = opened.channels
    monitor = WorkerHealthMonitor(running.health, channels)
    if channels:
        await monitor.check()
        monitor.start()

    async def stop_background() -> None:
        await monitor.stop()
        await orchestrator.close()
        if webhooks is not None:
            await webhooks.close()
        await store.close()
        await coordination.close()
        await opened.close()
        for channel in channels:
            await channel.close(None)

    running.on_stop.append(stop_background)
    return running
