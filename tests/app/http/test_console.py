"""/console/: the console's files, served with a strict Content-Security-Policy."""

import re

import pytest

from app.http.console import STATIC


def get(client, path):
    """GET ``path``, its file closed (a served file is read lazily)."""
    resp = client.get(path)
    resp.close()
    return resp


def test_the_page_and_its_files_carry_the_security_headers(client):
    for path in ("/console/", "/console/js/app.js", "/console/console.css"):
        resp = get(client, path)
        assert resp.status_code == 200, path
        csp = resp.headers["Content-Security-Policy"]
        assert "default-src 'self'" in csp and "script-src 'self'" in csp
        assert "style-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert "base-uri 'none'" in csp and "unsafe" not in csp
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        assert resp.headers["Referrer-Policy"] == "no-referrer"
    assert get(client, "/console/").mimetype == "text/html"
    assert get(client, "/console/js/app.js").mimetype in (
        "text/javascript",
        "application/javascript",
    )
    assert get(client, "/console/console.css").mimetype == "text/css"


def test_console_without_a_slash_redirects(client):
    resp = get(client, "/console")
    assert resp.status_code == 308 and resp.headers["Location"].endswith("/console/")


@pytest.mark.parametrize(
    "path", ["/console/nope.js", "/console/../app/http/console/__init__.py", "/console/%2e%2e/x"]
)
def test_missing_files_and_paths_outside_are_404(client, path):
    resp = get(client, path)
    assert resp.status_code == 404
    assert resp.headers["Content-Security-Policy"]


def test_only_get_is_served(client):
    assert client.post("/console/").status_code == 405


def test_no_file_of_the_console_parses_html_from_strings_or_sets_inline_styles():
    """Every value goes on the page as text; nothing is evaluated; CSP needs no exceptions."""
    own = [p for p in STATIC.rglob("*") if p.suffix in (".js", ".html") and "vendor" not in p.parts]
    assert own
    forbidden = re.compile(
        r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|eval\(|new Function|"
        r"setAttribute\(\s*[\"']style|\.style\.|<style|\bstyle=|\son[a-z]+=\""
    )
    for path in own:
        text = path.read_text()
        assert not forbidden.search(text), (path, forbidden.search(text))
    assert "<script>" not in (STATIC / "index.html").read_text()
