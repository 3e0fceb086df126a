"""Tracking routes end to end: clicks, opens and unsubscribes through a running `postern api`
process on loopback."""

import base64
import email
import email.policy
import json
import re

import dkim
import httpx
import pytest
from sqlalchemy import delete, select

from core.crypto import SecretBox
from models import Event, Message, Suppression
from mta.tracking import CLICK, OPEN, sign, verify
from tests.app.workers import test_delivery as delivery_tests
from tests.conftest import SECRET_KEY
from tests.dnsserver import dns_txt
from tests.livesrv import clean_env, running
from tests.mta.test_tracking import click_targets, hrefs

smtp_peer = delivery_tests.smtp_peer
mx = delivery_tests.mx
worker_for = delivery_tests.worker_for
domain = delivery_tests.domain
send = delivery_tests.send
deliveries = delivery_tests.deliveries

KEY = SecretBox(SECRET_KEY.encode()).tracking_key

# -- end to end ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def live(tmp_path_factory, database, base_config):
    """A running `postern api` on the test database: the tracking URLs point at it."""
    env = clean_env(
        POSTERN_DATABASE_URL=base_config.database.url, POSTERN_SECURITY_SECRET_KEY=SECRET_KEY
    )
    with running("api", tmp_path_factory.mktemp("live"), env) as (base, _log):
        yield base


@pytest.fixture
def tracked_domain(api, domain):
    """The test domain, with the tracking settings given (LinkTracking=1, ...)."""

    def configure(**flags):
        body = api("EmailGateway.UpdateDomain", APIKey=domain.user_key, DomainID=domain.id, **flags)
        assert body["Success"] is True, body
        return domain

    return configure


@pytest.fixture
def deliver(send, mx, worker_for, live):
    """Send through the API, let a worker deliver it; the received messages, by recipient."""

    def do(**fields):
        message_id = send(**fields)
        worker = worker_for(mx, tracking__base_url=live)
        try:
            worker.run_once()
        finally:
            worker.close()
        received = {m.rcpt_tos[0]: m.data for m in mx.messages}
        mx.messages.clear()
        return message_id, received

    return do


def parsed(data: bytes):
    return email.message_from_bytes(data, policy=email.policy.default)


def events_of(database, message_id, kind):
    with database.transaction(readonly=True) as s:
        rows = s.scalars(
            select(Event)
            .where(Event.message_id == message_id, Event.type == kind)
            .order_by(Event.id)
        ).all()
        return [(e.delivery_id, e.recipient, json.loads(e.details)) for e in rows]


HTML = (
    "<html><body><p>Hello <a href='https://example.com/x?a=1&amp;b=2'>there</a>, "
    '<a href="https://example.com/keep" data-postern-notrack>keep</a>.</p></body></html>'
)


def test_a_click_through_the_running_server_redirects_and_is_recorded(
    tracked_domain, deliver, live, database, dns_server
):
    tracked_domain(LinkTracking=1)
    message_id, received = deliver(HtmlContent=HTML, PlainContent="Plain https://example.com/p.")
    data = received["rcpt@dest.example"]
    assert dkim.verify(data, dnsfunc=dns_txt(dns_server))
    msg = parsed(data)
    links = hrefs(msg.get_body(("html",)).get_content())
    assert links[0].startswith(f"{live}/t/c/") and links[1] == "https://example.com/keep"
    assert "notrack" not in data.decode()
    plain = msg.get_body(("plain",)).get_content()
    assert click_targets(plain) == ["https://example.com/p"] and "/t/o/" not in data.decode()
    assert msg["List-Unsubscribe"] is None

    resp = httpx.get(links[0], headers={"User-Agent": "Test Browser/1.0"})
    assert resp.status_code == 302
    assert resp.headers["Location"] == "https://example.com/x?a=1&b=2"
    assert "no-store" in resp.headers["Cache-Control"]
    [delivery] = deliveries(database, message_id)
    assert events_of(database, message_id, "clicked") == [
        (
            delivery.id,
            "rcpt@dest.example",
            {
                "url": "https://example.com/x?a=1&b=2",
                "ip": "127.0.0.1",
                "user_agent": "Test Browser/1.0",
            },
        )
    ]
    # A HEAD (link scanners) redirects too, but is no click.
    assert httpx.head(links[0]).status_code == 302
    assert len(events_of(database, message_id, "clicked")) == 1


