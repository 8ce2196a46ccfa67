// Asking the person in control for it, and handing it over (docs/state-machine.md):
// shared by the console and /embed. A viewer who may take control asks; the person
// holding it sees who asks and may hand it over with one click.
import { controlsSession } from "/assets/clients/baton.js";

export class ControlRequests {
  // elements: {ask, panel, text, handOver} (buttons and the panel with its text);
  // me() is who is signed in; send(event, payload) emits a Socket.IO event and
  // resolves with the session.
  constructor(elements, me, send, onSession, onError) {
    this.elements = elements;
    this.me = me;
    this.send = send;
    this.onSession = onSession;
    this.onError = onError;
    this.session = null;
    this.requester = null;
    elements.ask.addEventListener("click", () => this.ask());
    elements.handOver.addEventListener("click", () => this.handOver());
  }

  // Someone else holds control: asking is what is left to do.
  render(session) {
    this.session = session;
    const live = session && !["ENDED", "FAILED"].includes(session.state);
    const heldByOther =
      live && session.state === "USER_CONTROL" && !controlsSession(session, this.me());
    this.elements.ask.disabled = !heldByOther;
    if (!heldByOther) this.elements.ask.textContent = "Ask for control";
    if (!controlsSession(session, this.me())) this.hidePanel();
  }

  requested(session, userId) {
    this.render(session);
    if (!controlsSession(session, this.me()) || userId === this.me()) return;
    this.requester = userId;
    this.elements.text.textContent = `${userId} asks for control.`;
    this.elements.panel.hidden = false;
  }

  hidePanel() {
    this.requester = null;
    this.elements.panel.hidden = true;
  }

  async ask() {
    try {
      this.onSession(await this.send("session:request_control", { id: this.session.id }));
      this.elements.ask.textContent = "Asked for control";
    } catch (error) {
      this.onError(error.message);
    }
  }

  async handOver() {
    const to = this.requester;
    if (!to) return;
    try {
      this.onSession(await this.send("session:control", { id: this.session.id, action: "hand_over", to }));
      this.hidePanel();
    } catch (error) {
      this.onError(error.message);
    }
  }
}
