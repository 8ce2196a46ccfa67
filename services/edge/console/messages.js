// The console's error banner: one short sentence, anything longer (a server's
// multi-line message) behind the Details toggle. Its row is always there, so a
// message coming or going moves nothing under the cursor (console.css).
const $ = (id) => document.getElementById(id);

const HEADLINE_CHARS = 160;
// What the banner says while the server cannot be reached (cleared on reconnect).
export const UNREACHABLE = "Server unreachable, retrying…";

export function showError(message) {
  const [first, ...rest] = String(message).split("\n");
  const long = first.length > HEADLINE_CHARS;
  $("error-text").textContent = long ? `${first.slice(0, HEADLINE_CHARS - 1)}…` : first;
  const details = [long ? first : "", ...rest].join("\n").trim();
  $("error-details-text").textContent = details;
  $("error-details").hidden = !details;
  $("error-details").open = false;
  $("error-banner").classList.add("shown");
}

export function clearError() {
  $("error-banner").classList.remove("shown");
  $("error-text").textContent = "";
  $("error-details").hidden = true;
}

export function showsError(message) {
  return $("error-text").textContent === message;
}

export function wireMessages() {
  $("error-dismiss").addEventListener("click", clearError);
}