def test_the_pixel_records_an_open(tracked_domain, deliver, live, database, dns_server):
    tracked_domain(OpenTracking=1)
    message_id, received = deliver(HtmlContent=HTML)
    data = received["rcpt@dest.example"]
    assert dkim.verify(data, dnsfunc=dns_txt(dns_server))
    body = parsed(data).get_body(("html",)).get_content()
    assert "/t/c/" not in body  # link tracking is off
    pixel = re.search(r'<img src="([^"]+)"', body).group(1)
    assert pixel.startswith(f"{live}/t/o/") and body.index("<img") < body.index("</body>")
    resp = httpx.get(pixel, headers={"User-Agent": "Mail Client"})
    assert resp.status_code == 200 and resp.headers["Content-Type"] == "image/gif"
    assert resp.content.startswith(b"GIF89a") and len(resp.content) < 100
    assert "no-cache" in resp.headers["Cache-Control"] and resp.headers["Expires"] == "0"
    [(_, _, details)] = events_of(database, message_id, "opened")
    assert details == {"ip": "127.0.0.1", "user_agent": "Mail Client"}


def test_one_click_unsubscribe_suppresses_for_the_domain(
    tracked_domain, deliver, live, database, client, dns_server
):
    domain = tracked_domain(UnsubscribeLink=1)
    message_id, received = deliver(HtmlContent=HTML, PlainContent="Hello")
    data = received["rcpt@dest.example"]
    assert dkim.verify(data, dnsfunc=dns_txt(dns_server))
    msg = parsed(data)
    url = msg["List-Unsubscribe"].strip("<>")
    assert url.startswith(f"{live}/t/u/")
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    signed_headers = re.search(r"h=([^;]+)", msg["DKIM-Signature"]).group(1).replace(" ", "")
    assert {"list-unsubscribe", "list-unsubscribe-post"} <= set(signed_headers.split(":"))
    assert url in hrefs(msg.get_body(("html",)).get_content())  # the footer, not rewritten
    assert msg.get_body(("plain",)).get_content().rstrip().endswith(f"Unsubscribe: {url}")

    for _ in range(2):  # a second one-click POST changes nothing
        resp = httpx.post(url, data={"List-Unsubscribe": "One-Click"})
        assert resp.status_code == 200 and "rcpt@dest.example" in resp.text
    with database.transaction(readonly=True) as s:
        rows = s.scalars(select(Suppression)).all()
        assert [(r.email, r.domain_id, r.source) for r in rows] == [
            ("rcpt@dest.example", domain.id, "unsubscribe")
        ]
    [(_, _, details)] = events_of(database, message_id, "unsubscribed")
    assert details["method"] == "one-click" and details["ip"] == "127.0.0.1"

    again = client.post(
        "/api/v1/email",
        json={
            "Subject": "Again",
            "ContentType": "plain",
            "PlainContent": "Hi",
            "From": {"email": "news@example.com"},
            "To": [{"email": "rcpt@dest.example"}],
        },
        headers={"Authorization": f"Bearer {domain.key}"},
    )
    assert again.status_code == 400 and again.get_json()["Errors"][0]["Code"] == 14


