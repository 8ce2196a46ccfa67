// Compiled (never run) by `npm run check`: the published types, used as the
// README shows. A wrong field or event name here fails `make lint`.
import {
  BatonClient,
  BatonError,
  type BatonLiveView,
  type ControlState,
  type Session,
  type SessionSummary,
} from "@baton/client";

export async function drive(edgeUrl: string, token: string): Promise<ControlState> {
  const baton = new BatonClient({ edgeUrl, token: async () => token });
  const created: SessionSummary = await baton.createSession({
    task: "Find the opening hours",
    url: "https://example.com",
  });
  const events = baton.events();
  events.on("session:control_changed", ({ session, action }) => {
    console.log(session.state, action ?? "start");
  });
  events.on("session:step", ({ step }) => console.log(step.index, step.status));
  const watched: Session = await events.watch(created.id);
  console.log(watched.steps.length);
  try {
    await baton.takeControl(created.id);
  } catch (error) {
    if (error instanceof BatonError && error.status === 409) console.log(error.message);
  }
  const { url } = await baton.streamAccess(created.id);
  console.log(url);
  const page = await baton.listSessions({ pageSize: 10 });
  console.log(page.sessions.map((s) => s.ownerUserId), page.nextPageToken);
  const share = await baton.createShare(created.id, { role: "view", ttlSeconds: 600 });
  console.log(share.url, share.token, (await baton.listShares(created.id)).shares[0]?.role);
  await baton.revokeShare(created.id, share.id);
  const ended = await baton.endSession(created.id);
  events.close();
  return ended.state;
}

export function embed(sessionId: string, getToken: () => Promise<string>): BatonLiveView {
  const view = document.createElement("baton-live-view");
  view.setAttribute("session-id", sessionId);
  view.setAttribute("edge-url", "https://baton.example");
  view.tokenProvider = getToken;
  view.addEventListener("baton-control-change", (event) => {
    const mine: boolean = event.detail.mine;
    console.log(event.detail.state, mine, event.detail.takenBack);
  });
  view.addEventListener("baton-connection-change", (event) => {
    console.log(event.detail.status, event.detail.code);
  });
  view.addEventListener("baton-error", (event) => console.log(event.detail.message));
  document.body.append(view);
  return view;
}

// Node: the DOM-free entry.
export { BatonClient as NodeClient, type SessionSummary as NodeSession } from "@baton/client/client";
