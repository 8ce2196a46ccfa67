// BatonClient: the edge's REST API (docs/openapi.json) and its Socket.IO events
// (docs/asyncapi.yaml), typed. No DOM needed: in Node, import it as
// "@baton/client/client" (the main entry loads noVNC, which needs a page).
import { io, type Socket } from "socket.io-client";
import { BatonError } from "./errors.js";
import type {
  Ack,
  ClientEventAnswers,
  ClientEventName,
  ClientEventPayloads,
  ClientToServerEvents,
  ServerEventName,
  ServerEventPayloads,
  ServerToClientEvents,
} from "./events.js";
import type {
  CdpAccess,
  ControlAction,
  CreateSession,
  Session,
  SessionPage,
  SessionSummary,
  Share,
  ShareCreated,
  ShareRequest,
  StreamAccess,
} from "./types.js";

export { BatonError } from "./errors.js";
export type * from "./events.js";
export type * from "./types.js";

/** Gives the bearer token (the operator token or a user JWT); asked before each use. */
export type TokenProvider = () => string | Promise<string>;

export interface BatonClientOptions {
  /** The edge, such as https://baton.example; in a page, defaults to the page's origin. */
  edgeUrl?: string;
  token: string | TokenProvider;
  /** How long an event waits for its acknowledgement (default 30 s). */
  ackTimeoutMs?: number;
  fetch?: typeof fetch;
}

export class BatonClient {
  readonly edgeUrl: string;
  private readonly tokenOf: TokenProvider;
  private readonly ackTimeoutMs: number;
  private readonly fetcher: typeof fetch;

  constructor(options: BatonClientOptions) {
    const base = options.edgeUrl ?? globalThis.location?.origin;
    if (!base) throw new TypeError("BatonClient needs edgeUrl outside a web page");
    this.edgeUrl = base.replace(/\/+$/, "");
    const token = options.token;
    this.tokenOf = typeof token === "function" ? token : () => token;
    this.ackTimeoutMs = options.ackTimeoutMs ?? 30_000;
    this.fetcher = options.fetch ?? globalThis.fetch.bind(globalThis);
  }

  /** A REST call; answers the parsed body, or throws a BatonError with the server's message. */
  async request<T>(method: string, path: string, body?: unknown): Promise<T> {
    const token = await this.tokenOf();
    const headers: Record<string, string> = { Authorization: `Bearer ${token}` };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    let response: Response;
    try {
      response = await this.fetcher(`${this.edgeUrl}${path}`, {
        method,
        headers,
        body: body === undefined ? null : JSON.stringify(body),
      });
    } catch (error) {
      const why = error instanceof Error ? error.message : String(error);
      throw new BatonError(`${method} ${path}: the edge is unreachable (${why})`, {
        status: null,
        code: "network",
      });
    }
    const text = await response.text();
    let data: unknown = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch {
      // Not JSON (a proxy's error page): reported by status below.
    }
    if (!response.ok) {
      const error = (data as { error?: { code?: string; message?: string } } | null)?.error;
      const retryAfter = Number(response.headers.get("Retry-After"));
      throw new BatonError(error?.message ?? `${method} ${path}: HTTP ${response.status}`, {
        status: response.status,
        code: error?.code ?? "http",
        retryAfterS: Number.isFinite(retryAfter) && retryAfter > 0 ? retryAfter : null,
      });
    }
    return data as T;
  }

  createSession(body: CreateSession): Promise<SessionSummary> {
    return this.request("POST", "/api/browser-session", body);
  }

  listSessions(query: { pageSize?: number; pageToken?: string } = {}): Promise<SessionPage> {
    const params = new URLSearchParams();
    if (query.pageSize !== undefined) params.set("pageSize", String(query.pageSize));
    if (query.pageToken !== undefined) params.set("pageToken", query.pageToken);
    const search = params.toString() ? `?${params}` : "";
    return this.request("GET", `/api/browser-session${search}`);
  }

  getSession(id: string): Promise<Session> {
    return this.request("GET", sessionPath(id));
  }

  endSession(id: string): Promise<SessionSummary> {
    return this.request("DELETE", sessionPath(id));
  }

  /** PUT .../control. expectedVersion: refuse (409) if the session moved on since. */
  control(id: string, action: ControlAction, expectedVersion?: number): Promise<SessionSummary> {
    const body = expectedVersion === undefined ? { action } : { action, expectedVersion };
    return this.request("PUT", `${sessionPath(id)}/control`, body);
  }

  takeControl(id: string): Promise<SessionSummary> {
    return this.control(id, "take_control");
  }

