"""The web console at /console/ in a real browser (Debian's Chromium driven by Playwright),
against a running `postern serve` with the loopback DNS and an aiosmtpd MX peer.

A user logs in; adds a domain, whose records the test publishes in the loopback DNS, and
verifies it from the page; creates a sender key (shown once) and sends with it over HTTP;
finds the message delivered in the event log and on its timeline; sees it in the chart;
adds and removes a suppression. An administrator then suspends and re-enables that user
(when the server has the Admin.* commands). Every page is screenshotted into
tests/artifacts/console/, and no page may log a console error or a CSP violation.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import httpx
import pytest

from tests import httpreceiver, smtppeer
from tests.conftest import SECRET_KEY
from tests.livesrv import clean_env, running, wait_until

playwright_sync = pytest.importorskip("playwright.sync_api")

smtp_peer = smtppeer.smtp_peer
http_receiver = httpreceiver.http_receiver

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts" / "console"
BUYER = "buyer@dest.example"
HOSTILE = '<img src=x onerror="document.title=1"> asked by phone'
#: What Chromium logs for a command the server does not have (HTTP 400, ErrorCode 100003).
UNKNOWN_COMMAND_LOG = "the server responded with a status of 400"

#: The controls of the page with no accessible name (no label, aria-label or text).
UNLABELLED = """
[...document.querySelectorAll("input, select, textarea, button, a[href]")]
  .filter((el) => !(el.labels && el.labels.length) && !el.getAttribute("aria-label")
    && !el.textContent.trim())
  .map((el) => el.outerHTML)
