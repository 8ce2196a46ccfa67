// @baton/client: BatonClient (REST + Socket.IO, typed from docs/) and the
// <baton-live-view> element, registered on import where there is a DOM.
import { defineBatonLiveView } from "./live-view.js";

export * from "./client.js";
export * from "./errors.js";
export * from "./events.js";
export * from "./identity.js";
export * from "./live-view.js";
export * from "./stream-policy.js";
export * from "./types.js";
export type { components, paths } from "./openapi.js";

defineBatonLiveView();
