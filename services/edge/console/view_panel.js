// BrowserViewPanel: the session's live view, a <baton-live-view> of the
// @baton/client package (clients/js) with its own bar hidden (`bare`): the
// console draws the connection state, whether your input counts, the quality
// figures and Fullscreen in its toolbar. The element connects, reconnects with a
// fresh stream URL and sends input only while you hold control.
import { showConnection } from "/console/control_badge.js";

const $ = (id) => document.getElementById(id);

export class ViewPanel {
  // onError(detail): the element's baton-error detail ({message, status, code}).
  constructor(onError) {
    this.view = $("screen");
    this.latencyMs = null;
    this.view.addEventListener("baton-connection-change", ({ detail }) => {
      showConnection($("view-status"), detail.status);
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
