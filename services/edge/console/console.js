// Baton web console: TakeOverPanel (task, steps, control) and BrowserViewPanel
// (view_panel.js: the <baton-live-view> element), built on the @baton/client
// package (clients/js), served by the edge at /assets/clients/baton.js: REST and
// Socket.IO through BatonClient, who a token stands for through identityOf. The
// server enforces who may send input; the page only mirrors it.
import { BatonClient, controlsSession, identityOf } from "/assets/clients/baton.js";
import { setBadge, showController } from "/console/control_badge.js";
import { ControlRequests } from "/console/control_requests.js";
import { IdleReturn } from "/console/idle_return.js";
import { UNREACHABLE, clearError, showError, showsError, wireMessages } from "/console/messages.js";
import { SessionList } from "/console/session_list.js";
import { StepList } from "/console/step_list.js";
import { ViewPanel } from "/console/view_panel.js";
import { ReplayView } from "/console/replay.js";
import { AuditView } from "/console/audit.js";

const $ = (id) => document.getElementById(id);
const TOKEN_KEY = "baton.token";
const BASE_TITLE = document.title;
// The page's title while the agent waits for a person (a background tab shows it).
const WAITING_TITLE = `Your turn · ${BASE_TITLE}`;
// The tab's icon, and the one while the agent waits for a person.
const ICON = iconOf("#3182ce", "");
const WAITING_ICON = iconOf("#dd6b20", '<circle cx="24" cy="8" r="7" fill="#e53e3e"/>');
// Events wait this long for their acknowledgement (a take_control waits for the
// running step to stop).
const ACK_TIMEOUT_MS = 90_000;
const GONE =
  "The session you watched is gone: the server restarted without keeping it " +
  "(sessions live in the session service's store). Start a new task.";

function iconOf(colour, badge) {
  const svg =
    `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 32 32">` +
    `<circle cx="16" cy="16" r="13" fill="${colour}"/>${badge}</svg>`;
  return `data:image/svg+xml,${encodeURIComponent(svg)}`;
}

const state = {
  token: "",
  me: "",
  client: null,
  // The console's Socket.IO connection (BatonEvents).
  events: null,
  session: null,
  // A Return Control of this page's is on its way (noteControlTakenAway).
  returning: false,
  // Whether the agent waited for a person at the last render (the notification
  // fires when it starts to).
  wasWaiting: false,
};

const steps = new StepList((id) => resyncSteps(id));
const idleReturn = new IdleReturn();
// The replay and audit views (replay.js, audit.js).
const replay = new ReplayView($("replay-panel"), () => state.token);
const audit = new AuditView($("audit-panel"), () => state.token, showError);
const sessions = new SessionList(
  (id) => openSession(id),
  () => state.session,
  showError,
  (id) => run("Replay", () => replay.open(id)),
);
const viewPanel = new ViewPanel(viewError);

// Asking for control held by someone else, and handing it over when asked.
const requests = new ControlRequests(
  {
    ask: $("ask-button"),
    panel: $("control-request"),
    text: $("control-request-text"),
    handOver: $("hand-over-button"),
  },
  () => state.me,
  (event, payload) => send(event, payload),
  (session) => applySession(session),
  showError,
);

function send(event, payload) {
  if (!state.events) return Promise.reject(new Error("not signed in"));
  return state.events.send(event, payload);
}

// --- identity ---------------------------------------------------------------

function tokenFromLocation() {
  const fromHash = new URLSearchParams(location.hash.slice(1)).get("token");
  const fromQuery = new URLSearchParams(location.search).get("token");
  const token = fromHash || fromQuery;
  if (token) {
    // Keep the token out of the address bar and the history (the session stays).
    showSessionInLocation(sessionFromLocation());
  }
  return token;
}

// The watched session is in the address (#session=<id>): a reload or a shared
// link opens it again.
function sessionFromLocation() {
  return new URLSearchParams(location.hash.slice(1)).get("session");
}

function showSessionInLocation(id) {
  const hash = id ? `#session=${encodeURIComponent(id)}` : "";
  if (location.hash !== hash || location.search) {
    history.replaceState(null, "", `${location.pathname}${hash}`);
  }
}

async function signIn(token) {
  clearError();
  const client = new BatonClient({ token, ackTimeoutMs: ACK_TIMEOUT_MS });
  try {
    // Checked before the page says who you are: a wrong token signs nobody in.
    await client.listSessions({ pageSize: 1 });
  } catch (error) {
    signOut();
    showError(
      error.status === 401
        ? "That token is not valid: sign in with the token `make run` printed, or a user JWT."
        : `Cannot reach the server: ${error.message}`,
    );
    return;
  }
  state.token = token;
  state.client = client;
  state.me = identityOf(token);
  sessionStorage.setItem(TOKEN_KEY, token);
  $("identity").textContent = `signed in as ${state.me}`;
  viewPanel.tokenProvider = () => state.token;
  connectEvents();
  sessions.signedIn(client, state.me);
  if (state.me === "operator") audit.refresh();
  const wanted = sessionFromLocation();
  if (wanted) openSession(wanted);
}

