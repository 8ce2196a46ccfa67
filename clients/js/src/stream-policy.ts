// When a live view connects again (docs/stream.md, "Reconnecting"): a fresh
// stream URL each time, after these close codes, with these delays.

// The edge went away or restarted (1001, 1012), the network dropped (1006), the
// display was briefly unreachable (1011), try again later (1013).
const RECONNECT_CODES = new Set([1001, 1006, 1011, 1012, 1013]);

/** Waits before each attempt; the count starts again after a connection that got through. */
export const RECONNECT_DELAYS_MS: readonly number[] = [250, 500, 1000, 2000, 4000, 5000, 5000, 5000];

/** Stream answers after which there is nothing to reconnect to (ended, or not yours). */
export const FINAL_STATUSES: readonly number[] = [401, 403, 404, 409];

export function shouldReconnect(code: number, reason: string): boolean {
  return RECONNECT_CODES.has(code) || (code === 1008 && reason === "token expired");
}
