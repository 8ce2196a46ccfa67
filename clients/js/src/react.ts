// @baton/client/react: <BatonLiveView> for React apps, a thin wrapper of the
// <baton-live-view> element (React is a peer dependency; the core never loads it).
import { createElement, useEffect, useRef, type CSSProperties, type ReactElement } from "react";
import type { TokenProvider } from "./client.js";
import {
  defineBatonLiveView,
  type BatonLiveView as LiveViewElement,
  type BatonLiveViewEventMap,
  type ConnectionChangeDetail,
  type ControlChangeDetail,
  type FullscreenChangeDetail,
  type LiveViewErrorDetail,
  type Quality,
  type QualityChangeDetail,
  type SessionChangeDetail,
} from "./live-view.js";

export interface BatonLiveViewProps {
  sessionId: string;
  /** Default: the page's origin. */
  edgeUrl?: string;
  tokenProvider: TokenProvider;
  viewOnly?: boolean;
  /** Only the screen: the page draws its own bar and shows errors (`bare`). */
  bare?: boolean;
  quality?: Quality;
  className?: string;
  style?: CSSProperties;
  onConnectionChange?: (detail: ConnectionChangeDetail) => void;
  onControlChange?: (detail: ControlChangeDetail) => void;
  onSessionChange?: (detail: SessionChangeDetail) => void;
  onQualityChange?: (detail: QualityChangeDetail) => void;
  onFullscreenChange?: (detail: FullscreenChangeDetail) => void;
  onError?: (detail: LiveViewErrorDetail) => void;
}

// Each DOM event and the prop that hears it.
const HANDLERS = {
  "baton-connection-change": "onConnectionChange",
  "baton-control-change": "onControlChange",
  "baton-session-change": "onSessionChange",
  "baton-quality-change": "onQualityChange",
  "baton-fullscreen-change": "onFullscreenChange",
  "baton-error": "onError",
} as const satisfies { [K in keyof BatonLiveViewEventMap]: keyof BatonLiveViewProps };

export function BatonLiveView(props: BatonLiveViewProps): ReactElement {
  defineBatonLiveView();
  const ref = useRef<LiveViewElement>(null);
  // The newest props, read by listeners added once.
  const latest = useRef(props);
  latest.current = props;

  useEffect(() => {
    const element = ref.current;
    if (element) element.tokenProvider = props.tokenProvider;
  }, [props.tokenProvider]);

  useEffect(() => {
    const element = ref.current;
    if (!element) return undefined;
    const listeners = Object.entries(HANDLERS).map(([type, prop]) => {
      const listener = (event: Event): void => {
        const handler = latest.current[prop] as ((detail: unknown) => void) | undefined;
        handler?.((event as CustomEvent<unknown>).detail);
      };
      element.addEventListener(type, listener);
      return [type, listener] as const;
    });
    return () => {
      for (const [type, listener] of listeners) element.removeEventListener(type, listener);
    };
  }, []);

  return createElement("baton-live-view", {
    ref,
    "session-id": props.sessionId,
    "edge-url": props.edgeUrl,
    "view-only": props.viewOnly ? "" : undefined,
    bare: props.bare ? "" : undefined,
    quality: props.quality,
    class: props.className,
    style: props.style,
  });
}

export type {
  ConnectionChangeDetail,
  ControlChangeDetail,
  LiveViewErrorDetail,
  Quality,
  SessionChangeDetail,
  TokenProvider,
};
