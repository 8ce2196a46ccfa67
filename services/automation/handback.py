"""The hand-back report: what a person did while they held control.

Pure: the page is read (ChromiumBrowser.snapshot and its watch notes) before
the person gets control and again as they return it; these functions compare
the two and say what changed (services/automation/README.md, "The hand-back
report"). Names only, never values: a cookie's or storage item's value is
compared as a digest taken where it was read, and the watch notes hold the
fields a person typed into, never what they typed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import TypeVar

# Bounds, so one takeover cannot grow a session record without limit.
MAX_ITEMS = 50
MAX_TEXT = 200

ADDED = "added"
REMOVED = "removed"
CHANGED = "changed"


@dataclass(frozen=True)
class TypedField:
    label: str
    selector: str
    url: str


@dataclass(frozen=True)
class NameChange:
    """A cookie (domain: its domain) or a storage item (domain: its origin)."""

    name: str
    domain: str
    change: str
    area: str = ""


@dataclass(frozen=True)
class Download:
    file_name: str
    url: str


# A cookie by (name, domain, path); a storage item by (area, key).
CookieKey = tuple[str, str, str]
StorageKey = tuple[str, str]


@dataclass(frozen=True)
class PageSnapshot:
    url: str = ""
    title: str = ""
    # Each value's digest (value_digest), never the value.
    cookies: Mapping[CookieKey, str] = field(default_factory=dict)
    # The top page's origin and its localStorage / sessionStorage items.
    origin: str = ""
    storage: Mapping[StorageKey, str] = field(default_factory=dict)


@dataclass
class WatchNotes:
    """What the browser noticed while a person held control (filled by its listeners)."""

    navigations: list[str] = field(default_factory=list)
    fields: list[TypedField] = field(default_factory=list)
    downloads: list[Download] = field(default_factory=list)

    def navigated(self, url: str) -> None:
        if len(self.navigations) < MAX_ITEMS and (
            not self.navigations or self.navigations[-1] != url
        ):
            self.navigations.append(url[:2048])

    def typed(self, label: str, selector: str, url: str) -> None:
        typed = TypedField(" ".join(label.split())[:MAX_TEXT], selector[:MAX_TEXT], url[:2048])
        if typed not in self.fields and len(self.fields) < MAX_ITEMS:
            self.fields.append(typed)

    def downloaded(self, file_name: str, url: str) -> None:
        if len(self.downloads) < MAX_ITEMS:
            self.downloads.append(Download(file_name[:MAX_TEXT], url[:2048]))


@dataclass(frozen=True)
class HandbackReport:
    url_before: str
    title_before: str
    url_after: str
    title_after: str
    navigations: tuple[str, ...] = ()
    fields_typed: tuple[TypedField, ...] = ()
    cookies_changed: tuple[NameChange, ...] = ()
    storage_changed: tuple[NameChange, ...] = ()
    downloads: tuple[Download, ...] = ()
    held_seconds: float = 0.0


def value_digest(value: str) -> str:
    """What is kept of a value to tell whether it changed."""
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:32]


K = TypeVar("K", CookieKey, StorageKey)


def _changes(before: Mapping[K, str], after: Mapping[K, str]) -> list[tuple[K, str]]:
    found: list[tuple[K, str]] = []
    for key in sorted(set(before) | set(after)):
        if key not in before:
            found.append((key, ADDED))
        elif key not in after:
            found.append((key, REMOVED))
        elif before[key] != after[key]:
            found.append((key, CHANGED))
    return found


def cookie_changes(before: PageSnapshot, after: PageSnapshot) -> tuple[NameChange, ...]:
    changed = _changes(before.cookies, after.cookies)
    return tuple(NameChange(key[0], key[1], change) for key, change in changed[:MAX_ITEMS])


def storage_changes(before: PageSnapshot, after: PageSnapshot) -> tuple[NameChange, ...]:
    """Items of the top page's origin; only when it is the same origin before and
    after (another origin's storage is not read: it has no page open)."""
    if not before.origin or before.origin != after.origin:
        return ()
    changed = _changes(before.storage, after.storage)
    return tuple(
        NameChange(key[1], after.origin, change, area=key[0]) for key, change in changed[:MAX_ITEMS]
    )


def person_urls(before: PageSnapshot, after: PageSnapshot, notes: WatchNotes) -> list[str]:
    """The URLs the person went to while holding control (their values may be
    what they typed: person_typed.url_values)."""
    urls = list(notes.navigations)
    if after.url != before.url:
        urls.append(after.url)
    return urls


def build_report(
    before: PageSnapshot,
    after: PageSnapshot,
    notes: WatchNotes,
    held_seconds: float,
    hide: Callable[[str], str] = str,
) -> HandbackReport:
    """The report; `hide` takes what the person typed out of its URLs and titles
    (person_typed.py)."""
    return HandbackReport(
        url_before=hide(before.url),
        title_before=hide(before.title[:MAX_TEXT]),
        url_after=hide(after.url),
        title_after=hide(after.title[:MAX_TEXT]),
        navigations=tuple(hide(url) for url in notes.navigations),
        fields_typed=tuple(replace(f, url=hide(f.url)) for f in notes.fields),
        cookies_changed=cookie_changes(before, after),
        storage_changed=storage_changes(before, after),
        downloads=tuple(replace(d, url=hide(d.url)) for d in notes.downloads),
        held_seconds=round(held_seconds, 3),
    )


def describe_handback(report: HandbackReport) -> str:
    """The report in a few sentences, for the agent's planner and the step stream."""
    parts = [f"A person held control for {report.held_seconds:.0f} s and handed it back."]
    if report.url_before != report.url_after:
        parts.append(f"The page went from {report.url_before} to {report.url_after}.")
    else:
        parts.append(f"The page is still {report.url_after}.")
    if report.title_after:
        parts.append(f"Its title is {report.title_after!r}.")
    if report.fields_typed:
        names = ", ".join(f.label or f.selector for f in report.fields_typed)
        parts.append(f"They typed into: {names}.")
    if report.cookies_changed:
        names = ", ".join(f"{c.name} ({c.domain}, {c.change})" for c in report.cookies_changed)
        parts.append(f"Cookies changed: {names}.")
    if report.storage_changed:
        names = ", ".join(f"{s.area} {s.name} ({s.change})" for s in report.storage_changed)
        parts.append(f"Storage changed: {names}.")
    if report.downloads:
        names = ", ".join(d.file_name for d in report.downloads)
        parts.append(f"They downloaded: {names}.")
    return " ".join(parts)
