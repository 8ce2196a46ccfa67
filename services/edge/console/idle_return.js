// An idle auto-return's countdown, its last seconds shown with Keep control
// (docs/state-machine.md, "Auto-return"). The person's input on the live view
// resets it here as it does on the server.
import { controlsSession } from "/assets/clients/baton.js";

const $ = (id) => document.getElementById(id);
const COUNTDOWN_S = 10;

export class IdleReturn {
  constructor() {
    this.lastInput = 0;
    this.timer = null;
    this.session = null;
  }

  render(session, me) {
    this.session = session;
    const idle = session?.autoReturn?.idleSeconds;
    if (!idle || !controlsSession(session, me)) {
      clearInterval(this.timer);
      this.timer = null;
      this.lastInput = 0;
      $("auto-return").hidden = true;
      return;
    }
    if (!this.lastInput) this.lastInput = Date.now();
    if (!this.timer) this.timer = setInterval(() => this.tick(), 250);
    this.tick();
  }

  tick() {
    const idle = this.session?.autoReturn?.idleSeconds || 0;
    const left = Math.ceil(idle - (Date.now() - this.lastInput) / 1000);
    $("auto-return").hidden = left > COUNTDOWN_S;
    $("auto-return-text").textContent =
      `Idle: control goes back to the agent in ${Math.max(0, left)} s.`;
  }

  noteInput() {
    if (this.timer) this.lastInput = Date.now();
  }
}
