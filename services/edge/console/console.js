// Baton web console: TakeOverPanel (task, steps, control) and BrowserViewPanel
// (the live view through noVNC). The server enforces who may send input; the
// page only mirrors it so the view does not pretend to be interactive.
import RFB from "/vendor/novnc/core/rfb.js";
import { io } from "/vendor/socket.io/socket.io.esm.min.js";

const $ = (id) => document.getElementById(id);
const TOKEN_KEY = "baton.token";

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
  rfb: null,
  viewerSessionId: null,
  channel: null,
  reconnectTimer: null,
  updates: 0,
  latencyMs: null,
  watching: new Set(),
};

// --- errors -----------------------------------------------------------------

function showError(message) {
  $("error-text").textContent = message;
  $("error-banner").hidden = false;
}

function clearError() {
  $("error-banner").hidden = true;
  $("error-text").textContent = "";
}

// --- identity ---------------------------------------------------------------

function tokenFromLocation() {
  const fromHash = new URLSearchParams(location.hash.slice(1)).get("token");
  const fromQuery = new URLSearchParams(location.search).get("token");
  const token = fromHash || fromQuery;
  if (token) {
    // Keep the token out of the address bar and the history.
    history.replaceState(null, "", location.pathname);
  }
  return token;
}

function identityOf(token) {
  const parts = token.split(".");
  if (parts.length === 3) {
    try {
      const payload = JSON.parse(atob(parts[1].replace(/-/g, "+").replace(/_/g, "/")));
      if (typeof payload.sub === "string") return payload.sub;
    } catch {
      // Not a JWT: the operator token.
    }
  }
  return "operator";
}

function signIn(token) {
  state.token = token;
  state.me = identityOf(token);
  sessionStorage.setItem(TOKEN_KEY, token);
  $("identity").textContent = `signed in as ${state.me}`;
  connectSocket();
  refreshSessions();
}

// --- REST -------------------------------------------------------------------

