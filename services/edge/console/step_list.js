// The session's steps as this page holds them: the latest event per step index,
// and how many step events that is. Events carry the session's summary and one
// new step at most (services/edge/README.md, "Sessions"); a page that missed
// some (joined or reconnected between two) reads the whole session again.
const $ = (id) => document.getElementById(id);

// How much of a step's result (an extract's text) the list shows.
const RESULT_CHARS = 300;

function truncated(text, limit) {
  return text.length > limit ? `${text.slice(0, limit)}…` : text;
}

// A hand-back report (what the person did: docs/steps.md) is a row of its own
// beside the step it came during.
function stepKey(step) {
  return step.action === "handback" ? `handback-${step.index}` : step.index;
}

export class StepList {
  // resync(id): read the whole session again (its steps come with it).
  constructor(resync) {
    this.resync = resync;
    this.steps = new Map();
    this.held = 0;
    this.of = null;
    this.resyncing = false;
  }

  // A session event's one new step, when it is the next one this page expects.
  add(session, step) {
    if (this.of === session.id && session.stepCount === this.held + 1) {
      this.steps.set(stepKey(step), step);
      this.held += 1;
    }
  }

  apply(session) {
    if (this.of !== session.id) {
      this.steps = new Map();
      this.held = 0;
      this.of = session.id;
    }
    if (Array.isArray(session.steps)) {
      // A full view (GET, session:watch): the steps as they are now.
      this.steps = new Map(session.steps.map((step) => [stepKey(step), step]));
      this.held = session.stepCount;
    } else if (session.stepCount > this.held && !this.resyncing) {
      this.resyncing = true;
      Promise.resolve(this.resync(session.id)).finally(() => {
        this.resyncing = false;
      });
    }
  }

  render(session) {
    const list = $("step-list");
    list.replaceChildren();
    // Step events come as started then succeeded/failed: show the latest per step.
    for (const step of session ? this.steps.values() : []) {
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
      list.append(item);
    }
    $("step-progress").textContent = session
      ? `${session.task.stepsCompleted} / ${session.task.maxSteps}`
      : "";
  }
}
