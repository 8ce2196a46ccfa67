// The console's replay view (README, "Recording and replay"): a recorded
// session's video with its timeline under it (steps, handoffs, gaps, input per
// second, URLs); clicking an entry seeks the video there. The recording needs
// the bearer token and a <video> cannot send a header, so it is fetched with
// the Authorization header into a blob: the whole file is read before it
// plays (recordings are small at the recorder's frame rate), and no URL
// carrying a credential is ever made.

// GET `path` with the bearer token: the Response, or an Error with the
// server's message.
export async function authorizedGet(token, path) {
  const response = await fetch(path, { headers: { Authorization: `Bearer ${token}` } });
  if (!response.ok) {
    const text = await response.text();
    let message = `GET ${path}: HTTP ${response.status}`;
    try {
      message = JSON.parse(text)?.error?.message || message;
    } catch {
      // Not JSON: the status says it.
    }
    throw new Error(message);
  }
  return response;
}

function seconds(offset) {
  return offset === null || offset === undefined ? "–" : `${offset.toFixed(1)} s`;
}

// The timeline's entries as rows: [offsetS, kind, text], in time order.
export function timelineRows(timeline) {
  const rows = [];
  for (const event of timeline.events) {
    if (event.kind === "control") {
      const who = event.userId ? ` by ${event.userId}` : "";
      const what = event.action ? event.action.replace(/_/g, " ") : "";
      rows.push([event.offsetS, "control", `${what}${who} → ${event.state}`.trim()]);
    } else {
      rows.push([event.offsetS, "step", `step ${event.index + 1}: ${event.action} ${event.status}`]);
    }
  }
  for (const gap of timeline.recording?.gaps || []) {
    rows.push([gap.fromS, "gap", `video paused while a person had control (to ${seconds(gap.toS)})`]);
  }
  for (const input of timeline.inputs || []) {
    rows.push([input.offsetS, "input", `input: ${input.keys} keys, ${input.pointer} pointer`]);
  }
  for (const url of timeline.urls) rows.push([url.offsetS, "url", url.url]);
  return rows.sort((a, b) => (a[0] ?? 0) - (b[0] ?? 0));
}

export class ReplayView {
  // `root`: an empty element the view fills; `token()`: the bearer token.
  constructor(root, token) {
    this.root = root;
    this.token = token;
    this.objectUrl = null;
    root.innerHTML =
      '<h2>Replay <span class="muted" id="replay-session"></span> ' +
      '<button id="replay-close" type="button" class="small">Close</button></h2>' +
      '<video id="replay-video" controls preload="auto"></video>' +
      '<ol id="replay-timeline" class="replay-timeline"></ol>';
    this.video = root.querySelector("#replay-video");
    root.querySelector("#replay-close").addEventListener("click", () => this.close());
  }

  async open(sessionId) {
    const base = `/api/browser-session/${encodeURIComponent(sessionId)}`;
    const timeline = await (await authorizedGet(this.token(), `${base}/timeline`)).json();
    const response = await authorizedGet(this.token(), `${base}/recording`);
    this.release();
    this.objectUrl = URL.createObjectURL(await response.blob());
    this.video.src = this.objectUrl;
    this.root.querySelector("#replay-session").textContent = sessionId;
    this.render(timeline);
    this.root.hidden = false;
  }

  render(timeline) {
    const list = this.root.querySelector("#replay-timeline");
    list.replaceChildren();
    for (const [offset, kind, text] of timelineRows(timeline)) {
      const item = document.createElement("li");
      item.className = `replay-${kind}`;
      item.dataset.offset = offset ?? "";
      const at = document.createElement("button");
      at.type = "button";
      at.className = "small";
      at.textContent = seconds(offset);
      at.disabled = offset === null || offset === undefined;
      at.addEventListener("click", () => {
        this.video.currentTime = Math.max(0, offset);
      });
      const label = document.createElement("span");
      label.textContent = ` ${text}`;
      item.append(at, label);
      list.append(item);
    }
  }

  release() {
    if (this.objectUrl) URL.revokeObjectURL(this.objectUrl);
    this.objectUrl = null;
  }

  close() {
    this.video.removeAttribute("src");
    this.video.load();
    this.release();
    this.root.hidden = true;
  }
}
