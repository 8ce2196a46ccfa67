// /embed/{sessionId}: one session's live view for an iframe, view-only unless the
// page is opened with ?control=1 (services/edge/README.md, "Embedding"). The token
// comes in the fragment (#token=...), which browsers never send to a server, so
// it stays out of every log; the server decides what it may do.
import { io } from "/vendor/socket.io/socket.io.esm.min.js";
import { controllerText, controlsSession, emit, identityOf } from "/console/edge_api.js";
import { ControlRequests } from "/console/control_requests.js";
import { LiveView } from "/console/live_view.js";

const $ = (id) => document.getElementById(id);
const sessionId = decodeURIComponent(location.pathname.split("/").pop());
const token = new URLSearchParams(location.hash.slice(1)).get("token") || "";
const offersControl = new URLSearchParams(location.search).get("control") === "1";
const me = identityOf(token);
const LIVE_STATES = ["STARTING", "AI_CONTROL", "USER_CONTROL", "PAUSED", "FINISHED"];

let session = null;
let socket = null;
const view = new LiveView($("screen"), {
  token: () => token,
  onStatus: (text, kind) => {
    const badge = $("view-status");
    badge.textContent = text;
    badge.className = `badge badge-${kind}`;
    render();
  },
  onError: showError,
});

function showError(message) {
  $("error-text").textContent = message;
  $("error-text").hidden = false;
}

// Asking for control held by someone else, and handing it over when asked.
const requests = new ControlRequests(
  {
    ask: $("ask-button"),
    panel: $("control-request"),
    text: $("control-request-text"),
    handOver: $("hand-over-button"),
  },
  () => me,
  (event, payload) => emit(socket, event, payload),
  (update) => apply(update),
  showError,
);

function clearError() {
  $("error-text").hidden = true;
  $("error-text").textContent = "";
}

function render() {
  if (!session) return;
  const [text, kind] = controllerText(session, me);
  const indicator = $("controller-indicator");
  indicator.textContent = session.endedReason ? `${text} · ${session.endedReason}` : text;
  indicator.className = `controller controller-${kind}`;
  const live = LIVE_STATES.includes(session.state);
  const mine = controlsSession(session, me);
  // Without ?control=1 this page never sends input, whoever holds control.
  const interactive = offersControl && mine;
  view.setInteractive(interactive);
  $("screen").classList.toggle("interactive", interactive && view.connected);
  $("take-button").disabled =
    !live || !["AI_CONTROL", "PAUSED", "FINISHED"].includes(session.state);
  $("return-button").disabled = !live || !mine;
  requests.render(session);
}

function apply(update) {
  if (!update || update.id !== sessionId) return;
  if (session && update.version < session.version) return;
  session = update;
  render();
}

async function control(action) {
  clearError();
  try {
    apply(await emit(socket, "session:control", { id: sessionId, action }));
    if (action === "take_control") $("screen").focus({ preventScroll: true });
  } catch (error) {
    if (error.code === "permission_denied") {
      // This token may watch only: stop offering what it cannot do.
      $("control-buttons").hidden = true;
      showError("This token may watch but not take control");
    } else {
      showError(error.message);
    }
  }
}

function start() {
  if (!token) {
    showError("No token: open this page as /embed/<session id>#token=<token>");
    return;
  }
  $("control-buttons").hidden = !offersControl;
  $("take-button").addEventListener("click", () => control("take_control"));
  $("return-button").addEventListener("click", () => control("return_control"));
  socket = io({ path: "/socket.io", auth: { token }, transports: ["websocket"] });
  socket.on("connect", async () => {
    // Also after a reconnect: the server has forgotten this page's rooms.
    try {
      apply(await emit(socket, "session:watch", { id: sessionId }));
      clearError();
      if (!view.connected && LIVE_STATES.includes(session.state)) await view.connect(sessionId);
    } catch (error) {
      showError(error.message);
    }
  });
  socket.on("connect_error", (error) => showError(`Live updates refused: ${error.message}`));
  for (const event of ["session:step", "session:control_changed", "session:task_changed"]) {
    socket.on(event, (payload) => apply(payload.session));
  }
  socket.on("session:control_requested", ({ session: update, userId }) => {
    apply(update);
    if (offersControl && session) requests.requested(session, userId);
  });
  socket.on("session:error", ({ session: update, message }) => {
    apply(update);
    showError(message);
  });
  socket.on("session:ended", ({ session: update }) => apply(update));
}

start();
