"""Recognising CAPTCHA widgets by the address of their frame."""

from __future__ import annotations

from urllib.parse import urlsplit


def captcha_kind(frame_url: str) -> str | None:
    """ "reCAPTCHA", "hCaptcha" or "Turnstile" when `frame_url` is such a widget's frame."""
    parts = urlsplit(frame_url)
    host = (parts.hostname or "").lower()
    path = parts.path.lower()

    def on(domain: str) -> bool:
        return host == domain or host.endswith("." + domain)

    if (on("google.com") or on("recaptcha.net") or on("gstatic.com")) and "/recaptcha/" in path:
        return "reCAPTCHA"
    if on("hcaptcha.com"):
        return "hCaptcha"
    if on("challenges.cloudflare.com"):
        return "Turnstile"
    return None


def first_captcha(frame_urls: list[str]) -> str | None:
    for url in frame_urls:
        kind = captcha_kind(url)
        if kind is not None:
            return kind
    return None
