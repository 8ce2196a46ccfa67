"""Pure pieces: step descriptions, CAPTCHA frames, Chromium flags, /proc parsing, settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.automation.captcha import captcha_kind, first_captcha
from services.automation.chromium import (
    WindowSize,
    _first_line,
    browser_env,
    check_display,
    chromium_args,
    profile_prefix,
)
from services.automation.proc_table import (
    ProcessEntry,
    browser_main_pid,
    orphan_zombies,
    parse_stat,
    processes_of_browser,
)
from services.automation.settings import AutomationSettings
from services.automation.steps import (
    Fill,
    Scroll,
    Select,
    Type,
    UnsafeUrl,
    check_navigable,
    describe,
    looks_like_password_selector,
)
from services.runtime.errors import InvalidArgument
from services.runtime.settings import ConfigError, Env
from tests.conftest import INTERNAL_TOKEN


def test_fill_values_are_shown_only_when_known_not_secret() -> None:
    assert describe(Fill("#pw", "hunter2")) == "fill #pw with [redacted]"
    assert describe(Fill("#user", "ada"), secret=False) == "fill #user with 'ada'"
    assert describe(Type("x" * 200), secret=False).endswith("…'")
    assert describe(Type("x")) == "type [redacted]"
    assert describe(Select("#c", "green")) == "select 'green' in #c"
    assert describe(Scroll(0, 500)) == "scroll by (0, 500)"


def test_password_like_selectors() -> None:
    assert looks_like_password_selector("input[name=Password]")
    assert looks_like_password_selector("#pwd")
    assert not looks_like_password_selector("#spinner")
    # The one rule (services/runtime/redaction.py) covers more than passwords.
    for selector in ("#otp-code", "input[name=api_token]", "#client-secret", "#passcode"):
        assert looks_like_password_selector(selector), selector
    assert not looks_like_password_selector("#email")


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("https://www.google.com/recaptcha/api2/anchor?k=x", "reCAPTCHA"),
        ("https://www.recaptcha.net/recaptcha/enterprise/anchor", "reCAPTCHA"),
        ("https://newassets.hcaptcha.com/captcha/v1/abc/static/hcaptcha.html", "hCaptcha"),
        ("https://challenges.cloudflare.com/cdn-cgi/challenge-platform/turnstile/if", "Turnstile"),
        ("https://www.google.com/maps", None),
        ("https://evil.example/www.google.com/recaptcha/", None),
        ("about:blank", None),
    ],
)
def test_captcha_frames_are_recognised_by_address(url: str, kind: str | None) -> None:
    assert captcha_kind(url) == kind


def test_first_captcha_of_many_frames() -> None:
    assert first_captcha(["about:blank", "https://hcaptcha.com/x"]) == "hCaptcha"
    assert first_captcha([]) is None


def test_chromium_fills_the_display_and_stays_off_the_network() -> None:
    args = chromium_args(WindowSize(1280, 720))
    # The sandbox stays on: no flag turns it off or hides its warning.
    assert "--no-sandbox" not in args and "--test-type" not in args
    for flag in (
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        "--disable-sync",
        "--window-position=0,0",
        "--window-size=1280,720",
    ):
        assert flag in args


def test_browser_env_sets_display_and_drops_baton_settings() -> None:
    env = browser_env({"PATH": "/bin", "BATON_LLM_API_KEY": "k", "DISPLAY": ":0"}, ":101")
    assert env == {"PATH": "/bin", "DISPLAY": ":101"}


def test_displays_and_profile_names() -> None:
    assert check_display(":101") == ":101"
    with pytest.raises(InvalidArgument):
        check_display("host:0; rm -rf /")
    assert profile_prefix("a/b c") == "baton-profile-a_b_c-"


def test_playwright_errors_are_shortened() -> None:
    error = Exception("Page.goto: net::ERR_CONNECTION_REFUSED at http://x/\nCall log:\n  - nav")
    assert _first_line(error) == "net::ERR_CONNECTION_REFUSED at http://x/"


def test_proc_stat_parsing_handles_odd_names() -> None:
    entry = parse_stat(42, "42 (we ird) name) Z 7 42 42 0 -1", b"/bin/x\0--flag\0")
    assert entry == ProcessEntry(42, 7, 42, "Z", "we ird) name", ("/bin/x", "--flag"))
    assert entry.zombie


def test_finding_a_browser_and_its_processes() -> None:
    profile = Path("/tmp/p1")
    main = ProcessEntry(10, 5, 10, "S", "chromium", ("chromium", f"--user-data-dir={profile}"))
    helper = ProcessEntry(
        11, 10, 10, "S", "chromium", ("chromium", "--type=renderer", f"--user-data-dir={profile}")
    )
    zombie = ProcessEntry(12, 99, 10, "Z", "chromium", ())
    other = ProcessEntry(20, 5, 20, "S", "chromium", ("chromium", "--user-data-dir=/tmp/p2"))
    entries = [helper, main, zombie, other]
    assert browser_main_pid(entries, profile) == 10
    assert browser_main_pid(entries, Path("/tmp/p3")) is None
    assert processes_of_browser(entries, 10, profile) == [helper, main, zombie]
    assert list(orphan_zombies(entries, 99, 99)) == [12]


def test_orphan_zombies_are_chromiums_or_in_a_group_another_process_leads() -> None:
    def entry(pid: int, pgid: int, state: str, comm: str, ppid: int = 1) -> ProcessEntry:
        return ProcessEntry(pid, ppid, pgid, state, comm, ())

    entries = [
        entry(2, 1, "Z", "chromium"),  # a Chromium zombie of ours, whatever its group
        entry(3, 40, "Z", "exe"),  # a helper that died before naming itself
        entry(4, 1, "Z", "xdotool"),  # started by us in our group: asyncio reaps it
        entry(5, 5, "Z", "Xvnc"),  # started by us in a new session: asyncio's too
        entry(6, 40, "S", "exe"),  # alive
        entry(7, 40, "Z", "exe", ppid=8),  # not our child
    ]
    assert list(orphan_zombies(entries, 1, 1)) == [2, 3]


def test_settings_from_env() -> None:
    settings = AutomationSettings.from_env(
        Env(
            {
                "BATON_INTERNAL_TOKEN": INTERNAL_TOKEN.value,
                "BATON_AUTOMATION_PORT": "6000",
                "BATON_PAUSE_GRACE_MS": "250",
                "BATON_LLM_BASE_URL": "http://localhost:11434/v1",
                "BATON_LLM_MODEL": "qwen2.5",
            }
        )
    )
    assert settings.port == 6000
    assert settings.pause_grace_ms == 250
    assert settings.chromium_path == "/usr/bin/chromium"
    assert settings.llm.configured
    assert not AutomationSettings.from_env(
        Env(
            {
                "BATON_INTERNAL_TOKEN": INTERNAL_TOKEN.value,
            }
        )
    ).llm.configured
    with pytest.raises(ConfigError):
        AutomationSettings.from_env(
            Env({"BATON_INTERNAL_TOKEN": INTERNAL_TOKEN.value, "BATON_ACTION_TIMEOUT_MS": "0"})
        )


@pytest.mark.parametrize(
    "url", ["file:///etc/passwd", "chrome://settings", "javascript:1", "http:x"]
)
def test_the_agent_opens_only_web_urls(url: str) -> None:
    with pytest.raises(UnsafeUrl):
        check_navigable(url)


def test_web_urls_are_fine() -> None:
    assert check_navigable("https://example.org/a?b") == "https://example.org/a?b"
    assert check_navigable("about:blank") == "about:blank"
