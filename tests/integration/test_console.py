"""The memory console (/ui) in headless Chromium against a real ``mnemo up`` (embedded Redis, Qdrant
Edge, the bundled embedder, raw-mode memory) whose model is the scripted upstream: an operator
finds what a chat remembered, searches it, corrects it, looks at the past, traces a request,
pages through activity and erases a user; a tenant key reaches only its tenant; memory texts
holding markup stay text. Screenshots of each page go to tests/artifacts/console/."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import openai
import pytest
import yaml

from tests.conftest import wait_until
from tests.support.browser import TIMEZONE, Browser
from tests.support.probes import new_user
from tests.support.process import MnemoProcess
from tests.support.servers import ServerThread
from tests.support.upstream import ScriptedUpstream

ACME_KEY, GLOBEX_KEY, ADMIN_KEY = "acme-key-0123456789abcdef", "globex-key-0123456789abcdef", "admin-key-0123456789abc"
AUTH = {
    "admin_keys": [ADMIN_KEY],
    "tenants": [{"id": "acme", "keys": [ACME_KEY]}, {"id": "globex", "keys": [GLOBEX_KEY]}],
}

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def mnemo(
    tmp_path_factory: pytest.TempPathFactory, upstream_server: tuple[ScriptedUpstream, ServerThread]
) -> Iterator[MnemoProcess]:
    process = MnemoProcess(tmp_path_factory.mktemp("console"), upstream_server[1].url + "/v1")
    config = yaml.safe_load(process.config.read_text())
    # Every memory of the user is injected, however slow retrieval is on a loaded machine.
    config |= {"auth": AUTH, "memory": {"retrieval_timeout_ms": 5000, "score_threshold": -1.0}}
    process.config.write_text(yaml.safe_dump(config))
    process.start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    started = Browser()
    yield started
    started.quit()


class Console:
    """The console of one Mnemo in the browser, as an operator uses it."""

    def __init__(self, browser: Browser, origin: str) -> None:
        self.browser = browser
        self.driver = browser.driver
        self.origin = origin

    def rendered(self) -> str:
        return str(self.driver.execute_script("return document.getElementById('main').dataset.rendered || ''"))

    def after(self, action: Callable[[], Any], view: str | None = None) -> None:
        """Do something that renders a page, and wait until the page it renders is shown."""
        before = self.rendered()
        action()

        def shown(_: Any) -> bool:
            state = self.driver.execute_script(
                "const m = document.getElementById('main');"
                "return [m.dataset.rendered || '', m.dataset.view || '', m.getAttribute('aria-busy')];"
            )
            return bool(state[0] != before and state[2] == "false" and (view is None or state[1] == view))

        self.browser.wait(shown)

    def open(self, route: str, view: str | None = None) -> None:
        """Go to a route as if typed into the address bar (reloading it when the tab is there already)."""
        url = f"{self.origin}/ui{route}"
        self.after(lambda: self.driver.refresh() if self.driver.current_url == url else self.driver.get(url), view)

    def sign_in(self, key: str, tenant: str = "") -> None:
        """A new session in the tab: no key kept, so the console asks for one, and is given this one."""
        self.driver.get(f"{self.origin}/ui")
        self.driver.execute_script("sessionStorage.clear()")
        self.after(self.driver.refresh, "key")
        self.type("#api-key", key)
        self.type("#tenant", tenant)
        self.after(lambda: self.click("form.key button[type=submit]"), "users")

    def find(self, css: str) -> Any:
        from selenium.webdriver.common.by import By

        return self.driver.find_element(By.CSS_SELECTOR, css)

    def all(self, css: str) -> list[Any]:
        from selenium.webdriver.common.by import By

        return list(self.driver.find_elements(By.CSS_SELECTOR, css))

    def texts(self, css: str) -> list[str]:
        return [element.text for element in self.all(css)]

    def type(self, css: str, text: str) -> None:
        element = self.find(css)
        element.clear()
        if text:
            element.send_keys(text)

    def click(self, css: str) -> None:
        self.find(css).click()

    def set_moment(self, css: str, moment: datetime) -> None:
        """Set a datetime-local picker to a moment, as the viewer's local wall time (the picker's value)."""
        local = moment.astimezone(ZoneInfo(TIMEZONE)).strftime("%Y-%m-%dT%H:%M:%S")
        self.driver.execute_script("arguments[0].value = arguments[1]", self.find(css), local)

    def shot(self, name: str) -> Path:
        return self.browser.shot(name)


@pytest.fixture
def console(browser: Browser, mnemo: MnemoProcess) -> Console:
    return Console(browser, f"http://127.0.0.1:{mnemo.port}")


@pytest.fixture
def api(mnemo: MnemoProcess) -> Iterator[Callable[[str], httpx.Client]]:
    clients: list[httpx.Client] = []

    def make(key: str) -> httpx.Client:
        clients.append(httpx.Client(base_url=f"http://127.0.0.1:{mnemo.port}/v1", headers={"X-Mnemo-Api-Key": key}))
        return clients[-1]

    yield make
    for made in clients:
        made.close()


def chat(mnemo: MnemoProcess, key: str, user: str, text: str, memory: str = "on") -> str:
    """One chat through the OpenAI SDK, as an app sends it; returns its x-mnemo-request-id."""
    client = openai.OpenAI(
        base_url=mnemo.base_url,
        api_key="sk-client",
        default_headers={"X-Mnemo-Api-Key": key, "X-Mnemo-User-Id": user, "X-Mnemo-Memory": memory},
        max_retries=0,
    )
    raw = client.chat.completions.with_raw_response.create(
        model="any-model", messages=[{"role": "user", "content": text}]
    )
    return str(raw.headers["x-mnemo-request-id"])


def memories(api: httpx.Client, user: str, **params: Any) -> list[dict[str, Any]]:
    response = api.get("/memories", params={"user_id": user, **params})
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()["data"]
    return found


def remembered(api: httpx.Client, user: str, text: str) -> dict[str, Any]:
    """Wait for the worker to store a memory of the chat; return it."""
    found: dict[str, Any] = wait_until(lambda: next((m for m in memories(api, user) if m["text"] == text), None))
    return found


def add_facts(api: httpx.Client, user: str, facts: list[str], **extra: Any) -> list[dict[str, Any]]:
    response = api.post("/memories", json={"user_id": user, "facts": facts, **extra})
    assert response.status_code == 201, response.text
    added: list[dict[str, Any]] = response.json()["data"]
    return added


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text)


def test_an_operator_finds_searches_corrects_and_traces_what_a_chat_remembered(
    console: Console, mnemo: MnemoProcess, api: Callable[[str], httpx.Client]
) -> None:
    user = new_user("alice")
    told = chat(mnemo, ACME_KEY, user, "I live in Austin")
    original = remembered(api(ACME_KEY), user, "I live in Austin")
    asked = chat(mnemo, ACME_KEY, user, "Where do I live?", memory="read")  # given the memory, stores nothing

    console.sign_in(ACME_KEY)
    console.type("input[name=prefix]", user[:9])
    console.after(lambda: console.click("form[role=search] button[type=submit]"), "users")
    row = console.find(f'tr[data-user="{user}"]')
    assert row.find_element("css selector", "td.number").text == "1"  # one current memory
    console.shot("users")

    console.after(lambda: row.find_element("css selector", "a").click(), "user")
    assert console.texts("#memories td.text") == ["I live in Austin"]
    assert console.find("#user-counts").text.startswith("1 current memory")
    created = console.find(f'tr[data-memory="{original["id"]}"] time')
    assert created.get_attribute("title") == utc(original["created_at"]).strftime("%Y-%m-%d %H:%M:%S UTC")
    local = utc(original["created_at"]).astimezone(ZoneInfo(TIMEZONE))
    assert f"{local.hour % 12 or 12}:{local:%M:%S}" in created.text  # the viewer's time, not UTC
    console.type("#memory-search", "Which city is home?")
    console.after(lambda: console.click("form[aria-label='Search memories'] button[type=submit]"), "user")
    (hit,) = console.all("#search-results tbody tr")
    assert hit.find_element("css selector", "td.text").text == "I live in Austin"
    assert re.fullmatch(r"-?\d\.\d{3}", hit.find_element("css selector", "td.score").text)
    console.shot("user")

    # A correction made at least a second after the memory, so a picker with one-second steps has a
    # moment between the two to show the past with.
    stored_at = utc(original["created_at"])
    before_correction = datetime.fromtimestamp(math.ceil(stored_at.timestamp()), stored_at.tzinfo)
    wait_until(lambda: datetime.now(stored_at.tzinfo) > before_correction + timedelta(seconds=1))
    console.after(lambda: console.find(f'tr[data-memory="{original["id"]}"] td.text a').click(), "memory")
    console.type("#correct-text", "I live in Denver")
    console.type("#correct-reason", "moved in March")
    console.after(lambda: console.click("form.correct button[type=submit]"), "memory")
    assert console.find("#memory-text").text == "I live in Denver"
    assert [v.split(" ")[0] for v in console.texts("#versions li")] == ["v1", "v2"]
    update = console.find("#timeline li[data-action=UPDATE]")
    assert "I live in Austin → I live in Denver" in update.text and "moved in March" in update.text
    console.shot("memory")

    console.open(f"#/users/{user}", "user")
    assert console.texts("#memories td.text") == ["I live in Denver"]
    console.set_moment("#as-of", before_correction)
    console.after(lambda: console.click("form.filters button[type=submit]"), "user")
    assert console.texts("#memories td.text") == ["I live in Austin"]
    assert "believed as of" in console.find("#memories caption").text
    console.shot("as-of")

    console.after(lambda: console.click("nav a[data-nav=requests]"), "request")
    console.type("#request-id", told)
    console.after(lambda: console.click("form[role=search] button[type=submit]"), "request")
    assert [t.split(" v")[0] for t in console.texts("#created li")] == ["I live in Austin"]
    console.type("#request-id", asked)
    console.after(lambda: console.click("form[role=search] button[type=submit]"), "request")
    assert [t.split(" v")[0] for t in console.texts("#injected li")] == ["I live in Austin"]
    console.shot("request")

    console.open(f"#/users/{user}/activity", "activity")
    actions = console.texts("#activity tbody tr td:nth-child(2)")
    assert actions[0] == "UPDATE" and "ADD" in actions
    console.shot("activity")


def test_erasing_a_user_takes_a_typed_confirmation_shows_the_counts_and_leaves_nothing(
    console: Console, mnemo: MnemoProcess, api: Callable[[str], httpx.Client]
) -> None:
    user = new_user("erin")
    chat(mnemo, ACME_KEY, user, "I have a cat")
    remembered(api(ACME_KEY), user, "I have a cat")

    console.sign_in(ACME_KEY)
    console.open(f"#/users/{user}", "user")
    console.click("#erase-user")
    ok = console.find("#confirm-ok")
    assert "1 memory (every version), 1 event" in console.find("#confirm-body").text and not ok.is_enabled()
    console.type("#confirm-typed", user[:-1])
    assert not ok.is_enabled()
    console.type("#confirm-typed", user)
    console.shot("erase-confirm")
    console.after(ok.click, "erased")

    counts = {dd.get_attribute("data-count"): dd.text for dd in console.all("#erased-counts dd")}
    assert counts["memories"] == "1" and int(counts["events"]) >= 1
    console.shot("erased")
    console.open(f"#/users?prefix={user}", "users")
    assert console.all(f'tr[data-user="{user}"]') == [] and "No user id starts with" in console.find("main").text
    console.open(f"#/users/{user}", "user")
    assert console.find("#not-found").is_displayed()
    assert memories(api(ACME_KEY), user, include_invalidated="true") == []


def test_a_tenant_key_can_neither_find_nor_open_another_tenants_user(
    console: Console, api: Callable[[str], httpx.Client]
) -> None:
    user = new_user("gus")
    (theirs,) = add_facts(api(GLOBEX_KEY), user, ["I sail on weekends"])

    console.sign_in(ADMIN_KEY, tenant="globex")  # the user is there, for the one who may see it
    console.open(f"#/users?prefix={user}", "users")
    assert console.all(f'tr[data-user="{user}"]')

    console.sign_in(ACME_KEY)
    console.open(f"#/users?prefix={user}", "users")
    assert console.all(f'tr[data-user="{user}"]') == []
    for route, view in (
        (f"#/users/{user}", "user"),
        (f"#/users/{user}/activity", "activity"),
        (f"#/memories/{theirs['id']}", "memory"),
    ):
        console.open(route, view)  # typed into the address bar
        assert console.find("#not-found").is_displayed(), route
        assert "I sail" not in console.find("main").text
    console.shot("other-tenant")


MARKUP = [
    "<script>window.__pwned = 1</script>",
    '<img src="http://198.51.100.7/x.png" onerror="window.__pwned = 2">',
    "[tap here](javascript:window.__pwned=3)",
    '<a href="javascript:window.__pwned=4">open</a><svg onload="window.__pwned=5"></svg>',
]


def test_memory_texts_holding_markup_are_shown_as_text_and_nothing_runs_or_leaves(
    console: Console, browser: Browser, api: Callable[[str], httpx.Client]
) -> None:
    user = new_user("mallory")
    acme = api(ACME_KEY)
    added = add_facts(acme, user, MARKUP, metadata={"note": '<iframe src="http://198.51.100.7/"></iframe>'})
    first = added[0]["id"]
    corrected = acme.patch(f"/memories/{first}", json={"text": MARKUP[1], "reason": "<b onmouseover=alert(1)>x</b>"})
    assert corrected.status_code == 200

    console.sign_in(ACME_KEY)
    browser.collect()
    browser.requests.clear()
    browser.console.clear()
    console.open(f"#/users/{user}?q=script", "user")
    assert sorted(set(console.texts("#memories td.text"))) == sorted(set(MARKUP[1:]))
    assert set(console.texts("#search-results td.text")) <= set(MARKUP)  # found, and shown as typed
    console.shot("markup")
    console.open(f"#/memories/{corrected.json()['id']}", "memory")
    assert console.find("#memory-text").text == MARKUP[1]
    assert "<b onmouseover=alert(1)>x</b>" in console.find("#timeline").text
    console.open(f"#/memories/{added[3]['id']}", "memory")
    assert "<iframe" in console.find(".metadata").text
    console.open(f"#/users/{user}/activity", "activity")
    assert MARKUP[0] in console.find("#activity").text

    browser.collect()
    origin = console.origin + "/"
    assert console.driver.execute_script("return window.__pwned") is None
    planted = "main script, main img, main svg, main iframe, a[href^=javascript]"
    assert console.driver.execute_script(f"return document.querySelectorAll('{planted}').length") == 0
    # data: URLs never leave the browser (Chromium draws its date picker's icon with one).
    assert [url for url in browser.requests if not url.startswith((origin, "data:"))] == []
    assert any(url.startswith(origin + "v1/") for url in browser.requests)  # the log does see the page's calls
    assert [line for line in browser.console if "Content Security Policy" in line] == []  # nothing even tried


def test_the_activity_feed_pages_through_a_users_events(console: Console, api: Callable[[str], httpx.Client]) -> None:
    user = new_user("pat")
    add_facts(api(ACME_KEY), user, [f"I own book number {n}" for n in range(25)])

    console.sign_in(ACME_KEY)
    console.open(f"#/users/{user}/activity", "activity")
    assert len(console.all("#activity tbody tr")) == 20
    console.after(lambda: console.click("nav.pager a:last-child"), "activity")
    assert len(console.all("#activity tbody tr")) == 5
    assert console.find("nav.pager span:last-child").text == "Next →"  # no further page
    console.after(lambda: console.click("nav.pager a"), "activity")
    assert len(console.all("#activity tbody tr")) == 20


def test_filters_narrow_a_users_memories_by_agent_session_metadata_and_validity(
    console: Console, api: Callable[[str], httpx.Client]
) -> None:
    user = new_user("flo")
    acme = api(ACME_KEY)
    add_facts(acme, user, ["I like green tea"], agent_id="barista", session_id="morning", metadata={"topic": "drinks"})
    add_facts(acme, user, ["I like jazz"], agent_id="dj", metadata={"topic": "music"})
    (dropped,) = add_facts(acme, user, ["I like disco"], agent_id="dj")
    assert acme.delete(f"/memories/{dropped['id']}").status_code == 200

    console.sign_in(ACME_KEY)
    console.open(f"#/users/{user}", "user")
    assert sorted(console.texts("#memories td.text")) == ["I like green tea", "I like jazz"]
    for selector, value, expected in (
        ("input[name=agent_id]", "dj", ["I like jazz"]),
        ("input[name=session_id]", "morning", ["I like green tea"]),
        ("textarea[name=meta]", "topic=music", ["I like jazz"]),
    ):
        console.open(f"#/users/{user}", "user")
        if not console.find("form.filters details").get_attribute("open"):
            console.click("form.filters summary")
        console.type(selector, value)
        console.after(lambda: console.click("form.filters button[type=submit]"), "user")
        assert console.texts("#memories td.text") == expected, selector
    console.open(f"#/users/{user}", "user")
    console.click("#include-invalidated")
    console.after(lambda: console.click("form.filters button[type=submit]"), "user")
    assert sorted(console.texts("#memories td.text")) == ["I like disco", "I like green tea", "I like jazz"]
    assert console.find(f'tr[data-memory="{dropped["id"]}"]').get_attribute("class") == "invalid"


def test_a_memory_is_invalidated_or_its_chain_erased_from_its_page_after_a_confirmation(
    console: Console, api: Callable[[str], httpx.Client]
) -> None:
    user = new_user("ivy")
    acme = api(ACME_KEY)
    kept, erased = add_facts(acme, user, ["I drive a van", "My password hint is blue"])
    newer = acme.patch(f"/memories/{erased['id']}", json={"text": "My password hint is green"}).json()

    console.sign_in(ACME_KEY)
    console.open(f"#/memories/{kept['id']}", "memory")
    console.click("#invalidate")
    console.click("#confirm-ok")
    console.browser.wait(lambda _: console.all("#timeline li[data-action=DELETE]"))
    assert "invalidated" in console.find("dl.details").text

    console.open(f"#/memories/{newer['id']}", "memory")
    console.click("#erase-chain")
    assert console.texts("#erase-list li") == ["v1: My password hint is blue", "v2: My password hint is green"]
    console.after(lambda: console.click("#confirm-ok"), "user")
    assert console.texts("#memories td.text") == []
    assert [m["text"] for m in memories(acme, user, include_invalidated="true")] == ["I drive a van"]
