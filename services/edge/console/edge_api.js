// Talking to the edge as the console and /embed do: REST with a bearer token,
// Socket.IO events with acknowledgements (services/edge/README.md), and what a
// page shows of who controls a session.

// REST with a bearer token; errors carry the server's message and HTTP status.
export async function api(token, method, path, body) {
  const response = await fetch(path, {
    method,
    headers: {
      Authorization: `Bearer ${token}`,
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

// A Socket.IO event and its acknowledgement ({ok, session} or {ok, error}).
export function emit(socket, event, payload) {
  return new Promise((resolve, reject) => {
    if (!socket) {
      reject(new Error("not signed in"));
      return;
    }
    socket.timeout(90000).emit(event, payload, (timeoutError, ack) => {
      if (timeoutError) reject(new Error(`${event}: no answer`));
      else if (!ack.ok) {
        const error = new Error(ack.error?.message || `${event} failed`);
        error.code = ack.error?.code;
        reject(error);
      } else resolve(ack.session);
    });
  });
}

// The user a token stands for: a JWT's `sub`, a share's guest:<share id>
// (README, "Sharing"), else the operator token.
export function identityOf(token) {
  const parts = token.split(".");
  if (parts.length === 3 || parts.length === 2) {
    try {
      const payload = JSON.parse(atob(parts[parts.length - 2].replace(/-/g, "+").replace(/_/g, "/")));
      if (parts.length === 3 && typeof payload.sub === "string") return payload.sub;
      if (parts.length === 2 && typeof payload.shid === "string") return `guest:${payload.shid}`;
    } catch {
      // Neither: the operator token.
    }
  }
  return "operator";
}

// Whether `me` is the session's controller, the only viewer whose input counts.
export function controlsSession(session, me) {
  return session?.state === "USER_CONTROL" && session.controllerUserId === me;
}

// The control state as a short label and its colour class (console.css).
export function controllerText(session, me) {
  switch (session.state) {
    case "AI_CONTROL":
      return ["AI", "ai"];
    case "USER_CONTROL":
      return session.controllerUserId === me ? ["You", "user"] : [`${session.controllerUserId}`, "user"];
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
