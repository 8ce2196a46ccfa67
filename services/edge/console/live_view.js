// The live view of one session: noVNC on the session's stream WebSocket, with
// what every page showing it needs (the console and /embed both use it):
// a fresh stream URL per connection, reconnecting after the close codes of
// services/edge/README.md ("Reconnecting"), and input only while the page says
// the viewer holds control. The server gates input on its own; viewOnly keeps
// the page from pretending to be interactive (and a view-only embed from
// sending anything at all).
import RFB from "/vendor/novnc/core/rfb.js";
import { api } from "/console/edge_api.js";

// Close codes after which the live view connects again with a new stream token,
// through whichever edge answers: the edge went away or restarted, the network
// dropped, the display was briefly unreachable, or the stream token expired. The
// viewer's role comes from the session, so a controller is interactive again and
// a viewer stays view-only.
const RECONNECT_CODES = new Set([1001, 1006, 1011, 1012, 1013]);
const RECONNECT_DELAYS_MS = [250, 500, 1000, 2000, 4000, 5000, 5000, 5000];
// The stream answers after which there is nothing to reconnect to: the session
// ended or is not this viewer's.
const FINAL_STATUSES = [401, 403, 404, 409];

function shouldReconnect(event) {
  return RECONNECT_CODES.has(event.code) || (event.code === 1008 && event.reason === "token expired");
}

export class LiveView {
  // screen: the element noVNC draws into. token(): the bearer token to ask for
  // stream URLs with. onStatus(text, kind): the connection's state for a badge
  // (kind: on, off, wait). onError(message): something the person should read.
  constructor(screen, { token, onStatus, onError }) {
    this.screen = screen;
    this.token = token;
    this.onStatus = onStatus;
    this.onError = onError;
    this.rfb = null;
    this.channel = null;
    this.sessionId = null;
    this.reconnectTimer = null;
    this.interactive = false;
    // Screen updates received since the last takeUpdates().
    this.updates = 0;
  }

  get connected() {
    return this.rfb !== null;
  }

  // Input is sent only while interactive (the page's idea of who controls).
  setInteractive(interactive) {
    this.interactive = interactive;
    if (this.rfb) this.rfb.viewOnly = !interactive;
  }

  takeUpdates() {
    const updates = this.updates;
    this.updates = 0;
    return updates;
  }

  disconnect() {
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = null;
    if (this.rfb) {
      this.rfb.disconnect();
      this.rfb = null;
    }
    this.sessionId = null;
  }

  async connect(sessionId, attempt = 0) {
    this.disconnect();
    this.onStatus("connecting…", "wait");
    const stream = `/api/browser-session/${encodeURIComponent(sessionId)}/stream`;
    const { url } = await api(this.token(), "GET", stream);
    // Our own WebSocket, handed to noVNC, so the page can count screen updates.
    const channel = new WebSocket(url, ["binary"]);
    channel.addEventListener("message", () => {
      this.updates += 1;
    });
    let connected = false;
    channel.addEventListener("close", (event) => {
      if (this.channel !== channel) return;
      if (shouldReconnect(event) && this.sessionId === sessionId) {
        // Ran before noVNC's own close handler: its disconnect shows no error.
        this.channel = null;
        this.scheduleReconnect(sessionId, connected ? 0 : attempt);
        return;
      }
      const why = event.reason ? `: ${event.reason}` : "";
      this.onStatus(`closed (${event.code})${why}`, "off");
    });
    this.channel = channel;
    const rfb = new RFB(this.screen, channel, { shared: true });
    rfb.viewOnly = !this.interactive;
    rfb.scaleViewport = true;
    rfb.background = "#222";
    rfb.addEventListener("connect", () => {
      connected = true;
      this.onStatus("connected", "on");
    });
    rfb.addEventListener("disconnect", (event) => {
      if (this.rfb !== rfb) return;
      this.rfb = null;
      const reconnecting = this.channel === null && this.sessionId === sessionId;
      if (!event.detail.clean && !reconnecting) this.onError("The live view lost its connection");
    });
    rfb.addEventListener("securityfailure", (event) =>
      this.onError(`The live view was refused: ${event.detail.reason || "security failure"}`),
    );
    this.rfb = rfb;
    this.sessionId = sessionId;
  }

  scheduleReconnect(sessionId, attempt) {
    clearTimeout(this.reconnectTimer);
    if (attempt >= RECONNECT_DELAYS_MS.length) {
      this.onStatus("disconnected", "off");
      this.onError("The live view lost its connection and could not connect again");
      return;
    }
    this.onStatus("reconnecting…", "wait");
    this.reconnectTimer = setTimeout(async () => {
      this.reconnectTimer = null;
      if (this.sessionId !== sessionId) return;
      try {
        await this.connect(sessionId, attempt + 1);
      } catch (error) {
        if (FINAL_STATUSES.includes(error.status)) {
          this.onStatus("disconnected", "off");
          this.onError(`The live view closed: ${error.message}`);
          return;
        }
        // connect() forgot the session before failing: keep trying it.
        this.sessionId = sessionId;
        this.scheduleReconnect(sessionId, attempt + 1);
      }
    }, RECONNECT_DELAYS_MS[attempt]);
  }
}
