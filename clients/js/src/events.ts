// The edge's Socket.IO events (docs/asyncapi.yaml), written by hand over the REST
// API's generated types; tests/clients/test_js_client_contract.py checks that
// SERVER_EVENTS and CLIENT_EVENTS name every event of the asyncapi file.
import type {
  ControlAction,
  CreateSession,
  Handback,
  Session,
  SessionSummary,
  StepEvent,
} from "./types.js";

export interface EventError {
  code: string;
  message: string;
}

/** The acknowledgement of every client event. */
export type Ack<S> = { ok: true; session: S } | { ok: false; error: EventError };

export interface SessionRef {
  id: string;
}

/** Events the edge sends, with their payloads. */
export interface ServerEventPayloads {
  "session:created": { session: SessionSummary };
  "session:step": { session: SessionSummary; step: StepEvent };
  /** action is null when nothing caused it (the session became AI_CONTROL at its start). */
  "session:control_changed": {
    session: SessionSummary;
    action: ControlAction | null;
    /** On a return: what the person did while they held control; null otherwise. */
    handback: Handback | null;
  };
  "session:task_changed": { session: SessionSummary };
  /** userId asks the person in control for it; that person may answer with hand_over. */
  "session:control_requested": { session: SessionSummary; userId: string };
  "session:error": { session: SessionSummary; message: string };
  "session:ended": { session: SessionSummary; reason: string };
  "auth:expired": { error: EventError };
}

/** Events a client sends, with their payloads. */
export interface ClientEventPayloads {
  "session:create": CreateSession;
  "session:watch": SessionRef;
  "session:control": {
    id: string;
    action: ControlAction;
    expectedVersion?: number | null;
    /** hand_over only: who gets control. */
    to?: string | null;
    /** take_control only: when control returns by itself (docs/state-machine.md). */
    autoReturn?: {
      urlMatches?: string | null;
      selectorAppears?: string | null;
      idleSeconds?: number | null;
    } | null;
  };
  "session:pause": SessionRef;
  "session:resume": SessionRef;
  "session:end": SessionRef;
  "session:request_control": SessionRef;
}

/** What each client event's acknowledgement carries when ok. */
export interface ClientEventAnswers {
  "session:create": SessionSummary;
  "session:watch": Session;
  "session:control": SessionSummary;
  "session:pause": SessionSummary;
  "session:resume": SessionSummary;
  "session:end": SessionSummary;
  "session:request_control": SessionSummary;
}

export type ServerEventName = keyof ServerEventPayloads;
export type ClientEventName = keyof ClientEventPayloads;

/** socket.io-client's typed maps. */
export type ServerToClientEvents = {
  [E in ServerEventName]: (payload: ServerEventPayloads[E]) => void;
};
export type ClientToServerEvents = {
  [E in ClientEventName]: (
    payload: ClientEventPayloads[E],
    ack: (answer: Ack<ClientEventAnswers[E]>) => void,
  ) => void;
};

export const SERVER_EVENTS = [
  "session:created",
  "session:step",
  "session:control_changed",
  "session:task_changed",
  "session:control_requested",
  "session:error",
  "session:ended",
  "auth:expired",
] as const satisfies readonly ServerEventName[];

export const CLIENT_EVENTS = [
  "session:create",
  "session:watch",
  "session:control",
  "session:pause",
  "session:resume",
  "session:end",
  "session:request_control",
] as const satisfies readonly ClientEventName[];

// Both lists name every event of the maps above: a missing one fails to compile.
type Missing<All, Listed> = [Exclude<All, Listed>] extends [never] ? true : Exclude<All, Listed>;
export const serverEventsComplete: Missing<ServerEventName, (typeof SERVER_EVENTS)[number]> = true;
export const clientEventsComplete: Missing<ClientEventName, (typeof CLIENT_EVENTS)[number]> = true;
