"""Driving the memory console in headless Chromium (Debian's ``chromium`` and ``chromium-driver``,
installed by ``scripts/setup --dev``) through Selenium: pages, screenshots, and every request the
page sent and every message it logged, to prove none went elsewhere."""

from __future__ import annotations

import base64
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts" / "console"
# The viewer's time zone: not UTC, so a time shown in UTC by mistake would not pass for local.
TIMEZONE = "America/Chicago"
WAIT_S = 20.0
MAX_SHOT_HEIGHT = 2400


def chromium_paths() -> tuple[str, str]:
    """Chromium and its driver, or a skip saying how to get them (only where they cannot be installed)."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if browser is None or driver is None:
        pytest.skip(
            "the console's browser tests need Debian's chromium and chromium-driver packages: "
            "scripts/setup --dev installs them when run as root with apt (apt-get install chromium chromium-driver)"
        )
    return browser, driver


class Browser:
    """One headless Chromium for a test module (a laptop-sized window, en-US, in TIMEZONE)."""

    def __init__(self) -> None:
        webdriver = pytest.importorskip(
            "selenium.webdriver", reason="selenium is in the dev extra (scripts/setup --dev)"
        )
        from selenium.webdriver.chrome.service import Service

        browser, driver = chromium_paths()
        options = webdriver.ChromeOptions()
        options.binary_location = browser
        for argument in (
            "--headless=new",
            "--no-sandbox",  # CI runs as root
            "--disable-dev-shm-usage",
            "--window-size=1366,900",
            "--lang=en-US",
            "--no-first-run",
            "--disable-background-networking",  # no update checks or field trials: only the page's own requests
            "--disable-component-update",
            "--disable-sync",
        ):
            options.add_argument(argument)
        options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
        self.driver: Any = webdriver.Chrome(service=Service(driver), options=options)
        self.driver.execute_cdp_cmd("Emulation.setTimezoneOverride", {"timezoneId": TIMEZONE})
        self.requests: list[str] = []  # every URL the browser asked for, in order
        self.console: list[str] = []  # every message the pages logged (CSP refusals among them)

    def quit(self) -> None:
        self.driver.quit()

    def collect(self) -> None:
        for entry in self.driver.get_log("performance"):
            message = json.loads(entry["message"])["message"]
            if message["method"] == "Network.requestWillBeSent":
                self.requests.append(message["params"]["request"]["url"])
        self.console += [entry["message"] for entry in self.driver.get_log("browser")]

    def wait(self, condition: Callable[[Any], Any], timeout: float = WAIT_S) -> Any:
        from selenium.webdriver.support.ui import WebDriverWait

        return WebDriverWait(self.driver, timeout).until(condition)

    def shot(self, name: str) -> Path:
        """The whole page (up to MAX_SHOT_HEIGHT), not just the window, as tests/artifacts/console/<name>.png."""
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        target = ARTIFACTS / f"{name}.png"
        size = self.driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
        clip = {"x": 0, "y": 0, "width": size["width"], "height": min(size["height"], MAX_SHOT_HEIGHT), "scale": 1}
        shot = self.driver.execute_cdp_cmd(
            "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": clip}
        )
        target.write_bytes(base64.b64decode(shot["data"]))
        return target
