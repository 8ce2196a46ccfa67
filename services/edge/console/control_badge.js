// Who controls a session and the live view's connection, as the console and
// /embed show them: the package's label
// (clients/js, identity.ts) and a colour class of console.css.
import { controlLabel } from "/assets/clients/baton.js";

const KIND_OF_STATE = {
  AI_CONTROL: "ai",
  USER_CONTROL: "user",
  PAUSED: "paused",
  // Nobody controls it: the agent is done and the session waits for a person.
  FINISHED: "finished",
};

export function showController(element, session, me) {
  element.textContent = session ? controlLabel(session, me) : "no session";
  element.className = `controller controller-${KIND_OF_STATE[session?.state] ?? "none"}`;
}

// The live view's connection states (baton-connection-change) as a badge says them.
const STATUS_BADGES = {
  idle: ["not connected", "off"],
  connecting: ["connecting…", "wait"],
  connected: ["connected", "on"],
  reconnecting: ["reconnecting…", "wait"],
  disconnected: ["disconnected", "off"],
};

export function showConnection(element, status) {
  setBadge(element, ...STATUS_BADGES[status]);
}

export function setBadge(element, text, kind) {
  element.textContent = text;
  element.className = `badge badge-${kind}`;
}
