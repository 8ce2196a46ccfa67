// <baton-live-view>: one session's live browser (noVNC on the edge's stream
// WebSocket), who controls it, Take / Return Control, quality and fullscreen.
// The edge gates input on its own (docs/stream.md); the element sends input only
// while its user holds control, and none at all with `view-only`.
import RFB from "@novnc/novnc";
import { BatonClient, type BatonEvents, type TokenProvider } from "./client.js";
import { BatonError } from "./errors.js";
import { controlLabel, controlsSession, identityOf } from "./identity.js";
import { FINAL_STATUSES, RECONNECT_DELAYS_MS, shouldReconnect } from "./stream-policy.js";
import { LIVE_STATES, TAKEABLE_STATES, type ControlState, type SessionSummary } from "./types.js";

export type ConnectionStatus = "idle" | "connecting" | "connected" | "reconnecting" | "disconnected";
export type Quality = "low" | "medium" | "high";

/** `baton-connection-change`: the stream's state. code/reason: the WebSocket's close. */
export interface ConnectionChangeDetail {
  status: ConnectionStatus;
  code: number | null;
  reason: string | null;
}
/** `baton-control-change`: who controls the session changed (or whether it is you). */
export interface ControlChangeDetail {
  state: ControlState;
  controllerUserId: string | null;
  /** This element's user holds control: its input reaches the browser. */
  mine: boolean;
  /** Set when this element's user had control and someone else ended it. */
  takenBack: boolean;
  previousState: ControlState | null;
  session: SessionSummary;
}
/** `baton-session-change`: any news of the session (steps, task, control). */
export interface SessionChangeDetail {
  session: SessionSummary;
}
/** `baton-quality-change` */
export interface QualityChangeDetail {
  quality: Quality;
}
/** `baton-fullscreen-change` */
export interface FullscreenChangeDetail {
  fullscreen: boolean;
}
/** `baton-error`: something the person should read, shown in the element too. */
export interface LiveViewErrorDetail {
  message: string;
  status: number | null;
  code: string;
}

export interface BatonLiveViewEventMap {
  "baton-connection-change": CustomEvent<ConnectionChangeDetail>;
  "baton-control-change": CustomEvent<ControlChangeDetail>;
  "baton-session-change": CustomEvent<SessionChangeDetail>;
  "baton-quality-change": CustomEvent<QualityChangeDetail>;
  "baton-fullscreen-change": CustomEvent<FullscreenChangeDetail>;
  "baton-error": CustomEvent<LiveViewErrorDetail>;
}

/** noVNC's JPEG quality (0-9) and compression (0-9) for each choice (Tight encoding). */
const QUALITY_LEVELS: Readonly<Record<Quality, { quality: number; compression: number }>> = {
  low: { quality: 1, compression: 9 },
  medium: { quality: 5, compression: 6 },
  high: { quality: 8, compression: 2 },
};

const TEMPLATE = `
<style>
  :host { display: block; aspect-ratio: 16 / 10; min-height: 160px; background: #222;
          color: #eee; font: 13px system-ui, sans-serif; }
  :host([hidden]) { display: none; }
  :host([bare]) .bar, :host([bare]) .error { display: none; }
  :host(:fullscreen) { width: 100%; height: 100%; aspect-ratio: auto; }
  .root { display: flex; flex-direction: column; width: 100%; height: 100%; }
  .bar { display: flex; flex-wrap: wrap; align-items: center; gap: 6px; padding: 4px 6px;
         background: #111; }
  .control { font-weight: 600; }
  .status { opacity: 0.75; }
  .spacer { flex: 1; }
  .error { padding: 4px 6px; background: #5a1d1d; }
  .screen { position: relative; flex: 1 1 auto; min-height: 0; overflow: hidden; outline: none; }
  [hidden] { display: none !important; }
</style>
<div class="root" part="root">
  <div class="bar" part="bar">
    <span>Control</span>
    <strong class="control" part="control">…</strong>
    <span class="status" part="status">not connected</span>
    <span class="spacer"></span>
    <button class="take" part="button take" type="button" disabled>Take Control</button>
    <button class="return" part="button return" type="button" disabled>Return Control</button>
    <label part="quality">Quality
      <select class="quality">
        <option value="low">Low</option>
        <option value="medium">Medium</option>
        <option value="high">High</option>
      </select>
    </label>
    <button class="fullscreen" part="button fullscreen" type="button">Fullscreen</button>
  </div>
  <div class="error" part="error" role="alert" hidden></div>
  <div class="screen" part="screen" tabindex="-1"></div>
</div>`;