function signOut() {
  state.token = null;
  state.me = null;
  state.client = null;
  sessionStorage.removeItem(TOKEN_KEY);
  $("identity").textContent = "signed out";
}

// --- Socket.IO --------------------------------------------------------------

function connectEvents() {
  state.events?.close();
  const events = state.client.events();
  state.events = events;
  const socket = events.socket;
  let everConnected = false;
  socket.on("connect", () => {
    setBadge($("socket-status"), "live", "on");
    if (showsError(UNREACHABLE)) clearError();
    everConnected = true;
    // After a reconnect the server has forgotten our rooms.
    if (state.session) rewatch(state.session.id);
  });
  socket.on("disconnect", (reason) => {
    setBadge($("socket-status"), "offline", "off");
    // The server went away (not this page): socket.io retries on its own.
    if (reason !== "io client disconnect") showError(UNREACHABLE);
  });
  socket.on("connect_error", (error) => {
    if (error.data?.code !== "unauthenticated") {
      setBadge($("socket-status"), "retrying", "wait");
      showError(UNREACHABLE);
      return;
    }
    setBadge($("socket-status"), "refused", "off");
    events.close();
    viewPanel.show(null);
    signOut();
    showError(
      everConnected
        ? "The server restarted and no longer accepts this token (a token `make run` " +
            "generated is new after each start): sign in with the URL it printed."
        : `Live updates refused: ${error.message}`,
    );
  });
  events.on("session:created", ({ session }) => applySession(session));
  events.on("session:step", ({ session, step }) => {
    if (state.session?.id === session.id && session.version > state.session.version) {
      steps.add(session, step);
    }
    applySession(session);
  });
  events.on("session:control_changed", ({ session }) => applySession(session));
  events.on("session:task_changed", ({ session }) => applySession(session));
  events.on("session:control_requested", ({ session, userId }) => {
    applySession(session);
    if (state.session?.id === session.id) requests.requested(state.session, userId);
  });
  events.on("session:error", ({ session, message }) => {
    applySession(session);
    showError(message);
  });
  events.on("session:ended", ({ session, reason }) => {
    applySession(session);
    if (reason) showError(`Session ended: ${reason}`);
    sessions.refresh();
  });
}

// --- TakeOverPanel ----------------------------------------------------------

function applySession(session) {
  if (!session) return;
  if (state.session && session.id !== state.session.id) return;
  if (state.session && session.version < state.session.version) return;
  steps.apply(session);
  noteControlTakenAway(state.session, session);
  state.session = session;
  showSessionInLocation(session.id);
  renderSession();
}

// Control leaving this person without their Return Control (an operator returned
// it to the agent): say so at once, until they take control again.
function noteControlTakenAway(before, after) {
  const lost =
    before?.id === after.id &&
    controlsSession(before, state.me) &&
    !controlsSession(after, state.me) &&
    !state.returning &&
    isLive(after);
  if (!lost) return;
  const notice = $("control-notice");
  notice.textContent =
    after.state === "USER_CONTROL"
      ? `Control was taken from you: ${after.controllerUserId} has it now.`
      : "Control was taken from you: someone returned it to the agent.";
  notice.hidden = false;
}

// Steps were reported that this page never got: read the whole session again.
async function resyncSteps(id) {
  try {
    applySession(await send("session:watch", { id }));
  } catch {
    // The next event tries again.
  }
}

function renderSession() {
  const session = state.session;
  const live = isLive(session);
  showController($("controller-indicator"), session, state.me);
  const waiting = live && session.task.status === "WAITING_FOR_USER" && session.state !== "USER_CONTROL";
  document.title = waiting ? WAITING_TITLE : BASE_TITLE;
  $("favicon").href = waiting ? WAITING_ICON : ICON;
  if (waiting && !state.wasWaiting) notifyTurn(session);
  state.wasWaiting = waiting;
  $("session-state").textContent = session
    ? `${session.state} · task ${session.task.status}${session.endedReason ? ` · ${session.endedReason}` : ""}`
    : "";
  const request = $("user-request");
  const finished = session?.state === "FINISHED";
  request.hidden = !session?.userRequestReason && !finished;
  if (finished) {
    const status = session.task.status.toLowerCase();
    const why = session.task.reason ? `: ${session.task.reason}` : "";
    request.textContent =
      `The agent is done (task ${status}${why}). Take Control to carry on; ` +
      "left alone, the session ends after a short while.";
  } else {
    request.textContent = session?.userRequestReason
      ? `The agent asks for you: ${session.userRequestReason}`
      : "";
  }

  const mine = controlsSession(session, state.me);
  $("watch-button").disabled = !live;
  $("take-button").disabled =
    !live || !["AI_CONTROL", "PAUSED", "FINISHED"].includes(session.state);
  $("return-button").disabled = !live || !mine;
  $("pause-button").disabled = !live || session.state !== "AI_CONTROL";
  $("resume-button").disabled = !live || session.state !== "PAUSED";
  $("end-button").disabled = !live;
  requests.render(session);
  idleReturn.render(session, state.me);
  steps.render(session);
  sessions.mark(session);
}

