"""The console's files as served at /ui: every file the page loads is Mnemo's own, under a
Content-Security-Policy allowing nothing else, and no script parses data as HTML."""

from __future__ import annotations

import re
from pathlib import Path

from starlette.applications import Starlette
from starlette.testclient import TestClient

from gateway.ui.routes import console_routes

STATIC = Path(__file__).resolve().parents[2] / "gateway" / "ui" / "static"
# Anything that would turn text into markup or code: the console builds the DOM from text nodes only.
HTML_SINKS = re.compile(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|\beval\(|new Function|\bsrcdoc\b")


def client(prefix: str = "/v1") -> TestClient:
    return TestClient(Starlette(routes=console_routes(prefix)))


def loaded_files(page: str) -> set[str]:
    """The files the page loads, and every module those import, by name under /ui/."""
    found = set(re.findall(r'(?:src|href)="/ui/([^"]+)"', page))
    pending = [name for name in found if name.endswith(".js")]
    while pending:
        script = (STATIC / pending.pop()).read_text()
        for name in re.findall(r'from "\./([^"]+)"', script):
            if name not in found:
                found.add(name)
                pending.append(name)
    return found


def test_the_page_and_every_file_it_loads_are_served_with_a_policy_that_allows_only_this_origin() -> None:
    with client() as http:
        page = http.get("/ui")
        files = {name: http.get(f"/ui/{name}") for name in loaded_files(page.text)}

    modules = {"console.js", "api.js", "dom.js", "shell.js", "pages.js", "record.js"}
    assert modules | {"console.css", "icon.svg"} <= set(files)
    for response in (page, *files.values()):
        assert response.status_code == 200
        policy = response.headers["content-security-policy"]
        assert "default-src 'none'" in policy and "script-src 'self'" in policy and "connect-src 'self'" in policy
        assert response.headers["x-content-type-options"] == "nosniff"
    assert files["console.js"].headers["content-type"].startswith("text/javascript")
    assert files["console.css"].headers["content-type"].startswith("text/css")


def test_no_file_names_another_origin_or_parses_data_as_html() -> None:
    for path in STATIC.iterdir():
        text = path.read_text()
        if path.suffix == ".svg":
            text = text.replace('xmlns="http://www.w3.org/2000/svg"', "")  # a namespace name, never fetched
        assert not re.search(r"https?://|//[a-z0-9.-]+\.[a-z]{2,}/", text), path.name
        if path.suffix == ".js":
            assert not HTML_SINKS.search(text), path.name
        if path.suffix == ".html":
            assert "<script>" not in text and " style=" not in text, path.name  # nothing inline for the CSP to refuse


def test_the_page_calls_the_memory_api_where_it_is_configured() -> None:
    with client("/mnemo/v1") as http:
        page = http.get("/ui").text

    assert '<meta name="mnemo-memory-api" content="/mnemo/v1">' in page


def test_only_the_console_files_are_served() -> None:
    with client() as http:
        assert http.get("/ui/routes.py").status_code == 404
        assert http.get("/ui/nothing.js").status_code == 404
        assert http.get("/ui/", follow_redirects=False).headers["location"].endswith("/ui")
