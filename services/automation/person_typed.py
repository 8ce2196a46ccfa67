"""What a person typed during a takeover stays out of what the agent's model sees
(README, "Privacy during takeover").

When control returns, automation reads the values now in the fields the person
typed into (the hand-back watch names them, handback.py) and keeps them in this
process only; every later observation for a planner (URL, title, ARIA snapshot)
has each of them replaced. The values are never sent, stored or logged.
"""

from __future__ import annotations

PLACEHOLDER = "[typed by a person]"
# Shorter values would blank out ordinary words of the page.
MIN_CHARS = 3


def worth_hiding(value: object) -> str | None:
    """The value to hide, or None for nothing or a value too short to hide."""
    if not isinstance(value, str):
        return None
    value = value.strip()
    return value if len(value) >= MIN_CHARS else None
