"""What a person typed during a takeover stays out of what the agent's model sees
(README, "Privacy during takeover").

When control returns, automation reads the values now in the fields the person
typed into (the hand-back watch names them, handback.py), and the values in the
query and fragment of the URLs the person went to (a GET form puts what was
typed there, and its field is gone once the next page shows), and keeps them in
this process only; the hand-back report and every later observation for a
planner (URL, title, ARIA snapshot, what a step reads) has each of them
replaced. The values are never sent, stored or logged.
"""

from __future__ import annotations

from urllib.parse import unquote_plus, urlsplit

PLACEHOLDER = "[typed by a person]"
# Shorter values would blank out ordinary words of the page.
MIN_CHARS = 3


def worth_hiding(value: object) -> str | None:
    """The value to hide, or None for nothing or a value too short to hide."""
    if not isinstance(value, str):
        return None
    value = value.strip()
    return value if len(value) >= MIN_CHARS else None


def url_values(url: str) -> set[str]:
    """The parameter values in `url`'s query and fragment, as written and decoded,
    each worth hiding (a person's URL may carry what they typed)."""
    parts = urlsplit(url)
    found: set[str] = set()
    for component in (parts.query, parts.fragment):
        for pair in component.split("&"):
            raw = pair.partition("=")[2] if "=" in pair else pair
            for value in (raw, unquote_plus(raw)):
                hidden = worth_hiding(value)
                if hidden is not None:
                    found.add(hidden)
    return found