// Lets `import "@baton/client"` succeed where there is no DOM (Node): the class
// is only defined as an element where customElements exists.
const ElementBase = (globalThis.HTMLElement ?? class {}) as typeof HTMLElement;

export class BatonLiveView extends ElementBase {
  static readonly observedAttributes = ["session-id", "edge-url", "view-only", "quality", "bare"];

  private tokenProviderValue: TokenProvider | null = null;
  private client: BatonClient | null = null;
  private events: BatonEvents | null = null;
  private rfb: RFB | null = null;
  private channel: WebSocket | null = null;
  private reconnectTimer: ReturnType<typeof setTimeout> | null = null;
  private restartQueued = false;
  // Bumped by every restart: answers for an older session or edge are dropped.
  private generation = 0;
  private sessionValue: SessionSummary | null = null;
  private me: string | null = null;
  private ownReturn = false;
  private statusValue: ConnectionStatus = "idle";
  // Screen updates received since the last takeUpdates().
  private updates = 0;
  // Whether the current stream was asked for as watch-only.
  private watching = false;
  private readonly root: ShadowRoot;

  constructor() {
    super();
    this.root = this.attachShadow({ mode: "open" });
    this.root.innerHTML = TEMPLATE;
    this.shadowPart("take").addEventListener("click", () => void this.takeControl());
    this.shadowPart("return").addEventListener("click", () => void this.returnControl());
    this.qualitySelect.addEventListener("change", () => {
      this.quality = this.qualitySelect.value as Quality;
    });
    this.shadowPart("fullscreen").addEventListener("click", () => void this.toggleFullscreen());
    this.addEventListener("fullscreenchange", () => {
      const fullscreen = document.fullscreenElement === (this as Element);
      this.shadowPart("fullscreen").textContent = fullscreen ? "Exit fullscreen" : "Fullscreen";
      this.emit("baton-fullscreen-change", { fullscreen });
    });
  }

  /** The session shown; attribute `session-id`. */
  get sessionId(): string | null {
    return this.getAttribute("session-id");
  }
  set sessionId(value: string | null) {
    this.setOrRemove("session-id", value);
  }

  /** The edge; attribute `edge-url` (default: the page's origin). */
  get edgeUrl(): string {
    return this.getAttribute("edge-url") ?? location.origin;
  }
  set edgeUrl(value: string | null) {
    this.setOrRemove("edge-url", value);
  }

  /** Only watch: no control buttons, no input sent. Attribute `view-only`. */
  get viewOnly(): boolean {
    return this.hasAttribute("view-only");
  }
  set viewOnly(value: boolean) {
    this.toggleAttribute("view-only", value);
  }

  /**
   * Only the screen: no bar and no error box of its own, for a page that draws
   * its own controls and shows `baton-error` itself (the console). Attribute `bare`.
   */
  get bare(): boolean {
    return this.hasAttribute("bare");
  }
  set bare(value: boolean) {
    this.toggleAttribute("bare", value);
  }

  /** The picture's quality, low, medium or high (default); attribute `quality`. */
  get quality(): Quality {
    const value = this.getAttribute("quality");
    return value === "low" || value === "medium" ? value : "high";
  }
  set quality(value: Quality) {
    this.setAttribute("quality", value);
  }

  /** Gives the bearer token; called for every stream URL and Socket.IO (re)connect. */
  get tokenProvider(): TokenProvider | null {
    return this.tokenProviderValue;
  }
  set tokenProvider(provider: TokenProvider | null) {
    this.tokenProviderValue = provider;
    this.queueRestart();
  }

  /** The session as last heard of. */
  get session(): SessionSummary | null {
    return this.sessionValue;
  }

  get connectionStatus(): ConnectionStatus {
    return this.statusValue;
  }

