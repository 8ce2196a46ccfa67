// The console's audit view, for operators (README, "Audit trail"): the audit
// events of GET /api/audit (JSON lines, oldest first) shown newest first,
// filtered by session when one is given.
import { authorizedGet } from "/console/replay.js";

function row(event) {
  const item = document.createElement("li");
  item.dataset.kind = event.kind;
  const detail = Object.entries(event.detail || {})
    .map(([key, value]) => `${key}=${value}`)
    .join(" ");
  item.textContent =
    `${event.at} · ${event.kind} · ${event.userId || "(baton)"} · ` +
    `${event.sourceAddress || "-"} · ${event.sessionId} ${detail}`.trim();
  return item;
}

export class AuditView {
  // `root`: an empty element the view fills; `token()`: the bearer token.
  constructor(root, token, onError) {
    this.root = root;
    this.token = token;
    this.onError = onError;
    root.innerHTML =
      '<h2>Audit <button id="audit-refresh" type="button" class="small">Refresh</button></h2>' +
      '<input id="audit-session" placeholder="session id (all when empty)">' +
      '<ol id="audit-list" class="audit-list"></ol>';
    root.querySelector("#audit-refresh").addEventListener("click", () => this.refresh());
    root.querySelector("#audit-session").addEventListener("change", () => this.refresh());
  }

  async refresh() {
    const sessionId = this.root.querySelector("#audit-session").value.trim();
    const query = sessionId ? `?sessionId=${encodeURIComponent(sessionId)}` : "";
    try {
      const text = await (await authorizedGet(this.token(), `/api/audit${query}`)).text();
      const events = text.split("\n").filter(Boolean).map((line) => JSON.parse(line));
      this.root.querySelector("#audit-list").replaceChildren(...events.reverse().map(row));
      this.root.hidden = false;
    } catch (error) {
      this.onError(`Could not read the audit trail: ${error.message}`);
    }
  }
}
