// "Your sessions": every session the signed-in user may see (an operator sees
// everyone's, with their owners), newest first, the watched one marked.
const $ = (id) => document.getElementById(id);

export class SessionList {
  // open(id): the person chose a session. current(): the watched session.
  // onError(message): the list failed. replay(id): the person chose a
  // recorded session's replay (replay.js).
  constructor(open, current, onError, replay) {
    this.open = open;
    this.replay = replay;
    this.current = current;
    this.onError = onError;
    this.client = null;
    this.me = null;
    $("refresh-sessions").addEventListener("click", () => this.refresh());
  }

  label(session) {
    // Whose it is, when it is not yours.
    const owner = session.ownerUserId !== this.me ? ` · ${session.ownerUserId}` : "";
    return `${session.task.text || session.task.url} · ${session.state}${owner}`;
  }

  // The signed-in user's (BatonClient and who it is); lists them at once.
  signedIn(client, me) {
    this.client = client;
    this.me = me;
    return this.refresh();
  }

  async refresh() {
    if (!this.client) return;
    try {
      const { sessions } = await this.client.listSessions();
      const list = $("session-list");
      list.replaceChildren();
      sessions.sort((a, b) => (b.createdAt || "").localeCompare(a.createdAt || ""));
      for (const session of sessions) {
        const item = document.createElement("li");
        item.dataset.sessionId = session.id;
        const label = document.createElement("span");
        label.textContent = this.label(session);
        const open = document.createElement("button");
        open.type = "button";
        open.className = "small";
        open.textContent = "Open";
        open.addEventListener("click", () => this.open(session.id));
        item.append(label, open);
        if (session.recording) item.append(this.replayButton(session.id));
        list.append(item);
      }
      this.mark(this.current());
    } catch (error) {
      this.onError(`Could not list sessions: ${error.message}`);
    }
  }

  replayButton(id) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "small replay-button";
    button.textContent = "Replay";
    button.addEventListener("click", () => this.replay(id));
    return button;
  }

  // The watched session marked, its label current.
  mark(session) {
    for (const item of $("session-list").children) {
      const current = item.dataset.sessionId === session?.id;
      item.classList.toggle("current", current);
      if (current) item.firstChild.textContent = this.label(session);
    }
  }
}
