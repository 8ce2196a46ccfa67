// Who a token stands for, and what a page shows of who controls a session.
import type { SessionSummary } from "./types.js";

/** The user a token stands for: a JWT's `sub`, else the operator. */
export function identityOf(token: string): string {
  const parts = token.split(".");
  if (parts.length === 3) {
    try {
      const payload: unknown = JSON.parse(atob(parts[1]!.replace(/-/g, "+").replace(/_/g, "/")));
      const sub = (payload as { sub?: unknown }).sub;
      if (typeof sub === "string") return sub;
    } catch {
      // Not a JWT: the operator token.
    }
  }
  return "operator";
}

/** Whether `me` holds control: the only viewer whose input reaches the browser. */
export function controlsSession(session: SessionSummary | null, me: string | null): boolean {
  return session?.state === "USER_CONTROL" && me !== null && session.controllerUserId === me;
}

/** A short label of who controls the session. */
export function controlLabel(session: SessionSummary, me: string | null): string {
  switch (session.state) {
    case "AI_CONTROL":
      return "AI";
    case "USER_CONTROL":
      return controlsSession(session, me) ? "You" : (session.controllerUserId ?? "someone");
    case "PAUSED":
      return "Paused";
    case "FINISHED":
      return "Agent finished";
    case "STARTING":
      return "Starting…";
    case "FAILED":
      return "Failed";
    default:
      return "Ended";
  }
}