"""

# .ci/run installs chromium and sets POSTERN_TEST_REQUIRE_CHROMIUM: there it must run.
if not CHROMIUM.exists() and os.environ.get("POSTERN_TEST_REQUIRE_CHROMIUM"):
    raise RuntimeError(f"POSTERN_TEST_REQUIRE_CHROMIUM is set and {CHROMIUM} is missing")
pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium package")


def expect(locator, timeout=15_000):
    playwright_sync.expect(locator).to_be_visible(timeout=timeout)


class Console:
    """One browser page on the console, its errors collected and its screenshots saved."""

    def __init__(self, page, base: str, shots: Path):
        self.page, self.base, self.shots = page, base, shots
        self.errors: list[str] = []
        self.allowed: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda exc: self.errors.append(f"pageerror: {exc}"))

    def _console(self, message) -> None:
        if message.type == "error" and not any(a in message.text for a in self.allowed):
            self.errors.append(f"{self.page.url}: {message.text}")

    def go(self, route: str, title: str):
        url = f"{self.base}/console/#/{route}"
        if self.page.url == url:  # the same hash again changes nothing: load it afresh
            self.page.reload()
        else:
            self.page.goto(url)
        expect(self.page.get_by_role("heading", level=1, name=title))
        # The page is drawn once its commands have answered: main loses aria-busy.
        self.page.wait_for_selector("main:not([aria-busy])", state="attached")
        unlabelled = self.page.evaluate(UNLABELLED)
        assert unlabelled == [], (route, unlabelled)
        return self.page

    def shot(self, name: str) -> None:
        # A toast ("… copied") hides after 3 s: the picture shows the page without it.
        playwright_sync.expect(self.page.locator("#toast")).to_be_hidden(timeout=5_000)
        self.page.screenshot(path=str(self.shots / f"{name}.png"), full_page=True)

    def login(self, username: str, password: str) -> None:
        page = self.page
        page.goto(f"{self.base}/console/")
        page.get_by_label("Username").fill(username)
        page.get_by_label("Password").fill(password)
        page.get_by_role("button", name="Log in").click()
        expect(page.get_by_role("heading", level=1, name="Sender domains"))


def test_the_console_in_a_browser(
    tmp_path, database, base_config, dns_server, smtp_peer, http_receiver, make_user
):
    alice = make_user("alice", "correct horse battery")
    root = make_user("root", "staple battery horse", is_admin=True)
    env = clean_env(
        POSTERN_DATABASE_URL=base_config.database.url,
        POSTERN_SECURITY_SECRET_KEY=SECRET_KEY,
        POSTERN_DNS_NAMESERVERS=dns_server.host,
        POSTERN_DNS_PORT=str(dns_server.port),
        POSTERN_DNS_TIMEOUT="2",
        POSTERN_SMTP_HOSTNAME="mx.postern.test",
        POSTERN_DELIVERY_MX_PORT=str(smtp_peer.port),
        POSTERN_DELIVERY_ALLOW_PRIVATE_MX="true",
        POSTERN_DELIVERY_TIMEOUT="5",
        POSTERN_DELIVERY_BUILD_PROCESSES="1",
        POSTERN_DELIVERY_POLL_INTERVAL="0.1",
        POSTERN_WEBHOOKS_POLL_INTERVAL="0.1",
        POSTERN_WEBHOOKS_ALLOW_PRIVATE="true",
    )
    dialect = base_config.database.url.split(":", 1)[0].split("+", 1)[0]
    shots = ARTIFACTS / dialect
    shots.mkdir(parents=True, exist_ok=True)
    dns_server.add("dest.example", "MX", "10 mx.dest.example")
    dns_server.add("mx.dest.example", "A", "127.0.0.1")

    with (
        running("serve", tmp_path, env) as (base, _log),
        playwright_sync.sync_playwright() as pw,
    ):
        # The console's own answers carry a strict policy.
        index = httpx.get(f"{base}/console/")
        assert index.status_code == 200 and "text/html" in index.headers["content-type"]
        csp = index.headers["content-security-policy"]
        for directive in (
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self'",
            "frame-ancestors 'none'",
            "base-uri 'none'",
        ):
            assert directive in csp
        assert "unsafe" not in csp
        assert index.headers["x-content-type-options"] == "nosniff"
        assert index.headers["referrer-policy"] == "no-referrer"
        script = httpx.get(f"{base}/console/js/app.js")
        assert script.headers["content-type"].split(";")[0] in (
            "text/javascript",
            "application/javascript",
        )
        assert httpx.get(f"{base}/console/../api.php").status_code != 500

        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        context.grant_permissions(["clipboard-read", "clipboard-write"], origin=base)
        ui = Console(context.new_page(), base, shots)
        page = ui.page

        # 1. Logging in: a wrong password is answered on the page, then the right one.
        page.goto(f"{base}/console/")
        expect(page.get_by_role("heading", name="Log in to Postern"))
        ui.shot("01-login")
        page.get_by_label("Username").fill("alice")
        page.get_by_label("Password").fill("wrong password")
        page.get_by_role("button", name="Log in").click()
        expect(page.get_by_text("User.Login:"))
        # With the keyboard alone: Tab from the username to the password, Enter submits.
        page.get_by_label("Username").fill("alice")
        page.keyboard.press("Tab")
        page.keyboard.type(alice.password)
        page.keyboard.press("Enter")
        expect(page.get_by_role("heading", level=1, name="Sender domains"))
        assert page.evaluate("sessionStorage.getItem('postern.session')")
        assert not page.get_by_role("link", name="Users").count()  # not an administrator

        # 2. A domain: added, its records published in the loopback DNS, verified on the page.
        page.get_by_label("Domain name").fill("shop.example")
        page.get_by_role("button", name="Add domain").click()
        expect(page.get_by_role("heading", level=1, name="shop.example"))
        expect(page.get_by_role("table", name="DNS records to publish"))
        domain_id = re.search(r"#/domains/(\d+)", page.url).group(1)
        records = httpx.post(
            f"{base}/api.php",
            json={
                "Command": "EmailGateway.GetDomain",
                "APIKey": alice.api_key,
                "DomainID": domain_id,
            },
        ).json()["Domain"]["DNSRecords"]
        page.get_by_role("button", name="Copy ownership value").click()
        ownership = next(r for r in records if r["Purpose"] == "ownership")
        assert page.evaluate("navigator.clipboard.readText()") == ownership["Value"]
        playwright_sync.expect(page.get_by_role("status").filter(has_text="copied")).to_be_hidden()
        page.get_by_role("button", name="Verify DNS records").click()
        expect(page.get_by_text("✗ Not verified").first)
        for record in records:
            dns_server.add(record["Host"], record["Type"], record["Value"])
        page.get_by_role("button", name="Verify DNS records").click()
        expect(page.get_by_text("Status: Enabled"))
        assert page.get_by_text("✓ Verified").count() == len(records)
        page.get_by_label("Track clicks (rewrite links)").check()
        page.get_by_role("button", name="Save").click()
        expect(page.get_by_text("Saved."))
        ui.shot("02-domain")
        ui.go("domains", "Sender domains")
        ui.shot("03-domains")

        # 3. A sender key, shown once, and a message sent with it over HTTP.
        ui.go("keys", "Sender keys and SMTP credentials")
        page.get_by_label("Description").fill("shop")
        page.get_by_role("button", name="Create key").click()
        secret = page.get_by_role("region", name="New sender key").locator("code")
        expect(secret)
        key = secret.inner_text()
        assert key.startswith("ps_")
        page.get_by_role("button", name="Create credentials").click()
        expect(page.get_by_role("region", name="New SMTP credentials"))
        ui.shot("04-keys")

        # A webhook for deliveries, added on the page; its signing key shown and copied.
        ui.go("webhooks", "Webhooks")
        page.get_by_label("URL").fill(http_receiver.url("/console"))
        page.get_by_role("button", name="Add webhook").click()
        expect(page.get_by_role("cell", name=http_receiver.url("/console"), exact=True))
        page.get_by_role("button", name="Show the signing key").click()
        signing_key = page.get_by_role("region", name="Signing key").locator("code").inner_text()
        assert re.fullmatch(r"[0-9A-F]{64}", signing_key)
        page.get_by_role("button", name="Copy signing key").click()
        assert page.evaluate("navigator.clipboard.readText()") == signing_key
        sent = httpx.post(
            f"{base}/api/v1/email",
            headers={"Authorization": f"Bearer {key}"},
            json={
                "Subject": "Your order",
                "ContentType": "plain",
                "PlainContent": "Thank you.",
                "From": {"email": "orders@shop.example", "name": "Shop"},
                "To": [{"email": BUYER}],
                "Tags": ["order"],
            },
        )
        assert sent.status_code == 200, sent.text
        message_id = sent.json()["MessageID"]
        wait_until(lambda: len(smtp_peer.messages) == 1, timeout=20)

        # 4. The event log shows it delivered; its page shows the recipient's timeline.
        def delivered_listed() -> bool:
            ui.go("events", "Event log")
            return page.get_by_role("cell", name="delivery", exact=True).count() == 1

        wait_until(delivered_listed, timeout=20)
        page.get_by_label("Search").fill(f"to:{BUYER}")
        page.get_by_role("button", name="Search").click()
        expect(page.get_by_text("1–2 of 2"))
        ui.shot("05-events")
        page.get_by_role("link", name=f"Message {message_id}").first.click()
        timeline = page.get_by_role("region", name=f"Timeline of {BUYER}")
        expect(timeline)
        steps = timeline.locator("li strong").all_inner_texts()
        assert steps == ["accepted", "delivery"], steps
        expect(timeline.get_by_text("250"))
        ui.shot("06-message")

        # 5. The statistics: a chart whose series hold the message.
        ui.go("stats", "Statistics")
        chart = page.locator(".chart")
        expect(chart.locator("canvas"))
        totals = json.loads(chart.get_attribute("data-series"))
        assert totals["Sent"] >= 1 and totals["Delivered"] >= 1, totals
        expect(page.get_by_role("cell", name="order", exact=True))
        ui.shot("07-stats")

        # 6. The webhook's delivery log: the POST and its attempt; then a template.
        [posted] = http_receiver.wait_for(1, timeout=20)
        httpreceiver.assert_signed(posted, signing_key)

        def logged() -> bool:
            ui.go("webhooks", "Webhooks")
            return page.get_by_role("cell", name=re.compile("^succeeded")).count() == 1

        wait_until(logged, timeout=20)
        page.get_by_text("1 attempt", exact=True).click()
        expect(page.get_by_text(re.compile(r"HTTP 200 in \d+ ms")))
        ui.shot("08-webhooks")
        ui.go("templates", "Templates")
        page.get_by_label("Name").fill("welcome")
        page.get_by_label("Subject").fill("Hello {{ name }}")
        page.get_by_label("Plain-text part").fill('Hi $$name$$, {{ code|default("none") }}')
        page.get_by_label("HTML part").fill("<p>Hi <b>{{ name }}</b></p>")
        page.get_by_role("button", name="Create template").click()
        expect(page.get_by_role("heading", level=1, name="welcome"))
        page.get_by_role("button", name="Preview").click()
        expect(page.locator(".preview pre").get_by_text("Hi Ann, none"))
        expect(page.locator(".preview .subject").get_by_text("Hello Ann"))
        preview = page.frame_locator("iframe[title='HTML preview']")
        expect(preview.locator("b").get_by_text("Ann"))
        ui.shot("09-template")

        # 7. The suppression list: add, find, remove.
        ui.go("suppression", "Suppression list")
        page.get_by_label("Email address").fill("gone@dest.example")
        page.get_by_label("Reason").fill(HOSTILE)
        page.get_by_role("button", name="Add", exact=True).click()
        expect(page.get_by_role("cell", name="gone@dest.example", exact=True))
        page.get_by_label("Search", exact=True).fill("gone@")
        page.get_by_role("button", name="Search").click()
        expect(page.get_by_text("1–1 of 1"))
        ui.shot("10-suppression")
        # Data is text: the reason shows as typed, and made no element.
        expect(page.get_by_role("cell", name=HOSTILE, exact=True))
        assert page.locator("main img").count() == 0
        page.once("dialog", lambda dialog: dialog.accept())
        page.get_by_role("button", name="Remove gone@dest.example").click()
        expect(page.get_by_text("No suppressed addresses match."))

        ui.go("held", "Held messages")
        expect(page.get_by_text("No held messages in this domain."))

        # 8. Readable at 360 px: nothing wider than the screen.
        page.set_viewport_size({"width": 360, "height": 780})
        for route, title in (
            ("keys", "Sender keys and SMTP credentials"),
            ("webhooks", "Webhooks"),
            ("stats", "Statistics"),
            ("suppression", "Suppression list"),
            ("events", "Event log"),
            ("domains", "Sender domains"),
        ):
            ui.go(route, title)
            width = page.evaluate("document.documentElement.scrollWidth")
            assert width <= 360, (route, width)
            ui.shot(f"11-narrow-{route}")
        page.set_viewport_size({"width": 1280, "height": 900})

        # 9. An administrator: the admin pages, and (with Admin.*) suspending a user.
        page.get_by_role("button", name="Log out").click()
        expect(page.get_by_role("heading", name="Log in to Postern"))
        assert page.evaluate("sessionStorage.getItem('postern.session')") is None
        # A session the server no longer knows (99998) leads back to the login page.
        page.evaluate(
            "sessionStorage.setItem('postern.session', 'ended');"
            "sessionStorage.setItem('postern.user', JSON.stringify({Username: 'alice'}))"
        )
        page.goto(f"{base}/console/#/events")
        expect(page.get_by_role("heading", name="Log in to Postern"))
        assert page.evaluate("sessionStorage.getItem('postern.session')") is None
        has_admin = httpx.post(
            f"{base}/api.php", json={"Command": "Admin.Queue", "APIKey": root.api_key}
        ).json()
        if has_admin.get("ErrorCode") == 100003:
            ui.allowed.append(UNKNOWN_COMMAND_LOG)  # Chromium logs the 400 of each such call
        ui.login("root", root.password)
        ui.go("admin/users", "Users")
        if has_admin.get("ErrorCode") == 100003:
            expect(page.get_by_text("This server does not have Admin.Users.List"))
            ui.go("admin/domains", "All domains")
            expect(page.get_by_text("This server does not have Admin.Domains.List"))
            ui.go("admin/queue", "Queue")
            expect(page.get_by_text("This server does not have Admin.Queue"))
            ui.shot("12-admin-unavailable")
        else:
            row = page.get_by_role("row").filter(has_text="alice")
            row.get_by_text("Edit alice").click()
            row.get_by_label("Status").select_option("Suspended")
            row.get_by_role("button", name="Apply").click()
            expect(
                page.get_by_role("row")
                .filter(has_text="alice")
                .locator("td[data-label=Status]")
                .get_by_text("Suspended", exact=True)
            )
            ui.shot("12-admin-users")
            refused = httpx.post(
                f"{base}/api/v1/email",
                headers={"Authorization": f"Bearer {key}"},
                json={
                    "Subject": "Again",
                    "ContentType": "plain",
                    "PlainContent": "x",
                    "From": "orders@shop.example",
                    "To": [BUYER],
                },
            )
            assert refused.status_code != 200, refused.text
            row = page.get_by_role("row").filter(has_text="alice")
            row.get_by_text("Edit alice").click()
            row.get_by_label("Status").select_option("Enabled")
            row.get_by_role("button", name="Apply").click()
            expect(
                page.get_by_role("row")
                .filter(has_text="alice")
                .locator("td[data-label=Status]")
                .get_by_text("Enabled", exact=True)
            )
            ui.go("admin/domains", "All domains")
            expect(page.get_by_role("cell", name="shop.example", exact=True))
            page.once("dialog", lambda dialog: dialog.accept())
            page.get_by_role("button", name="Suspend shop.example").click()
            expect(page.get_by_role("button", name="Enable shop.example"))
            expect(page.get_by_role("cell", name="Enabled · suspended"))
            ui.shot("13-admin-domains")
            page.get_by_role("button", name="Enable shop.example").click()
            expect(page.get_by_role("button", name="Suspend shop.example"))
            ui.go("admin/queue", "Queue")
            expect(page.get_by_role("heading", name="Totals"))
            ui.shot("14-admin-queue")

        browser.close()
    assert ui.errors == [], ui.errors
