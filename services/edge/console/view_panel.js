// BrowserViewPanel: the session's live view, a <baton-live-view> of the
// @baton/client package (clients/js) with its own bar hidden (`bare`): the
// console draws the connection state, whether your input counts, the quality
// figures and Fullscreen in its toolbar. The element connects, reconnects with a
// fresh stream URL and sends input only while you hold control.
const $ = (id) => document.getElementById(id);

// The element's connection states as the toolbar badge says them.
const STATUS_BADGES = {
  idle: ["not connected", "off"],
  connecting: ["connecting…", "wait"],
  connected: ["connected", "on"],
  reconnecting: ["reconnecting…", "wait"],
  disconnected: ["disconnected", "off"],
};

export class ViewPanel {
  // onError(detail): the element's baton-error detail ({message, status, code}).
  constructor(onError) {
    this.view = $("screen");
    this.latencyMs = null;
    this.view.addEventListener("baton-connection-change", ({ detail }) => {
      const [text, kind] = STATUS_BADGES[detail.status];
      setBadge($("view-status"), text, kind);
      // Why the stream closed, for whoever hovers (the badge stays one word).
      $("view-status").title = detail.code === null ? "" : `closed (${detail.code}) ${detail.reason ?? ""}`;
      if (detail.status === "connected") this.measureLatency();
      this.render();
    });
    this.view.addEventListener("baton-control-change", () => this.render());
    this.view.addEventListener("baton-error", ({ detail }) => onError(detail));
    $("fullscreen-button").addEventListener("click", () => this.view.toggleFullscreen());
    // Quality: screen updates per second, and the round trip to the edge.
    setInterval(() => {
      const updates = this.view.takeUpdates();
      const latency = this.latencyMs === null ? "–" : `${this.latencyMs} ms`;
      $("view-quality").textContent = this.connected ? `${updates} updates/s · ${latency}` : "–";
    }, 1000);
    setInterval(() => this.measureLatency(), 2000);
  }

  get connected() {
    return this.view.connectionStatus === "connected";
  }

  set tokenProvider(provider) {
    this.view.tokenProvider = provider;
  }

  // Shows the session (null: none); the same id again connects afresh.
  show(sessionId) {
    if (this.view.sessionId === sessionId) this.view.sessionId = null;
    this.view.sessionId = sessionId;
  }

  focus() {
    this.view.focus();
  }

  // Whether your input reaches the browser, as the element decides it.
  render() {
    const interactive = this.view.interactive;
    $("view-mode").textContent = interactive ? "interactive" : "view only";
    $("view-mode").className = `badge ${interactive ? "badge-on" : ""}`;
    this.view.classList.toggle("interactive", interactive);
  }

  async measureLatency() {
    if (!this.connected) return;
    const started = performance.now();
    try {
      await fetch("/healthz", { cache: "no-store" });
      this.latencyMs = Math.round(performance.now() - started);
    } catch {
      this.latencyMs = null;
    }
  }
}

export function setBadge(element, text, kind) {
  element.textContent = text;
  element.className = `badge badge-${kind}`;
}
