"""What counts as a secret, and how it is kept out of records: one definition.

The rule (the top README's "Secrets"):

- Whatever a step fills (`fill.value`) or types (`type.text`) is a secret
  wherever the page cannot be seen: the session service does not know which
  field a value lands in, so the session record, the store, every gRPC answer
  and WatchSession event carry `[redacted]` instead. Only the StartTask call
  to automation carries the value, which the browser needs.
- Automation, which sees the page, shows a value in a step's description only
  when the field is not password-like: not `type=password`, no `password` or
  `one-time-code` autocomplete, and no secret word below in its selector, name
  or id (`SECRET_FIELD_SCRIPT`).
- Nothing a person types through the stream is logged or stored anywhere (the
  edge's RFB filter counts keys and never records them), nor shown to the
  agent's model: what a takeover left in the fields it typed into is replaced in
  later observations (services/automation/person_typed.py).
"""

from __future__ import annotations

from collections.abc import Iterable

from baton.automation.v1 import automation_pb2

REDACTED = "[redacted]"

# Substrings of a selector, field name or id that mark a secret field.
SECRET_WORDS = (
    "password",
    "passwd",
    "pwd",
    "passcode",
    "passphrase",
    "secret",
    "token",
    "otp",
    "cvv",
    "cvc",
)


def looks_secret(name: str) -> bool:
    """Whether a selector or field name names a secret field by itself."""
    lowered = name.lower()
    return any(word in lowered for word in SECRET_WORDS)


# Playwright `evaluate_all` over the elements a selector matches: true unless
# it matches elements and none of them is a password-like field.
SECRET_FIELD_SCRIPT = (
    "els => els.length === 0 || els.some(e => {"
    " const ac = (e.autocomplete || '').toLowerCase();"
    " const names = ((e.name || '') + ' ' + (e.id || '')).toLowerCase();"
    " return (e.type || '').toLowerCase() === 'password'"
    " || ac.includes('password') || ac.includes('one-time-code')"
    f" || {list(SECRET_WORDS)!r}.some(w => names.includes(w)); }})"
)


def redact_step(step: automation_pb2.Step) -> automation_pb2.Step:
    """The step as it may be kept: fill values and typed text replaced."""
    action = step.WhichOneof("action")
    if action not in ("fill", "type"):
        return step
    kept = automation_pb2.Step()
    kept.CopyFrom(step)
    if action == "fill" and kept.fill.value:
        kept.fill.value = REDACTED
    if action == "type" and kept.type.text:
        kept.type.text = REDACTED
    return kept


def redact_steps(steps: tuple[automation_pb2.Step, ...]) -> tuple[automation_pb2.Step, ...]:
    return tuple(redact_step(step) for step in steps)


def scrub(text: str, secrets: Iterable[str], placeholder: str = REDACTED) -> str:
    """`text` (an error message, a page's snapshot) with every occurrence of a
    secret replaced, the longest first (one secret may contain another)."""
    for secret in sorted(secrets, key=len, reverse=True):
        if secret:
            text = text.replace(secret, placeholder)
    return text