  /** Whether this element sends input now: its user controls and it is not view-only. */
  get interactive(): boolean {
    return !this.viewOnly && controlsSession(this.sessionValue, this.me) && this.rfb !== null;
  }

  /** Screen updates received since the last call (a page's updates-per-second figure). */
  takeUpdates(): number {
    const updates = this.updates;
    this.updates = 0;
    return updates;
  }

  /** Keys go to the live browser; the page never scrolls to bring it into view. */
  override focus(options?: FocusOptions): void {
    const target: { focus(options?: FocusOptions): void } = this.rfb ?? this.screen;
    target.focus({ ...options, preventScroll: true });
  }

  connectedCallback(): void {
    this.queueRestart();
  }

  disconnectedCallback(): void {
    this.stop();
  }

  attributeChangedCallback(name: string, before: string | null, after: string | null): void {
    if (before === after) return;
    if (name === "quality") this.applyQuality(true);
    // A watch-only stream never carries input: leaving view-only takes a stream of its own.
    else if (name === "view-only" && this.watching && !this.viewOnly) this.queueRestart();
    else if (name === "view-only" || name === "bare") this.render();
    else this.queueRestart();
  }

  async takeControl(): Promise<void> {
    await this.changeControl("take_control");
    this.focus();
  }

  async returnControl(): Promise<void> {
    await this.changeControl("return_control");
  }

  async toggleFullscreen(): Promise<void> {
    try {
      if (document.fullscreenElement === (this as Element)) await document.exitFullscreen();
      else await this.requestFullscreen();
    } catch (error) {
      this.fail(error);
    }
  }

  private async changeControl(action: "take_control" | "return_control"): Promise<void> {
    const id = this.sessionId;
    if (!this.events || !id) return;
    this.clearError();
    // Control this element gives back is not "taken back" (ControlChangeDetail).
    this.ownReturn = action === "return_control";
    try {
      const session = await this.events.control(id, action);
      // Whoever the server made controller is who this element's token stands for.
      if (action === "take_control" && session.controllerUserId) this.me = session.controllerUserId;
      this.apply(session);
    } catch (error) {
      this.ownReturn = false;
      this.fail(error);
    }
  }

  // Attribute changes come in bursts (a framework sets several): restart once.
  private queueRestart(): void {
    if (this.restartQueued) return;
    this.restartQueued = true;
    queueMicrotask(() => {
      this.restartQueued = false;
      this.stop();
      if (this.isConnected) void this.start();
    });
  }

  private async start(): Promise<void> {
    const id = this.sessionId;
    const provider = this.tokenProviderValue;
    if (!id || !provider) return;
    const generation = this.generation;
    try {
      this.me = identityOf(await provider());
    } catch (error) {
      this.fail(error);
      return;
    }
    if (generation !== this.generation) return;
    this.client = new BatonClient({ edgeUrl: this.edgeUrl, token: provider });
    // Every listener is added before the connection can open (below, synchronously).
    const events = this.client.events();
    this.events = events;
    const fresh = ({ session }: { session: SessionSummary }): void => {
      if (generation === this.generation) this.apply(session);
    };
    events.on("session:step", fresh);
    events.on("session:control_changed", fresh);
    events.on("session:task_changed", fresh);
    events.on("session:ended", fresh);
    events.on("session:error", ({ session, message }) => {
      fresh({ session });
      if (generation === this.generation) this.fail(new BatonError(message, { status: null, code: "session" }));
    });
    events.on("auth:expired", ({ error }) => {
      if (generation === this.generation) this.fail(BatonError.fromEvent(error));
    });
    events.socket.on("connect_error", (error) => {
      if (generation === this.generation) this.showError(`Live updates refused: ${error.message}`);
    });
    events.socket.on("connect", () => {
      // Also after a reconnect: the edge has forgotten this connection's rooms.
      events.watch(id).then(
        (session) => {
          if (generation !== this.generation) return;
          this.clearError();
          this.apply(session);
          if (!this.channel && !this.reconnectTimer && LIVE_STATES.includes(session.state)) {
            void this.connectStream(generation, 0);
          }
        },
        (error: unknown) => {
          if (generation === this.generation) this.fail(error);
        },
      );
    });
  }

