"""Test support: a private Xvfb and a loopback web server with pages that record."""

from __future__ import annotations

import html
import json
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from tests.conftest import stop_process

DISPLAY_NUMBERS = range(400, 500)


@contextmanager
def private_xvfb(
    width: int = 1280, height: int = 720, numbers: range = DISPLAY_NUMBERS
) -> Iterator[str]:
    """An Xvfb on a free display number in `numbers` (400-499); yields ":N"; kills only it."""
    for number in numbers:
        if Path(f"/tmp/.X{number}-lock").exists():
            continue
        process = subprocess.Popen(
            ["Xvfb", f":{number}", "-screen", "0", f"{width}x{height}x24", "-nolisten", "tcp"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        socket_path = Path(f"/tmp/.X11-unix/X{number}")
        deadline = time.monotonic() + 10
        while process.poll() is None and not socket_path.exists():
            if time.monotonic() > deadline:
                break
            time.sleep(0.02)
        if process.poll() is not None or not socket_path.exists():
            # Lost a race for the number to someone else: try the next one.
            process.kill()
            process.wait()
            continue
        try:
            yield f":{number}"
        finally:
            stop_process(process, grace_s=5)
        return
    raise RuntimeError("no free X display number in 400-499")


FORM_PAGE = """<!doctype html>
<title>Sign up</title>
<h1>Sign up</h1>
<form method="post" action="/submit">
  <label>Name <input id="name" name="name"></label>
  <label>Email <input id="email" name="email" type="email"></label>
  <label>Password <input id="password" name="password" type="password"></label>
  <label>Colour <select id="colour" name="colour">
    <option value="red">Red</option><option value="green">Green</option>
  </select></label>
  <button id="submit" type="submit">Create account</button>
</form>"""

# A GET form: what is typed goes into the next page's URL (and its title).
SEARCH_PAGE = """<!doctype html>
<title>Search</title>
<form method="get" action="/results">
  <label>Search <input id="q" name="q"></label>
  <button id="go" type="submit">Go</button>
</form>"""
RESULTS_PAGE = (
    """<!doctype html><title>Results for {q}</title><h1 id="results">Results for {q}</h1>"""
)

THANKS_PAGE = """<!doctype html><title>Thanks</title><h1 id="thanks">Thanks, {name}</h1>"""

# Every event the agent could cause is posted to /log with the page's clock.
EVENTS_PAGE = """<!doctype html>
<title>Events</title>
<h1>Events</h1>
<button id="step">Step</button>
<p id="count">0</p>
<input id="text">
<script>
let count = 0;
function record(kind, detail) {
  fetch('/log', {method: 'POST', keepalive: true,
    body: JSON.stringify({kind: kind, detail: detail, at: Date.now()})});
}
for (const kind of ['click', 'keydown', 'input', 'wheel', 'mousedown']) {
  document.addEventListener(kind, e => {
    if (kind === 'click' && e.target.id === 'step') return;
    record(kind, e.target.id || e.target.tagName);
  }, true);
}
// ?late=MS adds a #late button after MS milliseconds.
const late = new URLSearchParams(location.search).get('late');
if (late) {
  setTimeout(() => {
    const extra = document.createElement('button');
    extra.id = 'late';
    extra.textContent = 'Late';
    document.body.append(extra);
    record('appeared', 'late');
  }, Number(late));
}
const button = document.getElementById('step');
button.addEventListener('click', () => {
  count += 1;
  document.getElementById('count').textContent = String(count);
  record('step', String(count));
  // Each step takes 200 ms: the next click waits for the button to be enabled.
  button.disabled = true;
  setTimeout(() => { button.disabled = false; }, 200);
});
</script>"""

GUESTBOOK_PAGE = """<!doctype html>
<title>Guestbook</title>
<h1>Guestbook</h1>
<label>Your name <input id="guest" aria-label="Your name"></label>
<button onclick="sign()">Sign</button>
<p id="message"></p>
<script>
function sign() {
  const name = document.getElementById('guest').value;
  fetch('/log', {method: 'POST', body: JSON.stringify({kind: 'signed', detail: name,
    at: Date.now()})});
  document.getElementById('message').textContent = 'Signed by ' + name;
}
</script>"""

LOGIN_PAGE = """<!doctype html>
<title>Sign in</title>
<label>User <input id="user"></label>
<label>Password <input id="pw" type="password"></label>
<button id="go">Sign in</button>"""

# The CSP blocks the frame before any request: the widget's address is on the
# page, as on a real site, without the test reaching the internet.
CAPTCHA_PAGE = """<!doctype html>
<meta http-equiv="Content-Security-Policy" content="frame-src 'none'">
<title>Checkout</title>
<iframe title="hCaptcha" src="https://newassets.hcaptcha.com/captcha/v1/x/static/hcaptcha.html"></iframe>
<button id="buy">Buy</button>"""


@dataclass
class Recorder:
    submissions: list[dict[str, str]] = field(default_factory=list)
    events: list[dict[str, object]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def clear(self) -> None:
        with self.lock:
            self.submissions.clear()
            self.events.clear()

    def page_events(self, kind: str | None = None) -> list[dict[str, object]]:
        with self.lock:
            return [e for e in self.events if kind is None or e.get("kind") == kind]


class _Handler(BaseHTTPRequestHandler):
    recorder: Recorder

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _send(self, body: str, status: int = 200, content_type: str = "text/html") -> None:
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", f"{content_type}; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        pages = {
            "/form": FORM_PAGE,
            "/search": SEARCH_PAGE,
            "/events": EVENTS_PAGE,
            "/guestbook": GUESTBOOK_PAGE,
            "/login": LOGIN_PAGE,
            "/captcha": CAPTCHA_PAGE,
        }
        path = urlsplit(self.path).path
        if path == "/results":
            query = parse_qs(urlsplit(self.path).query)
            self._send(RESULTS_PAGE.format(q=html.escape(query.get("q", [""])[0])))
        elif path in pages:
            self._send(pages[path])
        else:
            self._send("not found", 404, "text/plain")

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length).decode()
        path = urlsplit(self.path).path
        if path == "/submit":
            values = {key: items[0] for key, items in parse_qs(body).items()}
            with self.recorder.lock:
                self.recorder.submissions.append(values)
            self._send(THANKS_PAGE.format(name=values.get("name", "")))
        elif path == "/log":
            with self.recorder.lock:
                self.recorder.events.append(json.loads(body))
            self._send("", 204, "text/plain")
        else:
            self._send("not found", 404, "text/plain")


@dataclass
class PageServer:
    base_url: str
    recorder: Recorder


@contextmanager
def page_server() -> Iterator[PageServer]:
    recorder = Recorder()
    handler = type("Handler", (_Handler,), {"recorder": recorder})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield PageServer(f"http://127.0.0.1:{server.server_address[1]}", recorder)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