def test_the_unsubscribe_page_asks_before_unsubscribing(tracked_domain, deliver, live, database):
    tracked_domain(UnsubscribeLink=1)
    message_id, received = deliver(HtmlContent=HTML)
    url = parsed(received["rcpt@dest.example"])["List-Unsubscribe"].strip("<>")
    page = httpx.get(url)
    assert page.status_code == 200 and '<form method="post">' in page.text
    assert "rcpt@dest.example" in page.text and "example.com" in page.text
    with database.transaction(readonly=True) as s:
        assert s.scalars(select(Suppression)).all() == []
    confirmed = httpx.post(url, data={"List-Unsubscribe": "Unsubscribe"})
    assert confirmed.status_code == 200 and "Unsubscribed" in confirmed.text
    [(_, _, details)] = events_of(database, message_id, "unsubscribed")
    assert details["method"] == "page"


def test_forged_tokens_get_404_and_no_redirect(tracked_domain, deliver, live, database):
    tracked_domain(LinkTracking=1, OpenTracking=1, UnsubscribeLink=1)
    message_id, received = deliver(HtmlContent=HTML)
    body = parsed(received["rcpt@dest.example"]).get_body(("html",)).get_content()
    click = hrefs(body)[0].rsplit("/", 1)[1]
    packed = base64.urlsafe_b64decode(click + "=" * (-len(click) % 4))
    evil = base64.urlsafe_b64encode(packed[:32] + b"https://evil.example/").rstrip(b"=")
    [delivery] = deliveries(database, message_id)
    forged = [
        f"/t/c/{evil.decode()}",
        f"/t/c/{click[:-3]}",
        f"/t/c/{click}x",
        f"/t/c/{sign(b'not the key' * 4, CLICK, delivery.token, 'https://evil.example/')}",
        f"/t/c/{sign(KEY, OPEN, delivery.token)}",
        f"/t/o/{sign(KEY, CLICK, delivery.token, 'https://example.com/')}.gif",
        f"/t/u/{sign(KEY, OPEN, delivery.token)}",
        "/t/c/nothing",
    ]
    for path in forged:
        for method in ("GET", "POST") if path.startswith("/t/u/") else ("GET",):
            resp = httpx.request(method, live + path)
            assert resp.status_code == 404, path
            assert "Location" not in resp.headers
    with database.transaction(readonly=True) as s:
        assert s.scalars(select(Suppression)).all() == []
        kinds = {e.type for e in s.scalars(select(Event))}
        assert not kinds & {"clicked", "opened", "unsubscribed"}


def test_track_links_false_overrides_the_domain(tracked_domain, deliver):
    tracked_domain(LinkTracking=1)
    _, received = deliver(HtmlContent=HTML, TrackLinks="false", TrackOpens="true")
    body = parsed(received["rcpt@dest.example"]).get_body(("html",)).get_content()
    assert hrefs(body) == ["https://example.com/x?a=1&b=2", "https://example.com/keep"]
    assert "/t/o/" in body  # TrackOpens on, though the domain's open tracking is off


def test_untracked_messages_are_built_once_and_left_alone(deliver):
    _, received = deliver(HtmlContent=HTML, CC=[{"email": "cc@dest.example"}])
    assert len(received) == 2 and len(set(received.values())) == 1
    assert b"/t/" not in received["cc@dest.example"]
    assert b"data-postern-notrack" in received["cc@dest.example"]


def test_a_click_whose_delivery_is_gone_still_redirects(tracked_domain, deliver, live, database):
    tracked_domain(LinkTracking=1, OpenTracking=1)
    message_id, received = deliver(HtmlContent=HTML)
    body = parsed(received["rcpt@dest.example"]).get_body(("html",)).get_content()
    with database.transaction() as s:
        s.execute(delete(Message).where(Message.id == message_id))
    resp = httpx.get(hrefs(body)[0])
    assert resp.status_code == 302 and resp.headers["Location"] == "https://example.com/x?a=1&b=2"
    pixel = httpx.get(re.search(r'<img src="([^"]+)"', body).group(1))
    assert pixel.status_code == 200 and pixel.content.startswith(b"GIF89a")
    with database.transaction(readonly=True) as s:
        assert s.scalars(select(Event).where(Event.type.in_(("clicked", "opened")))).all() == []


