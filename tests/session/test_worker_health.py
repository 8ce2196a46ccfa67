"""Worker health: one slow probe under load does not make the service unready."""

from __future__ import annotations

from grpc_health.v1 import health_pb2

from services.session.worker_health import (
    MISSES_BEFORE_NOT_SERVING,
    HealthVerdict,
    WorkerHealthMonitor,
)

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class HealthTwin:
    """Records what the monitor reports for the overall ("") service."""

    def __init__(self) -> None:
        self.reported: list[int] = []

    async def set(self, service: str, status: int) -> None:
        assert service == ""
        self.reported.append(status)


class ScriptedProbe:
    """Answers a worker health probe from a script: True serving, False late or down."""

    def __init__(self, answers: list[bool]) -> None:
        self.answers = list(answers)

    async def __call__(self) -> bool:
        return self.answers.pop(0)


def test_a_serving_host_is_down_only_after_consecutive_misses() -> None:
    verdict = HealthVerdict()
    assert verdict.observe(True) is True
    for _ in range(MISSES_BEFORE_NOT_SERVING - 1):
        assert verdict.observe(False) is True
    # A good probe in between starts the count again.
    assert verdict.observe(True) is True
    for _ in range(MISSES_BEFORE_NOT_SERVING - 1):
        assert verdict.observe(False) is True
    assert verdict.observe(False) is False
    assert verdict.observe(True) is True


def test_a_host_never_seen_serving_is_down_at_once() -> None:
    assert HealthVerdict().observe(False) is False


async def test_the_monitor_reports_a_real_outage_but_not_a_late_answer() -> None:
    health = HealthTwin()
    # Serving, two late answers under load, serving, then down for good.
    probe = ScriptedProbe([True, False, False, True, False, False, False, False])
    monitor = WorkerHealthMonitor(health, [], probe=probe)
    results = [await monitor.check() for _ in range(8)]
    assert results == [True, True, True, True, True, True, False, False]
    # Reported once each way: no flapping of /healthz.
    assert health.reported == [SERVING, NOT_SERVING]
