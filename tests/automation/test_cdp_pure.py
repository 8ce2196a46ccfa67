"""The CDP hub's framing and the gate's rule for what passes (no browser)."""

from __future__ import annotations

from services.automation.cdp_gate import is_read_only
from services.automation.cdp_hub import _Frames


def test_messages_are_whole_however_the_pipe_cuts_them() -> None:
    got: list[bytes] = []
    frames = _Frames(got.append, lambda: None)
    for chunk in (b'{"id":1', b',"x":"a"}\0{"id":2}\0{"i', b"d", b'":3}\0'):
        frames.data_received(chunk)
    assert got == [b'{"id":1,"x":"a"}', b'{"id":2}', b'{"id":3}']
    big = b"x" * 5_000_000
    for start in range(0, len(big), 65536):
        frames.data_received(big[start : start + 65536])
    frames.data_received(b"\0")
    assert got[-1] == big


def test_reads_and_subscriptions_pass_and_everything_else_waits() -> None:
    for method in (
        "DOM.getDocument",
        "Page.captureScreenshot",
        "Runtime.enable",
        "Target.getTargets",
    ):
        assert is_read_only(method), method
    for method in (
        "Input.dispatchKeyEvent",
        "Page.navigate",
        "Runtime.evaluate",
        "Emulation.setDeviceMetricsOverride",
        "Target.createTarget",
        "Fetch.enable",
        "Debugger.enable",
        "Made.up",
    ):
        assert not is_read_only(method), method
    # A screenshot beyond the viewport resizes the page the person sees.
    assert not is_read_only("Page.captureScreenshot", {"captureBeyondViewport": True})