  private stop(): void {
    this.generation += 1;
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    this.reconnectTimer = null;
    this.closeStream();
    this.events?.close();
    this.events = null;
    this.client = null;
    this.sessionValue = null;
    this.setStatus("idle", null, null);
    this.render();
  }

  private closeStream(): void {
    this.channel = null;
    if (this.rfb) {
      const rfb = this.rfb;
      this.rfb = null;
      rfb.disconnect();
    }
  }

  // A fresh stream URL for every connection: they are single-use (docs/stream.md).
  // `again`: after a dropped connection, "reconnecting" until it gets through.
  private async connectStream(generation: number, attempt: number, again = false): Promise<void> {
    const id = this.sessionId;
    if (!this.client || !id) return;
    if (!again) this.setStatus("connecting", null, null);
    let url: string;
    try {
      // A view-only element watches: its stream shares the session's feed
      // at the edge (docs/stream.md, "Watch-only streams").
      this.watching = this.viewOnly;
      ({ url } = await this.client.streamAccess(id, { watch: this.watching }));
    } catch (error) {
      if (generation !== this.generation) return;
      if (error instanceof BatonError && error.status !== null && FINAL_STATUSES.includes(error.status)) {
        this.setStatus("disconnected", null, null);
        this.fail(error);
      } else {
        this.scheduleReconnect(generation, attempt + 1);
      }
      return;
    }
    if (generation !== this.generation) return;
    this.closeStream();
    // Our own WebSocket, handed to noVNC, so that its close code decides reconnecting.
    const channel = new WebSocket(url, ["binary"]);
    channel.addEventListener("message", () => {
      this.updates += 1;
    });
    let gotThrough = false;
    channel.addEventListener("close", (event) => {
      if (this.channel !== channel || generation !== this.generation) return;
      this.channel = null;
      if (shouldReconnect(event.code, event.reason)) {
        this.closeStream();
        this.scheduleReconnect(generation, gotThrough ? 0 : attempt + 1, event.code, event.reason);
      } else {
        this.setStatus("disconnected", event.code, event.reason || null);
      }
    });
    const rfb = new RFB(this.screen, channel, { shared: true });
    rfb.scaleViewport = true;
    rfb.background = "#222";
    rfb.addEventListener("connect", () => {
      if (this.rfb !== rfb) return;
      gotThrough = true;
      this.setStatus("connected", null, null);
    });
    rfb.addEventListener("securityfailure", (event) => {
      const reason = (event as CustomEvent<{ reason?: string }>).detail?.reason;
      this.showError(`The live view was refused: ${reason || "security failure"}`);
    });
    this.channel = channel;
    this.rfb = rfb;
    this.applyQuality(false);
    this.render();
  }

