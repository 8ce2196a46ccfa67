// Friendly names for the REST API's shapes, from the generated src/openapi.ts
// (docs/openapi.json, the edge's /openapi.json): one definition of each.
import type { components, paths } from "./openapi.js";

type Schemas = components["schemas"];

/** A session without its steps: every answer but GET one session, and every event. */
export type SessionSummary = Schemas["SessionSummary"];
/** A session with its newest 200 step events (GET one session, session:watch). */
export type Session = Schemas["Session"];
export type StepEvent = Schemas["StepEvent"];
export type Handback = Schemas["Handback"];
export type Step = Schemas["Step"];
export type CreateSession = Schemas["CreateSession"];
export type ControlAction = Schemas["Control"]["action"];
export type ControlState = SessionSummary["state"];
export type TaskStatus = NonNullable<SessionSummary["task"]["status"]>;
/** GET .../stream: a single-use WebSocket URL for the live view (docs/stream.md). */
export type StreamAccess = Schemas["Stream"];
export type CdpAccess = Schemas["Cdp"];
export type ErrorBody = Schemas["Error"];
export type ShareRequest = Schemas["ShareRequest"];
export type Share = Schemas["Share"];
/** A new share: its `url` (/embed, for people) and `token` (for programs). */
export type ShareCreated = Schemas["ShareCreated"];
export type SessionPage =
  paths["/api/browser-session"]["get"]["responses"][200]["content"]["application/json"];

/** States in which a session still has a browser to show. */
export const LIVE_STATES: readonly ControlState[] = [
  "STARTING",
  "AI_CONTROL",
  "USER_CONTROL",
  "PAUSED",
  "FINISHED",
];

/** States from which a person may take control (services/session's state machine). */
export const TAKEABLE_STATES: readonly ControlState[] = ["AI_CONTROL", "PAUSED", "FINISHED"];