async function run(label, action) {
  clearError();
  try {
    await action();
  } catch (error) {
    if (error.code === "not_found" && state.session) await rewatch(state.session.id);
    else showError(`${label}: ${error.message}`);
  }
}

// Watch the session again (after a reconnect, or when it was not found): a
// restarted server may have lost it.
async function rewatch(id) {
  try {
    applySession(await send("session:watch", { id }));
  } catch (error) {
    if (error.code !== "not_found" || state.session?.id !== id) return;
    viewPanel.show(null);
    state.session = null;
    showSessionInLocation(null);
    renderSession();
    showError(GONE);
    sessions.refresh();
  }
}

// What the live view reports: its own session news the console has from its own
// connection, so only what it alone can know is shown.
function viewError({ message, status, code }) {
  // A session the stream no longer knows may be gone (a restarted server).
  if (status === 404 && state.session) {
    rewatch(state.session.id);
    return;
  }
  // session:error and a refused connection are the console's own to report.
  if (code === "session" || !state.events?.socket.connected) return;
  showError(message);
}

// The optional browser notification when the agent starts waiting for a person.
function notifyTurn(session) {
  if (!$("notify-toggle").checked || typeof Notification === "undefined") return;
  if (Notification.permission !== "granted") return;
  const reason = session.userRequestReason || "the agent waits for you";
  new Notification("Your turn · Baton", { body: reason, tag: `baton-${session.id}` });
}

function isLive(session) {
  return Boolean(session) && !["ENDED", "FAILED"].includes(session.state);
}

// One session on the page at a time: its panel and its live view together.
async function openSession(id) {
  await run("Open", async () => {
    state.session = null;
    viewPanel.show(null);
    try {
      applySession(await send("session:watch", { id }));
    } catch (error) {
      if (error.code !== "not_found") throw error;
      // A link or a reload of a session a restart forgot.
      showSessionInLocation(null);
      renderSession();
      showError(GONE);
      return;
    }
    viewPanel.show(id);
  });
}

function control(action) {
  return run(action.replace("_", " "), async () => {
    state.returning = action === "return_control";
    try {
      applySession(await state.events.control(state.session.id, action, state.session.version));
    } finally {
      state.returning = false;
    }
    if (action === "take_control") {
      $("control-notice").hidden = true;
      viewPanel.focus();
    }
  });
}

function wireTakeOverPanel() {
  $("task-form").addEventListener("submit", (event) => {
    event.preventDefault();
    run("Start", async () => {
      const body = {
        task: $("task-text").value,
        url: $("task-url").value,
        maxSteps: Number($("task-max-steps").value) || undefined,
      };
      const listed = $("task-steps").value.trim();
      if (listed) body.steps = JSON.parse(listed);
      $("start-button").disabled = true;
      try {
        state.session = null;
        viewPanel.show(null);
        applySession(await send("session:create", body));
      } finally {
        $("start-button").disabled = false;
      }
      viewPanel.show(state.session.id);
      sessions.refresh();
    });
  });
  $("watch-button").addEventListener("click", () => viewPanel.show(state.session.id));
  $("take-button").addEventListener("click", () => control("take_control"));
  $("return-button").addEventListener("click", () => control("return_control"));
  $("pause-button").addEventListener("click", () =>
    run("Pause", async () => applySession(await send("session:pause", { id: state.session.id }))),
  );
  $("resume-button").addEventListener("click", () =>
    run("Resume", async () => applySession(await send("session:resume", { id: state.session.id }))),
  );
  $("end-button").addEventListener("click", () => {
    // Ending closes the session's browser for good: ask first.
    if (!window.confirm("End this session? Its browser closes and cannot be reopened.")) return;
    run("End", async () => {
      applySession(await state.events.end(state.session.id));
      sessions.refresh();
    });
  });
  $("keep-control-button").addEventListener("click", () =>
    run("Keep control", async () => {
      // Taking control one holds tells the server the person is still there.
      applySession(await state.events.control(state.session.id, "take_control"));
      idleReturn.noteInput();
      idleReturn.tick();
    }),
  );
  for (const kind of ["keydown", "pointerdown", "wheel"]) {
    $("screen").addEventListener(kind, () => idleReturn.noteInput(), { capture: true });
  }
}

// --- start ------------------------------------------------------------------

function start() {
  $("favicon").href = ICON;
  wireMessages();
  $("notify-toggle").addEventListener("change", async () => {
    if (!$("notify-toggle").checked || typeof Notification === "undefined") return;
    if ((await Notification.requestPermission()) !== "granted") {
      $("notify-toggle").checked = false;
      showError("This browser does not allow notifications for the console.");
    }
  });
  $("sign-in").addEventListener("submit", (event) => {
    event.preventDefault();
    const token = $("token-input").value.trim();
    if (token) signIn(token);
  });
  wireTakeOverPanel();
  const token = tokenFromLocation() || sessionStorage.getItem(TOKEN_KEY);
  if (token) signIn(token);
  else showError("Sign in with the token printed by `make run` (or a user JWT).");
}

start();