  returnControl(id: string): Promise<SessionSummary> {
    return this.control(id, "return_control");
  }

  /** A fresh, single-use stream URL: ask again for every connection (docs/stream.md);
   * `watch` for a watch-only stream, served from the session's shared feed. */
  streamAccess(id: string, options: { watch?: boolean } = {}): Promise<StreamAccess> {
    const query = options.watch ? "?watch=true" : "";
    return this.request("GET", `${sessionPath(id)}/stream${query}`);
  }

  cdpAccess(id: string): Promise<CdpAccess> {
    return this.request("GET", `${sessionPath(id)}/cdp`);
  }

  /** Lets someone without an account watch (or control) this one session. */
  createShare(id: string, share: ShareRequest): Promise<ShareCreated> {
    return this.request("POST", `${sessionPath(id)}/shares`, share);
  }

  listShares(id: string): Promise<{ shares: Share[] }> {
    return this.request("GET", `${sessionPath(id)}/shares`);
  }

  /** Revokes a share: its token gets 401 and its connections close. */
  async revokeShare(id: string, shareId: string): Promise<void> {
    await this.request("DELETE", `${sessionPath(id)}/shares/${encodeURIComponent(shareId)}`);
  }

  /** Opens the Socket.IO connection; the token is asked for again at each reconnect. */
  events(): BatonEvents {
    return new BatonEvents(this.edgeUrl, this.tokenOf, this.ackTimeoutMs);
  }
}

function sessionPath(id: string): string {
  return `/api/browser-session/${encodeURIComponent(id)}`;
}

/** One Socket.IO connection to the edge, typed by docs/asyncapi.yaml. */
export class BatonEvents {
  readonly socket: Socket<ServerToClientEvents, ClientToServerEvents>;
  private readonly ackTimeoutMs: number;
  private expired = false;

  constructor(edgeUrl: string, token: TokenProvider, ackTimeoutMs: number) {
    this.ackTimeoutMs = ackTimeoutMs;
    this.socket = io(edgeUrl, {
      path: "/socket.io",
      transports: ["websocket"],
      // Called at every (re)connect, so an expired JWT is replaced by a fresh one.
      auth: (give) => {
        Promise.resolve(token()).then(
          (value) => give({ token: value }),
          () => give({ token: "" }),
        );
      },
    });
    // The edge disconnects a client whose JWT expired (auth:expired); connect
    // again with the provider's next token rather than stay silent.
    this.socket.on("auth:expired", () => {
      this.expired = true;
    });
    this.socket.on("disconnect", (reason) => {
      if (reason === "io server disconnect" && this.expired) {
        this.expired = false;
        this.socket.connect();
      }
    });
  }

  /** Listens to an event; returns the function that stops listening. */
  on<E extends ServerEventName>(
    event: E,
    handler: (payload: ServerEventPayloads[E]) => void,
  ): () => void {
    // socket.io's typings cannot follow a generic event name; the map above is the type.
    const socket = this.socket as unknown as Socket;
    const listener = handler as (...args: unknown[]) => void;
    socket.on(event as string, listener);
    return () => {
      socket.off(event as string, listener);
    };
  }

  /** Sends an event; resolves with the acknowledged session, or throws a BatonError. */
  send<E extends ClientEventName>(
    event: E,
    payload: ClientEventPayloads[E],
  ): Promise<ClientEventAnswers[E]> {
    const socket = this.socket as unknown as Socket;
    return new Promise((resolve, reject) => {
      socket
        .timeout(this.ackTimeoutMs)
        .emit(event, payload, (timedOut: Error | null, answer: Ack<ClientEventAnswers[E]>) => {
          if (timedOut) {
            reject(new BatonError(`${event}: no answer from the edge`, { status: null, code: "timeout" }));
          } else if (answer.ok) {
            resolve(answer.session);
          } else {
            reject(BatonError.fromEvent(answer.error));
          }
        });
    });
  }

  /** Joins the session's room; answers the full session (with its steps). */
  watch(id: string): Promise<Session> {
    return this.send("session:watch", { id });
  }

  create(body: CreateSession): Promise<SessionSummary> {
    return this.send("session:create", body);
  }

  control(id: string, action: ControlAction, expectedVersion?: number): Promise<SessionSummary> {
    const payload = expectedVersion === undefined ? { id, action } : { id, action, expectedVersion };
    return this.send("session:control", payload);
  }

  end(id: string): Promise<SessionSummary> {
    return this.send("session:end", { id });
  }

  close(): void {
    this.socket.close();
  }
}