  private scheduleReconnect(generation: number, attempt: number, code: number | null = null, reason: string | null = null): void {
    if (attempt >= RECONNECT_DELAYS_MS.length) {
      this.setStatus("disconnected", code, reason);
      this.showError("The live view lost its connection and could not connect again");
      return;
    }
    this.setStatus("reconnecting", code, reason);
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = null;
      if (generation === this.generation) void this.connectStream(generation, attempt, true);
    }, RECONNECT_DELAYS_MS[attempt]);
  }

  private apply(update: SessionSummary): void {
    if (update.id !== this.sessionId) return;
    const previous = this.sessionValue;
    if (previous && update.version < previous.version) return;
    const wasMine = controlsSession(previous, this.me);
    this.sessionValue = update;
    const mine = controlsSession(update, this.me);
    const ownReturn = this.ownReturn;
    if (wasMine && !mine) this.ownReturn = false;
    this.emit("baton-session-change", { session: update });
    if (
      !previous ||
      previous.state !== update.state ||
      previous.controllerUserId !== update.controllerUserId ||
      wasMine !== mine
    ) {
      this.emit("baton-control-change", {
        state: update.state,
        controllerUserId: update.controllerUserId,
        mine,
        takenBack: wasMine && !mine && !ownReturn && LIVE_STATES.includes(update.state),
        previousState: previous?.state ?? null,
        session: update,
      });
    }
    this.render();
  }

  private render(): void {
    const session = this.sessionValue;
    const label = this.shadowPart("control");
    label.textContent = session ? controlLabel(session, this.me) : "…";
    label.dataset.state = session?.state ?? "";
    const live = session !== null && LIVE_STATES.includes(session.state);
    const mine = controlsSession(session, this.me);
    const interactive = !this.viewOnly && mine;
    if (this.rfb) this.rfb.viewOnly = !interactive;
    this.screen.dataset.interactive = String(interactive);
    this.shadowPart("take").hidden = this.viewOnly;
    this.shadowPart("return").hidden = this.viewOnly;
    (this.shadowPart("take") as HTMLButtonElement).disabled =
      !live || session === null || !TAKEABLE_STATES.includes(session.state);
    (this.shadowPart("return") as HTMLButtonElement).disabled = !live || !mine;
    this.qualitySelect.value = this.quality;
  }

  private applyQuality(announce: boolean): void {
    const levels = QUALITY_LEVELS[this.quality];
    if (this.rfb) {
      this.rfb.qualityLevel = levels.quality;
      this.rfb.compressionLevel = levels.compression;
    }
    this.qualitySelect.value = this.quality;
    if (announce) this.emit("baton-quality-change", { quality: this.quality });
  }

  private setStatus(status: ConnectionStatus, code: number | null, reason: string | null): void {
    const text = status === "disconnected" && code !== null ? `disconnected (${code})` : status;
    this.shadowPart("status").textContent = text;
    if (status === this.statusValue) return;
    this.statusValue = status;
    this.emit("baton-connection-change", { status, code, reason });
  }

  private fail(error: unknown): void {
    const detail: LiveViewErrorDetail =
      error instanceof BatonError
        ? { message: error.message, status: error.status, code: error.code }
        : { message: error instanceof Error ? error.message : String(error), status: null, code: "client" };
    this.showError(detail.message, detail);
  }

  private showError(message: string, detail?: LiveViewErrorDetail): void {
    const box = this.shadowPart("error");
    box.textContent = message;
    box.hidden = false;
    this.emit("baton-error", detail ?? { message, status: null, code: "stream" });
  }

  private clearError(): void {
    const box = this.shadowPart("error");
    box.hidden = true;
    box.textContent = "";
  }

  private emit<K extends keyof BatonLiveViewEventMap>(
    type: K,
    detail: BatonLiveViewEventMap[K]["detail"],
  ): void {
    this.dispatchEvent(new CustomEvent(type, { detail, bubbles: true, composed: true }));
  }

  private setOrRemove(name: string, value: string | null): void {
    if (value === null) this.removeAttribute(name);
    else this.setAttribute(name, value);
  }

  private shadowPart(name: string): HTMLElement {
    return this.root.querySelector(`.${name}`) as HTMLElement;
  }

  private get screen(): HTMLElement {
    return this.shadowPart("screen");
  }

  private get qualitySelect(): HTMLSelectElement {
    return this.shadowPart("quality") as HTMLSelectElement;
  }
}

export interface BatonLiveView {
  addEventListener<K extends keyof BatonLiveViewEventMap>(
    type: K,
    listener: (this: BatonLiveView, event: BatonLiveViewEventMap[K]) => void,
    options?: boolean | AddEventListenerOptions,
  ): void;
  addEventListener(
    type: string,
    listener: EventListenerOrEventListenerObject,
    options?: boolean | AddEventListenerOptions,
  ): void;
  removeEventListener<K extends keyof BatonLiveViewEventMap>(
    type: K,
    listener: (this: BatonLiveView, event: BatonLiveViewEventMap[K]) => void,
    options?: boolean | EventListenerOptions,
  ): void;
  removeEventListener(
    type: string,
    listener: EventListenerOrEventListenerObject,
    options?: boolean | EventListenerOptions,
  ): void;
}

declare global {
  interface HTMLElementTagNameMap {
    "baton-live-view": BatonLiveView;
  }
}

/** Registers <baton-live-view> (done on import where there is a DOM). */
export function defineBatonLiveView(tagName = "baton-live-view"): void {
  if (globalThis.customElements && !customElements.get(tagName)) {
    customElements.define(tagName, class extends BatonLiveView {});
  }
}
