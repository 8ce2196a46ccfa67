// /embed/{sessionId}: one session's live view for an iframe, view-only unless the
// page is opened with ?control=1 (services/edge/README.md, "Embedding"). The token
// comes in the fragment (#token=...), which browsers never send to a server, so
// it stays out of every log; the server decides what it may do. The live view is
// the <baton-live-view> element of @baton/client (clients/js); this page draws
// its one line of state and, with ?control=1, asks for and hands over control.
import { BatonClient, controlsSession, identityOf } from "/assets/clients/baton.js";
import { showConnection, showController } from "/console/control_badge.js";
import { ControlRequests } from "/console/control_requests.js";

const $ = (id) => document.getElementById(id);
const sessionId = decodeURIComponent(location.pathname.split("/").pop());
const token = new URLSearchParams(location.hash.slice(1)).get("token") || "";
const offersControl = new URLSearchParams(location.search).get("control") === "1";
const me = identityOf(token);
const LIVE_STATES = ["STARTING", "AI_CONTROL", "USER_CONTROL", "PAUSED", "FINISHED"];

const view = $("screen");
let session = null;
let events = null;

function showError(message) {
  $("error-text").textContent = message;
  $("error-text").hidden = false;
}

function clearError() {
  $("error-text").hidden = true;
  $("error-text").textContent = "";
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
  (event, payload) => events.send(event, payload),
  (update) => apply(update),
  showError,
);

function render() {
  // The element decides whether this page's input counts (view-only without ?control=1).
  view.classList.toggle("interactive", view.interactive);
  if (!session) return;
  const indicator = $("controller-indicator");
  showController(indicator, session, me);
  if (session.endedReason) indicator.textContent += ` · ${session.endedReason}`;
  const live = LIVE_STATES.includes(session.state);
  $("take-button").disabled =
    !live || !["AI_CONTROL", "PAUSED", "FINISHED"].includes(session.state);
  $("return-button").disabled = !live || !controlsSession(session, me);
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
    apply(await events.control(sessionId, action));
    if (action === "take_control") view.focus();
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
  view.addEventListener("baton-connection-change", ({ detail }) => {
    showConnection($("view-status"), detail.status);
    render();
  });
  view.addEventListener("baton-control-change", render);
  view.addEventListener("baton-error", ({ detail }) => {
    if (detail.code !== "session") showError(detail.message);
  });
  view.viewOnly = !offersControl;
  view.tokenProvider = () => token;
  view.sessionId = sessionId;

  events = new BatonClient({ token }).events();
  events.socket.on("connect", async () => {
    // Also after a reconnect: the server has forgotten this page's rooms.
    try {
      apply(await events.watch(sessionId));
      clearError();
    } catch (error) {
      showError(error.message);
    }
  });
  events.socket.on("connect_error", (error) => showError(`Live updates refused: ${error.message}`));
  for (const event of ["session:step", "session:control_changed", "session:task_changed"]) {
    events.on(event, (payload) => apply(payload.session));
  }
  events.on("session:control_requested", ({ session: update, userId }) => {
    apply(update);
    if (offersControl && session) requests.requested(session, userId);
  });
  events.on("session:error", ({ session: update, message }) => {
    apply(update);
    showError(message);
  });
  events.on("session:ended", ({ session: update }) => apply(update));
}

start();
