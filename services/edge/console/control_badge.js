// Who controls a session, as the console and /embed show it: the package's label
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
