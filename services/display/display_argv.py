"""Pure argv builders for the programs a slot runs.

Every VNC and X listener is loopback-only; only the host's websockify may face
the network (README.md, "Network")."""

from __future__ import annotations

from pathlib import Path

from services.display.slot import Viewport


def xvnc_argv(
    xvnc: str,
    display: int,
    viewport: Viewport,
    vnc_port: int,
    password_file: Path,
    xauthority: Path,
) -> list[str]:
    """TigerVNC Xvnc: the X server and the VNC server in one process."""
    return [
        xvnc,
        f":{display}",
        # X clients need the display's cookie (services/display/x_authority.py).
        "-auth",
        str(xauthority),
        "-geometry",
        str(viewport),
        "-depth",
        "24",
        "-rfbport",
        str(vnc_port),
        # Bind 127.0.0.1 only, refuse anything not from loopback, and even
        # there only with the slot's password, which only Baton knows.
        "-interface",
        "127.0.0.1",
        "-localhost",
        "-SecurityTypes",
        "VncAuth",
        "-PasswordFile",
        str(password_file),
        # Every viewer reaches Xvnc from 127.0.0.1 through websockify and the
        # edge, so a blacklist entry would lock all of them out: never lock.
        # The edge times out stalled handshakes itself (services/edge/README.md).
        "-BlacklistThreshold",
        "1000000",
        "-BlacklistTimeout",
        "0",
        # Several viewers watch one screen; a new one must not drop the others.
        "-AlwaysShared",
        # The screen size belongs to the slot, not to whichever viewer asks.
        "-AcceptSetDesktopSize=0",
        "-nolisten",
        "tcp",
    ]


def xvfb_argv(xvfb: str, display: int, viewport: Viewport, xauthority: Path) -> list[str]:
    return [
        xvfb,
        f":{display}",
        "-auth",
        str(xauthority),
        "-screen",
        "0",
        f"{viewport}x24",
        "-nolisten",
        "tcp",
    ]


def x11vnc_argv(
    x11vnc: str, display: int, vnc_port: int, password_file: Path, xauthority: Path
) -> list[str]:
    return [
        x11vnc,
        "-display",
        f":{display}",
        "-auth",
        str(xauthority),
        # The slot's password in vncpasswd's format; only Baton knows it.
        "-rfbauth",
        str(password_file),
        "-rfbport",
        str(vnc_port),
        # Listen on 127.0.0.1 only, and not on IPv6 at all.
        "-localhost",
        "-noipv6",
        "-shared",
        "-forever",
        # No ~/.x11vncrc or other user configuration changes what we run.
        "-norc",
        "-xkb",
        "-quiet",
    ]


def websockify_argv(
    python: str,
    port: int,
    token_dir: Path,
    host: str = "127.0.0.1",
    cert: str | None = None,
    key: str | None = None,
) -> list[str]:
    """One websockify for the host; each slot is a token file in `token_dir`.

    With `cert` and `key` it speaks TLS only: a plain ws:// client is refused.
    """
    tls = ["--cert", cert, "--key", key, "--ssl-only"] if cert and key else []
    return [
        python,
        "-m",
        "websockify",
        "--token-plugin",
        "TokenFileName",
        "--token-source",
        str(token_dir),
        *tls,
        f"{host}:{port}",
    ]


# A recording's cost is set here (bench/README.md, "Recording"): few frames, at
# most 1280 px wide, the fastest x264 preset; a keyframe (so a new MP4 fragment)
# every 2 s, so a host that dies loses at most the last 2 s of video.
RECORDING_FPS = 5
RECORDING_MAX_WIDTH = 1280
RECORDING_KEYFRAME_S = 2


def recording_size(viewport: Viewport, max_width: int = RECORDING_MAX_WIDTH) -> Viewport:
    """The video's size: the display's, scaled down to `max_width`, both even (x264)."""
    width = min(viewport.width, max_width)
    height = viewport.height * width // viewport.width
    return Viewport(width - width % 2, height - height % 2)


def ffmpeg_argv(ffmpeg: str, display: int, viewport: Viewport, output: Path) -> list[str]:
    """ffmpeg grabbing the slot's X display (it needs the display's cookie in
    XAUTHORITY) into H.264 in fragmented MP4, each fragment written as it is made."""
    size = recording_size(viewport)
    return [
        ffmpeg,
        "-hide_banner",
        "-loglevel",
        "error",
        "-f",
        "x11grab",
        # Each frame stamped with the time it was grabbed: a recording held
        # (SIGSTOP, recordDuringTakeover false) shows its last frame until it goes
        # on, rather than catching up with frames of what happened meanwhile.
        "-use_wallclock_as_timestamps",
        "1",
        "-framerate",
        str(RECORDING_FPS),
        "-video_size",
        str(viewport),
        "-i",
        f":{display}",
        "-vf",
        f"scale={size.width}:{size.height}",
        # Frames keep the times they were grabbed: no frames are made up to fill
        # a held stretch, so the video shows its last frame until it goes on.
        "-fps_mode",
        "vfr",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-tune",
        "zerolatency",
        "-crf",
        "30",
        "-pix_fmt",
        "yuv420p",
        "-g",
        str(RECORDING_FPS * RECORDING_KEYFRAME_S),
        # No index at the end to wait for: a moov first, then self-contained
        # fragments, so the file plays (and is served) while it grows.
        "-movflags",
        "frag_keyframe+empty_moov+default_base_moof",
        # Each fragment reaches the file when made, not when 32 KiB have piled up.
        "-flush_packets",
        "1",
        "-f",
        "mp4",
        "-y",
        str(output),
    ]