async function api(method, path, body) {
  const response = await fetch(path, {
    method,
    headers: {
      Authorization: `Bearer ${state.token}`,
      ...(body === undefined ? {} : { "Content-Type": "application/json" }),
    },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  const data = text ? JSON.parse(text) : null;
  if (!response.ok) {
    const error = new Error(data?.error?.message || `${method} ${path}: HTTP ${response.status}`);
    error.status = response.status;
    throw error;
  }
  return data;
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
      label.textContent = `${session.task.text || session.task.url} · ${session.state}`;
      const open = document.createElement("button");
      open.type = "button";
      open.className = "small";
      open.textContent = "Open";
      open.addEventListener("click", () => openSession(session.id));
      item.append(label, open);
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
  socket.on("connect", () => {
    setBadge($("socket-status"), "live", "on");
    // After a reconnect the server has forgotten our rooms.
    if (state.session) emit("session:watch", { id: state.session.id }).catch(() => {});
  });
  socket.on("disconnect", () => setBadge($("socket-status"), "offline", "off"));
  socket.on("connect_error", (error) => {
    setBadge($("socket-status"), "refused", "off");
    showError(`Live updates refused: ${error.message}`);
  });
  socket.on("session:created", ({ session }) => applySession(session));
  socket.on("session:step", ({ session, step }) => {
    if (
      state.stepsOf === session.id &&
      state.session?.id === session.id &&
      session.version > state.session.version &&
      session.stepCount === state.stepsHeld + 1
    ) {
      state.steps.set(step.index, step);
      state.stepsHeld += 1;
    }
    applySession(session);
  });
  socket.on("session:control_changed", ({ session }) => applySession(session));
  socket.on("session:task_changed", ({ session }) => applySession(session));
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

function emit(event, payload) {
  return new Promise((resolve, reject) => {
    if (!state.socket) {
      reject(new Error("not signed in"));
      return;
    }
    state.socket.timeout(90000).emit(event, payload, (timeoutError, ack) => {
      if (timeoutError) reject(new Error(`${event}: no answer`));
      else if (!ack.ok) reject(new Error(ack.error?.message || `${event} failed`));
      else resolve(ack.session);
    });
  });
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
    state.steps = new Map(session.steps.map((step) => [step.index, step]));
    state.stepsHeld = session.stepCount;
  } else if (session.stepCount > state.stepsHeld) {
    // Steps were reported that this page never got (joined or reconnected
    // between two events): read the whole session again.
    resyncSteps(session.id);
  }
  state.session = session;
  renderSession();
  updateViewMode();
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

function controllerText(session) {
  switch (session.state) {
    case "AI_CONTROL":
      return ["AI", "ai"];
    case "USER_CONTROL":
      return session.controllerUserId === state.me
        ? ["You", "user"]
        : [`${session.controllerUserId}`, "user"];
    case "PAUSED":
      return ["Paused", "paused"];
    case "FINISHED":
      // Nobody controls it: the agent is done and the session waits for a person.
      return ["Agent finished", "finished"];
    case "STARTING":
      return ["Starting…", "none"];
    default:
      return [session.state === "FAILED" ? "Failed" : "Ended", "none"];
  }
}

function renderSession() {
  const session = state.session;
  const live = session && !["ENDED", "FAILED"].includes(session.state);
  const [text, kind] = session ? controllerText(session) : ["no session", "none"];
  const indicator = $("controller-indicator");
  indicator.textContent = text;
  indicator.className = `controller controller-${kind}`;
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

  const mine = session?.state === "USER_CONTROL" && session.controllerUserId === state.me;
  $("watch-button").disabled = !live;
  $("take-button").disabled =
    !live || !["AI_CONTROL", "PAUSED", "FINISHED"].includes(session.state);
  $("return-button").disabled = !live || !mine;
  $("pause-button").disabled = !live || session.state !== "AI_CONTROL";
  $("resume-button").disabled = !live || session.state !== "PAUSED";
  $("end-button").disabled = !live;

  const steps = $("step-list");
  steps.replaceChildren();
  // Step events come as started then succeeded/failed: show the latest per step.
  for (const step of session ? state.steps.values() : []) {
    const item = document.createElement("li");
    item.className = `step-${step.status}`;
    item.value = step.index + 1;
    const what = step.description || step.action;
    const time = step.durationMs ? ` (${step.durationMs} ms)` : "";
    item.textContent = `${what} — ${step.status}${time}${step.error ? `: ${step.error}` : ""}`;
    steps.append(item);
  }
  $("step-progress").textContent = session
    ? `${session.task.stepsCompleted} / ${session.task.maxSteps}`
    : "";
  for (const item of $("session-list").children) {
    const current = item.dataset.sessionId === session?.id;
    item.classList.toggle("current", current);
    if (current) {
      item.firstChild.textContent = `${session.task.text || session.task.url} · ${session.state}`;
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

async function openSession(id) {
  await run("Open", async () => {
    state.session = null;
    applySession(await emit("session:watch", { id }));
    await connectViewer(id);
  });
}

function control(action) {
  return run(action.replace("_", " "), async () => {
    const session = await emit("session:control", {
      id: state.session.id,
      action,
      expectedVersion: state.session.version,
    });
    applySession(session);
    if (action === "take_control") $("screen").focus();
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
  $("end-button").addEventListener("click", () =>
    run("End", async () => {
      applySession(await emit("session:end", { id: state.session.id }));
      refreshSessions();
    }),
  );
  $("refresh-sessions").addEventListener("click", refreshSessions);
}

// --- BrowserViewPanel -------------------------------------------------------

function updateViewMode() {
  const session = state.session;
  const interactive =
    session?.state === "USER_CONTROL" && session.controllerUserId === state.me;
  if (state.rfb) state.rfb.viewOnly = !interactive;
  $("view-mode").textContent = interactive ? "interactive" : "view only";
  $("view-mode").className = `badge ${interactive ? "badge-on" : ""}`;
  $("screen").classList.toggle("interactive", interactive && Boolean(state.rfb));
}

// Close codes after which the live view connects again with a new stream token,
// through whichever edge answers (services/edge/README.md, "Reconnecting"): the
// edge went away or restarted, the network dropped, the display was briefly
// unreachable, or the stream token expired. The viewer's role comes from the
// session, so a controller is interactive again and a viewer stays view-only.
const RECONNECT_CODES = new Set([1001, 1006, 1011, 1012, 1013]);
const RECONNECT_DELAYS_MS = [250, 500, 1000, 2000, 4000, 5000, 5000, 5000];

function shouldReconnect(event) {
  return RECONNECT_CODES.has(event.code) || (event.code === 1008 && event.reason === "token expired");
}

function scheduleReconnect(sessionId, attempt) {
  clearTimeout(state.reconnectTimer);
  if (attempt >= RECONNECT_DELAYS_MS.length) {
    setBadge($("view-status"), "disconnected", "off");
    showError("The live view lost its connection and could not connect again");
    return;
  }
  setBadge($("view-status"), "reconnecting…", "wait");
  state.reconnectTimer = setTimeout(async () => {
    state.reconnectTimer = null;
    if (state.session?.id !== sessionId) return;
    try {
      await connectViewer(sessionId, attempt + 1);
    } catch (error) {
      // The session ended or is no longer ours: nothing to reconnect to.
      if ([401, 403, 404, 409].includes(error.status)) {
        setBadge($("view-status"), "disconnected", "off");
        showError(`The live view closed: ${error.message}`);
        return;
      }
      scheduleReconnect(sessionId, attempt + 1);
    }
  }, RECONNECT_DELAYS_MS[attempt]);
}

function disconnectViewer() {
  clearTimeout(state.reconnectTimer);
  state.reconnectTimer = null;
  if (state.rfb) {
    state.rfb.disconnect();
    state.rfb = null;
  }
  state.viewerSessionId = null;
}

async function connectViewer(sessionId, attempt = 0) {
  disconnectViewer();
  setBadge($("view-status"), "connecting…", "wait");
  const { url, viewOnly } = await api("GET", `/api/browser-session/${sessionId}/stream`);
  // Our own WebSocket, handed to noVNC, so the page can count screen updates.
  const channel = new WebSocket(url, ["binary"]);
  channel.addEventListener("message", () => {
    state.updates += 1;
  });
  let connected = false;
  channel.addEventListener("close", (event) => {
    if (state.channel !== channel) return;
    if (shouldReconnect(event) && state.session?.id === sessionId) {
      // Ran before noVNC's own close handler: its disconnect shows no error.
      state.channel = null;
      scheduleReconnect(sessionId, connected ? 0 : attempt);
      return;
    }
    const why = event.reason ? `: ${event.reason}` : "";
    setBadge($("view-status"), `closed (${event.code})${why}`, "off");
  });
  state.channel = channel;
  const rfb = new RFB($("screen"), channel, { shared: true });
  rfb.viewOnly = viewOnly;
  rfb.scaleViewport = true;
  rfb.background = "#222";
  rfb.addEventListener("connect", () => {
    connected = true;
    setBadge($("view-status"), "connected", "on");
    measureLatency();
  });
  rfb.addEventListener("disconnect", (event) => {
    if (state.rfb !== rfb) return;
    state.rfb = null;
    const reconnecting = state.channel === null && state.viewerSessionId === sessionId;
    if (!event.detail.clean && !reconnecting) showError("The live view lost its connection");
    updateViewMode();
  });
  rfb.addEventListener("securityfailure", (event) =>
    showError(`The live view was refused: ${event.detail.reason || "security failure"}`),
  );
  state.rfb = rfb;
  state.viewerSessionId = sessionId;
  updateViewMode();
}

async function measureLatency() {
  if (!state.rfb) return;
  const started = performance.now();
  try {
    await fetch("/healthz", { cache: "no-store" });
    state.latencyMs = Math.round(performance.now() - started);
  } catch {
    state.latencyMs = null;
  }
}

function wireBrowserViewPanel() {
  $("fullscreen-button").addEventListener("click", () => {
    if (document.fullscreenElement) document.exitFullscreen();
    else $("screen").requestFullscreen().catch((error) => showError(error.message));
  });
  // Quality: screen updates per second, and the round trip to the edge.
  setInterval(() => {
    const fps = state.updates;
    state.updates = 0;
    const latency = state.latencyMs === null ? "–" : `${state.latencyMs} ms`;
    $("view-quality").textContent = state.rfb ? `${fps} updates/s · ${latency}` : "–";
  }, 1000);
  setInterval(measureLatency, 2000);
}

// --- start ------------------------------------------------------------------

function start() {
  $("error-dismiss").addEventListener("click", clearError);
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