def test_each_recipient_gets_their_own_links_built_on_several_processes(
    tracked_domain, send, mx, worker_for, live, database, dns_server
):
    tracked_domain(LinkTracking=1, OpenTracking=1, UnsubscribeLink=1)
    recipients = [f"p{i}@dest.example" for i in range(9)]
    message_id = send(to=recipients, HtmlContent=HTML)
    worker = worker_for(
        mx, tracking__base_url=live, delivery__build_processes=2, delivery__batch_size=9
    )
    try:
        assert worker.run_once() == 9
    finally:
        worker.close()
    tokens = {d.recipient: d.token for d in deliveries(database, message_id)}
    lookup = dns_txt(dns_server)
    for received in mx.messages:
        assert dkim.verify(received.data, dnsfunc=lookup)
        body = parsed(received.data).get_body(("html",)).get_content()
        click = hrefs(body)[0].rsplit("/", 1)[1]
        assert verify(KEY, CLICK, click) == (tokens[received.rcpt_tos[0]], HTML_URL)
    assert len({m.data for m in mx.messages}) == 9


HTML_URL = "https://example.com/x?a=1&b=2"


def test_the_client_address_behind_a_reverse_proxy(
    tracked_domain, deliver, live, database, make_app
):
    tracked_domain(LinkTracking=1)
    message_id, received = deliver(HtmlContent=HTML)
    link = hrefs(parsed(received["rcpt@dest.example"]).get_body(("html",)).get_content())[0]
    path = link.removeprefix(live)
    forwarded = {"X-Forwarded-For": "203.0.113.7", "User-Agent": "Proxied/1.0"}

    # No proxy configured: the header is anyone's to write, so it is not believed. (Every
    # click is recorded here: tracking.repeat_window 0.)
    app = make_app(tracking__repeat_window=0)
    assert app.client.get(path, headers=forwarded).status_code == 302
    # One proxy (http.proxy_hops = 1): the address it saw is the client's.
    app = make_app(http__proxy_hops=1, tracking__repeat_window=0)
    assert app.client.get(path, headers=forwarded).status_code == 302
    ips = [details["ip"] for _, _, details in events_of(database, message_id, "clicked")]
    assert ips == ["127.0.0.1", "203.0.113.7"]


TWO_LINKS = (
    "<html><body><p><a href='https://example.com/one'>one</a> "
    "<a href='https://example.com/two'>two</a></p></body></html>"
)


def test_opens_and_clicks_are_recorded_once_a_window(
    tracked_domain, deliver, live, database, make_app, clock
):
    """tracking.repeat_window (60 s): one open per recipient, and one click per recipient
    and link, a window; the next window records them again."""
    from datetime import UTC, datetime, timedelta

    tracked_domain(LinkTracking=1, OpenTracking=1)
    message_id, received = deliver(HtmlContent=TWO_LINKS)
    body = parsed(received["rcpt@dest.example"]).get_body(("html",)).get_content()
    one, two = (link.removeprefix(live) for link in hrefs(body)[:2])
    pixel = re.search(r'<img src="([^"]+)"', body).group(1).removeprefix(live)
    start = datetime.fromtimestamp(1_800_000_000, UTC)  # a window of 60 s begins there
    clock.freeze(start)
    client = make_app().client

    def visit(*paths):
        for path in paths:
            assert client.get(path).status_code in (200, 302)

    def urls():
        return [d["url"] for _, _, d in events_of(database, message_id, "clicked")]

    visit(pixel, pixel, one, one, two)
    clock.freeze(start + timedelta(seconds=59))
    visit(pixel, one, two)
    assert len(events_of(database, message_id, "opened")) == 1
    assert urls() == ["https://example.com/one", "https://example.com/two"]
    clock.freeze(start + timedelta(seconds=60))  # the next window
    visit(pixel, pixel, one, one)
    assert len(events_of(database, message_id, "opened")) == 2
    assert urls() == ["https://example.com/one", "https://example.com/two"] + [
        "https://example.com/one"
    ]
