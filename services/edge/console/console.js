// Baton web console: TakeOverPanel (task, steps, control) and BrowserViewPanel
// (the live view through noVNC). The server enforces who may send input; the
// page only mirrors it so the view does not pretend to be interactive.
import { io } from "/vendor/socket.io/socket.io.esm.min.js";
import {
  api as restCall,
  controllerText,
  controlsSession,
  emit as emitOn,
  identityOf,
} from "/console/edge_api.js";
import { ControlRequests } from "/console/control_requests.js";
import { LiveView } from "/console/live_view.js";
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

function iconOf(colour, badge) {
  const svg =
    `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 32 32">` +
    `<circle cx="16" cy="16" r="13" fill="${colour}"/>${badge}</svg>`;
  return `data:image/svg+xml,${encodeURIComponent(svg)}`;
}

const state = {
  token: "",
  me: "",
  socket: null,
  session: null,
  // The session's step events as this page holds them (the latest per step
  // index), and how many step events that is: events carry the session's
  // summary and one new step at most (services/edge/README.md, "Sessions").
  steps: new Map(),
  stepsHeld: 0,
  stepsOf: null,
  resyncing: false,
  view: null,
  latencyMs: null,
  watching: new Set(),
  // A Return Control of this page's is on its way (noteControlTakenAway).
  returning: false,
  // Whether the agent waited for a person at the last render (the notification
  // fires when it starts to).
  wasWaiting: false,
};

// --- errors -----------------------------------------------------------------

// How much of a step's result (an extract's text) the step list shows.
const RESULT_CHARS = 300;

function truncated(text, limit) {
  return text.length > limit ? `${text.slice(0, limit)}…` : text;
}

// Errors are one short sentence; anything longer (a server's multi-line
// message) goes behind the Details toggle.
const HEADLINE_CHARS = 160;
// What the banner says while the server cannot be reached (cleared on reconnect).
const UNREACHABLE = "Server unreachable, retrying…";

function showError(message) {
  const [first, ...rest] = String(message).split("\n");
  const long = first.length > HEADLINE_CHARS;
  $("error-text").textContent = long ? `${first.slice(0, HEADLINE_CHARS - 1)}…` : first;
  const details = [long ? first : "", ...rest].join("\n").trim();
  $("error-details-text").textContent = details;
  $("error-details").hidden = !details;
  $("error-details").open = false;
  $("error-banner").classList.add("shown");
}

// An idle auto-return's countdown, its last seconds shown with Keep control
// (docs/state-machine.md, "Auto-return"). The person's input on the live view
// resets it here as it does on the server.
const COUNTDOWN_S = 10;
const idleReturn = {
  lastInput: 0,
  timer: null,
  session: null,
  render(session) {
    this.session = session;
    const idle = session?.autoReturn?.idleSeconds;
    const mine = controlsSession(session, state.me);
    if (!idle || !mine) {
      clearInterval(this.timer);
      this.timer = null;
      this.lastInput = 0;
      $("auto-return").hidden = true;
      return;
    }
    if (!this.lastInput) this.lastInput = Date.now();
    if (!this.timer) this.timer = setInterval(() => this.tick(), 250);
    this.tick();
  },
  tick() {
    const idle = this.session?.autoReturn?.idleSeconds || 0;
    const left = Math.ceil(idle - (Date.now() - this.lastInput) / 1000);
    $("auto-return").hidden = left > COUNTDOWN_S;
    $("auto-return-text").textContent =
      `Idle: control goes back to the agent in ${Math.max(0, left)} s.`;
  },
  noteInput() {
    if (this.timer) this.lastInput = Date.now();
  },
};

// Asking for control held by someone else, and handing it over when asked.
const requests = new ControlRequests(
  {
    ask: $("ask-button"),
    panel: $("control-request"),
    text: $("control-request-text"),
    handOver: $("hand-over-button"),
  },
  () => state.me,
  (event, payload) => emit(event, payload),
  (session) => applySession(session),
  showError,
);

