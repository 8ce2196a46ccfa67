// Who a token stands for, and what a page shows of who controls a session.
import type { SessionSummary } from "./types.js";

/**
 * The user a token stands for: a JWT's `sub`, a share token's guest
 * (`guest:<share id>`, README "Sharing"), else the operator.
 */
export function identityOf(token: string): string {
  const parts = token.split(".");
  if (parts.length === 3 || parts.length === 2) {
    try {
      const body = parts[parts.length - 2]!.replace(/-/g, "+").replace(/_/g, "/");
      const payload = JSON.parse(atob(body)) as { sub?: unknown; shid?: unknown };
      if (parts.length === 3 && typeof payload.sub === "string") return payload.sub;
      if (parts.length === 2 && typeof payload.shid === "string") return `guest:${payload.shid}`;
    } catch {
      // Neither: the operator token.
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
