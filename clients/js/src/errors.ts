// Every failure the client reports: the HTTP status and the server's own message
// and code (services/runtime/errors.py, the `{error: {code, message}}` body).

// The HTTP status of each error code (services/runtime/errors.py), for errors
// that arrive as a Socket.IO acknowledgement, which carries the code only.
const STATUS_OF_CODE: Readonly<Record<string, number>> = {
  invalid_argument: 400,
  unauthenticated: 401,
  permission_denied: 403,
  not_found: 404,
  failed_precondition: 409,
  conflict: 409,
  payload_too_large: 413,
  resource_exhausted: 429,
  internal: 500,
  unavailable: 503,
  deadline_exceeded: 503,
};

export interface BatonErrorInit {
  /** HTTP status; for an event's error, the status of its code. null: no answer at all. */
  status: number | null;
  /** The server's machine-readable code (`not_found`), or `network` / `timeout`. */
  code: string;
  /** Seconds to wait before asking again (a 429's or 503's Retry-After). */
  retryAfterS?: number | null;
}

export class BatonError extends Error {
  readonly status: number | null;
  readonly code: string;
  readonly retryAfterS: number | null;

  constructor(message: string, init: BatonErrorInit) {
    super(message);
    this.name = "BatonError";
    this.status = init.status;
    this.code = init.code;
    this.retryAfterS = init.retryAfterS ?? null;
  }

  /** From a Socket.IO acknowledgement's `{code, message}`. */
  static fromEvent(error: { code: string; message: string }): BatonError {
    return new BatonError(error.message, {
      status: STATUS_OF_CODE[error.code] ?? null,
      code: error.code,
    });
  }
}