function clearError() {
  $("error-banner").classList.remove("shown");
  $("error-text").textContent = "";
  $("error-details").hidden = true;
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
  try {
    // Checked before the page says who you are: a wrong token signs nobody in.
    await restCall(token, "GET", "/api/browser-session");
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
  state.me = identityOf(token);
  sessionStorage.setItem(TOKEN_KEY, token);
  $("identity").textContent = `signed in as ${state.me}`;
  connectSocket();
  refreshSessions();
  if (state.me === "operator") audit.refresh();
  const wanted = sessionFromLocation();
  if (wanted) openSession(wanted);
}

function signOut() {
  state.token = null;
  state.me = null;
  sessionStorage.removeItem(TOKEN_KEY);
  $("identity").textContent = "signed out";
}

// --- REST -------------------------------------------------------------------

function api(method, path, body) {
  return restCall(state.token, method, path, body);
}

function sessionLabel(session) {
  // Whose it is, when it is not yours (an operator sees everyone's).
  const owner = session.ownerUserId !== state.me ? ` · ${session.ownerUserId}` : "";
  return `${session.task.text || session.task.url} · ${session.state}${owner}`;
}

// The replay and audit views (replay.js, audit.js).
const replay = new ReplayView($("replay-panel"), () => state.token);
const audit = new AuditView($("audit-panel"), () => state.token, showError);

function replayButton(id) {
  const button = document.createElement("button");
  button.type = "button";
  button.className = "small replay-button";
  button.textContent = "Replay";
  button.addEventListener("click", () => run("Replay", () => replay.open(id)));
  return button;
}

async function refreshSessions() {
  try {
    const { sessions } = await api("GET", "/api/browser-session");
    const list = $("session-list");
    list.replaceChildren();
    sessions.sort((a, b) => (b.createdAt || "").localeCompare(a.createdAt || ""));
    for (const session of sessions) {
      const item = document.createElement("li");
      item.dataset.sessionId = session.id;
      if (state.session?.id === session.id) item.classList.add("current");
      const label = document.createElement("span");
      label.textContent = sessionLabel(session);
      const open = document.createElement("button");
      open.type = "button";
      open.className = "small";
      open.textContent = "Open";
      open.addEventListener("click", () => openSession(session.id));
      item.append(label, open);
      if (session.recording) item.append(replayButton(session.id));
      list.append(item);
    }
  } catch (error) {
    showError(`Could not list sessions: ${error.message}`);
  }
}

// --- Socket.IO --------------------------------------------------------------

function setBadge(element, text, kind) {
  element.textContent = text;
  element.className = `badge badge-${kind}`;
}

function connectSocket() {
  state.socket?.disconnect();
  const socket = io({ path: "/socket.io", auth: { token: state.token }, transports: ["websocket"] });
  state.socket = socket;
  state.watching.clear();
  let everConnected = false;
  socket.on("connect", () => {
    setBadge($("socket-status"), "live", "on");
    if ($("error-text").textContent === UNREACHABLE) clearError();
    const reconnected = everConnected;
    everConnected = true;
    // After a reconnect the server has forgotten our rooms.
    if (state.session) rewatch(state.session.id, reconnected);
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
    socket.disconnect();
    signOut();
    showError(
      everConnected
        ? "The server restarted and no longer accepts this token (a token `make run` " +
            "generated is new after each start): sign in with the URL it printed."
        : `Live updates refused: ${error.message}`,
    );
  });
  socket.on("session:created", ({ session }) => applySession(session));
  socket.on("session:step", ({ session, step }) => {
    if (
      state.stepsOf === session.id &&
      state.session?.id === session.id &&
      session.version > state.session.version &&
      session.stepCount === state.stepsHeld + 1
    ) {
      state.steps.set(stepKey(step), step);
      state.stepsHeld += 1;
    }
    applySession(session);
  });
  socket.on("session:control_changed", ({ session }) => applySession(session));
  socket.on("session:task_changed", ({ session }) => applySession(session));
  socket.on("session:control_requested", ({ session, userId }) => {
    applySession(session);
    if (state.session?.id === session.id) requests.requested(state.session, userId);
  });
  socket.on("session:error", ({ session, message }) => {
    applySession(session);
    showError(message);
  });
  socket.on("session:ended", ({ session, reason }) => {
    applySession(session);
    if (reason) showError(`Session ended: ${reason}`);
    refreshSessions();
  });
}

// A hand-back report (what the person did: docs/steps.md) is a row of its own
// beside the step it came during.
function stepKey(step) {
  return step.action === "handback" ? `handback-${step.index}` : step.index;
}

function emit(event, payload) {
  return emitOn(state.socket, event, payload);
}

// --- TakeOverPanel ----------------------------------------------------------

function applySession(session) {
  if (!session) return;
  if (state.session && session.id !== state.session.id) return;
  if (state.session && session.version < state.session.version) return;
  if (state.stepsOf !== session.id) {
    state.steps = new Map();
    state.stepsHeld = 0;
    state.stepsOf = session.id;
  }
  if (Array.isArray(session.steps)) {
    // A full view (GET, session:watch): the steps as they are now.
    state.steps = new Map(session.steps.map((step) => [stepKey(step), step]));
    state.stepsHeld = session.stepCount;
  } else if (session.stepCount > state.stepsHeld) {
    // Steps were reported that this page never got (joined or reconnected
    // between two events): read the whole session again.
    resyncSteps(session.id);
  }
  noteControlTakenAway(state.session, session);
  state.session = session;
  showSessionInLocation(session.id);
  renderSession();
  updateViewMode();
}

// Control leaving this person without their Return Control (an operator returned
// it to the agent): say so at once, until they take control again.
function noteControlTakenAway(before, after) {
  const lost =
    before?.id === after.id &&
    controlsSession(before, state.me) &&
    !controlsSession(after, state.me) &&
    !state.returning &&
    !["ENDED", "FAILED"].includes(after.state);
  if (!lost) return;
  const notice = $("control-notice");
  notice.textContent =
    after.state === "USER_CONTROL"
      ? `Control was taken from you: ${after.controllerUserId} has it now.`
      : "Control was taken from you: someone returned it to the agent.";
  notice.hidden = false;
}

async function resyncSteps(id) {
  if (state.resyncing) return;
  state.resyncing = true;
  try {
    applySession(await emit("session:watch", { id }));
  } catch {
    // The next event tries again.
  } finally {
    state.resyncing = false;
  }
}

function renderSession() {
  const session = state.session;
  const live = session && !["ENDED", "FAILED"].includes(session.state);
  const [text, kind] = session ? controllerText(session, state.me) : ["no session", "none"];
  const indicator = $("controller-indicator");
  indicator.textContent = text;
  indicator.className = `controller controller-${kind}`;
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
  idleReturn.render(session);

  const steps = $("step-list");
  steps.replaceChildren();
  // Step events come as started then succeeded/failed: show the latest per step.
  for (const step of session ? state.steps.values() : []) {
    const item = document.createElement("li");
    item.className = `step-${step.status}`;
    item.value = step.index + 1;
    const what = step.description || step.action;
    const time = step.durationMs ? ` (${step.durationMs} ms)` : "";
    // A step a takeover or pause cut short is no failure: it runs again on resume.
    const why = step.status === "interrupted" ? ": runs again when the agent resumes"
      : step.error ? `: ${step.error}` : "";
    // What an extract step read off the page.
    const result = step.result ? ` → ${truncated(step.result, RESULT_CHARS)}` : "";
    item.textContent = `${what} — ${step.status}${time}${why}${result}`;
    steps.append(item);
  }
  $("step-progress").textContent = session
    ? `${session.task.stepsCompleted} / ${session.task.maxSteps}`
    : "";
  for (const item of $("session-list").children) {
    const current = item.dataset.sessionId === session?.id;
    item.classList.toggle("current", current);
    if (current) {
      item.firstChild.textContent = sessionLabel(session);
    }
  }
}

async function run(label, action) {
  clearError();
  try {
    await action();
  } catch (error) {
    showError(`${label}: ${error.message}`);
  }
}

// Watch the session again after a reconnect; a restarted server may have lost it.
async function rewatch(id, reconnected) {
  try {
    applySession(await emit("session:watch", { id }));
    if (reconnected && !state.view.connected && isLive(state.session)) await connectViewer(id);
  } catch (error) {
    if (error.code !== "not_found" || state.session?.id !== id) return;
    state.view.disconnect();
    state.session = null;
    showSessionInLocation(null);
    renderSession();
    showError(
      "The session you watched is gone: the server restarted without keeping it " +
        "(sessions live in the session service's store). Start a new task.",
    );
    refreshSessions();
  }
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

async function openSession(id) {
  await run("Open", async () => {
    state.session = null;
    applySession(await emit("session:watch", { id }));
    await connectViewer(id);
  });
}

function control(action) {
  return run(action.replace("_", " "), async () => {
    state.returning = action === "return_control";
    try {
      const session = await emit("session:control", {
        id: state.session.id,
        action,
        expectedVersion: state.session.version,
      });
      applySession(session);
    } finally {
      state.returning = false;
    }
    if (action === "take_control") {
      $("control-notice").hidden = true;
      $("screen").focus({ preventScroll: true });
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
      const steps = $("task-steps").value.trim();
      if (steps) body.steps = JSON.parse(steps);
      $("start-button").disabled = true;
      try {
        state.session = null;
        applySession(await emit("session:create", body));
      } finally {
        $("start-button").disabled = false;
      }
      await connectViewer(state.session.id);
      refreshSessions();
    });
  });
  $("watch-button").addEventListener("click", () =>
    run("Watch", () => connectViewer(state.session.id)),
  );
  $("take-button").addEventListener("click", () => control("take_control"));
  $("return-button").addEventListener("click", () => control("return_control"));
  $("pause-button").addEventListener("click", () =>
    run("Pause", async () => applySession(await emit("session:pause", { id: state.session.id }))),
  );
  $("resume-button").addEventListener("click", () =>
    run("Resume", async () => applySession(await emit("session:resume", { id: state.session.id }))),
  );
  $("end-button").addEventListener("click", () => {
    // Ending closes the session's browser for good: ask first.
    if (!window.confirm("End this session? Its browser closes and cannot be reopened.")) return;
    run("End", async () => {
      applySession(await emit("session:end", { id: state.session.id }));
      refreshSessions();
    });
  });
  $("refresh-sessions").addEventListener("click", refreshSessions);
}

// --- BrowserViewPanel -------------------------------------------------------

function updateViewMode() {
  const interactive = controlsSession(state.session, state.me);
  state.view.setInteractive(interactive);
  $("view-mode").textContent = interactive ? "interactive" : "view only";
  $("view-mode").className = `badge ${interactive ? "badge-on" : ""}`;
  $("screen").classList.toggle("interactive", interactive && state.view.connected);
}

function connectViewer(sessionId) {
  return state.view.connect(sessionId);
}

async function measureLatency() {
  if (!state.view.connected) return;
  const started = performance.now();
  try {
    await fetch("/healthz", { cache: "no-store" });
    state.latencyMs = Math.round(performance.now() - started);
  } catch {
    state.latencyMs = null;
  }
}

function wireBrowserViewPanel() {
  state.view = new LiveView($("screen"), {
    token: () => state.token,
    onStatus: (text, kind) => {
      setBadge($("view-status"), text, kind);
      if (kind === "on") measureLatency();
      updateViewMode();
    },
    onError: showError,
  });
  $("fullscreen-button").addEventListener("click", () => {
    if (document.fullscreenElement) document.exitFullscreen();
    else $("screen").requestFullscreen().catch((error) => showError(error.message));
  });
  // Quality: screen updates per second, and the round trip to the edge.
  setInterval(() => {
    const fps = state.view.takeUpdates();
    const latency = state.latencyMs === null ? "–" : `${state.latencyMs} ms`;
    $("view-quality").textContent = state.view.connected ? `${fps} updates/s · ${latency}` : "–";
  }, 1000);
  setInterval(measureLatency, 2000);
}

// --- start ------------------------------------------------------------------

function start() {
  $("favicon").href = ICON;
  for (const kind of ["keydown", "pointerdown", "wheel"]) {
    $("screen").addEventListener(kind, () => idleReturn.noteInput(), { capture: true });
  }
  $("keep-control-button").addEventListener("click", () =>
    run("Keep control", async () => {
      // Taking control one holds tells the server the person is still there.
      applySession(await emit("session:control", { id: state.session.id, action: "take_control" }));
      idleReturn.noteInput();
      idleReturn.tick();
    }),
  );
  $("error-dismiss").addEventListener("click", clearError);
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
  wireBrowserViewPanel();
  const token = tokenFromLocation() || sessionStorage.getItem(TOKEN_KEY);
  if (token) signIn(token);
  else showError("Sign in with the token printed by `make run` (or a user JWT).");
}

start();
