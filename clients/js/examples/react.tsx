// Compiled (never run) by `npm run check`: the React wrapper as the README shows it.
import { BatonLiveView } from "@baton/client/react";

export function Takeover(props: { sessionId: string; getToken: () => Promise<string> }) {
  return (
    <BatonLiveView
      sessionId={props.sessionId}
      edgeUrl="https://baton.example"
      tokenProvider={props.getToken}
      style={{ width: 800 }}
      onControlChange={({ state, mine }) => console.log(state, mine)}
      onError={({ message, status }) => console.log(message, status)}
    />
  );
}
