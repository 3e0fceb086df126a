"""GET /metrics in one process (the Flask test client, the default registry): counters move
as mail is accepted over each transport and delivered to a loopback peer, the queue's
readings follow the database and the gateway's clock, and a token keeps it private."""

import base64
import smtplib
from datetime import timedelta

import pytest
from prometheus_client.parser import text_string_to_metric_families

from commands.suppression import suppress_bounce
from tests import httpreceiver, smtppeer
from tests.app.smtp import test_relay as relay_tests
from tests.app.workers import test_delivery as delivery_tests
from tests.app.workers import test_webhook_delivery as webhook_tests

smtp_peer = smtppeer.smtp_peer
http_receiver = httpreceiver.http_receiver
hook, message, emit = webhook_tests.hook, webhook_tests.message, webhook_tests.emit
sender_for = webhook_tests.sender_for
mx, worker_for = delivery_tests.mx, delivery_tests.worker_for
relay_for, relay = relay_tests.relay_for, relay_tests.relay
NO_VERIFY = relay_tests.NO_VERIFY


def scrape(client, **headers):
    """Every sample of /metrics: {(name, sorted labels): value}."""
    resp = client.get("/metrics", headers=headers)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert resp.mimetype == "text/plain"
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(resp.get_data(as_text=True))
        for s in family.samples
    }


def value(samples, name, **labels):
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def v1_send(client, key, to=("rcpt@dest.example",), **extra):
    resp = client.post(
        "/api/v1/email",
        headers={"Authorization": f"Bearer {key}"},
        json={
            "Subject": "s",
            "ContentType": "plain",
            "PlainContent": "hello",
            "From": {"email": "news@example.com", "name": "News"},
            "To": [{"email": t} for t in to],
            **extra,
        },
    )
    assert resp.status_code == 200, resp.get_json()
    return resp.get_json()["MessageID"]


@pytest.fixture
def domain(active_domain):
    return active_domain()


@pytest.fixture
def credential(api, user, domain):
    smtp = api("EmailGateway.AddSMTP", APIKey=user.api_key, DomainID=domain.id)["SMTP"]
    return smtp["Username"], smtp["Password"]


def test_accepted_mail_is_counted_by_transport(client, api, user, domain, relay, credential):
    before = scrape(client)
    v1_send(client, domain.key, to=("a@dest.example", "b@dest.example"))
    answer = api(
        "EmailGateway.SendEmail",
        APIKey=user.api_key,
        DomainID=domain.id,
        Subject="s",
        ContentType="plain",
        PlainContent="hello",
        From={"email": "news@example.com", "name": "News"},
        To=[{"email": "c@dest.example", "name": "C"}],
    )
    assert answer["Success"] is True, answer
    with smtplib.SMTP("127.0.0.1", relay.ports["submission"], timeout=10) as c:
        c.starttls(context=NO_VERIFY)
        c.login(*credential)
        c.send_message(relay_tests.message(), to_addrs=["d@dest.example"])
    after = scrape(client)
    accepted = "postern_messages_accepted_total"
    recipients = "postern_recipients_accepted_total"
    for source, messages, rcpts in (("api", 1, 2), ("api.php", 1, 1), ("smtp", 1, 1)):
        assert value(after, accepted, source=source) - value(before, accepted, source=source) == (
            messages
        )
        assert value(after, recipients, source=source) - value(
            before, recipients, source=source
        ) == (rcpts)


def test_a_refused_send_is_not_counted(client, domain):
    before = scrape(client)
    resp = client.post(
        "/api/v1/email", headers={"Authorization": f"Bearer {domain.key}"}, json={"Subject": ""}
    )
    assert resp.status_code == 422 or resp.status_code == 400, resp.get_json()
    after = scrape(client)
    assert value(after, "postern_messages_accepted_total", source="api") == value(
        before, "postern_messages_accepted_total", source="api"
    )


def test_delivery_outcomes_and_batch_durations_are_counted(
    client, domain, mx, worker_for, database, clock
):
    with database.transaction() as s:
        suppress_bounce(
            s, domain_user(database, domain), "gone@dest.example", 550, "5.1.1", "x", clock()
        )
    mx.fail_rcpt("bad@dest.example", 550, "5.1.1 No such user")
    mx.fail_rcpt("later@dest.example", 451, "4.3.0 Try again later")
    before = scrape(client)
    v1_send(
        client,
        domain.key,
        to=("ok@dest.example", "bad@dest.example", "later@dest.example", "gone@dest.example"),
    )
    assert worker_for(mx).run_once() == 3
    after = scrape(client)
    for outcome in ("delivered", "bounced", "deferred", "suppressed"):
        moved = value(after, "postern_deliveries_total", outcome=outcome) - value(
            before, "postern_deliveries_total", outcome=outcome
        )
        assert moved == 1, (outcome, moved)
    for outcome in ("failed", "held"):  # shown, at what they were
        assert ("postern_deliveries_total", (("outcome", outcome),)) in after
    batches = "postern_worker_batch_duration_seconds_count"
    assert value(after, batches, worker="delivery") - value(before, batches, worker="delivery") == 1


def domain_user(database, domain):
    from models import Domain

    with database.transaction(readonly=True) as s:
        return s.get(Domain, domain.id).user_id


def test_queue_depth_and_oldest_age_follow_the_database_and_the_clock(client, domain, clock):
    clock.freeze()
    empty = scrape(client)
    assert value(empty, "postern_queue_depth", state="due") == 0
    assert value(empty, "postern_queue_oldest_due_age_seconds") == 0
    v1_send(client, domain.key, to=("a@dest.example", "b@dest.example"))
    later = int((clock() + timedelta(hours=1)).timestamp())
    v1_send(client, domain.key, to=("c@dest.example",), SendAt=later)
    now = scrape(client)
    assert value(now, "postern_queue_depth", state="due") == 2
    assert value(now, "postern_queue_depth", state="scheduled") == 1
    assert value(now, "postern_queue_oldest_due_age_seconds") < 1
    clock.advance(minutes=10)
    waited = scrape(client)
    assert 599 <= value(waited, "postern_queue_oldest_due_age_seconds") <= 601
    clock.advance(hours=1)
    due = scrape(client)
    assert value(due, "postern_queue_depth", state="due") == 3
    assert value(due, "postern_queue_depth", state="scheduled") == 0
    assert value(due, "postern_held_deliveries") == 0
    assert value(due, "postern_webhook_backlog") == 0


def test_requests_are_measured_by_route_never_by_path(client, domain):
    before = scrape(client)
    client.get("/t/o/some-id-1.gif")  # tracking links, forged: refused
    client.get("/t/o/some-id-2.gif")
    client.get("/no/such/path/12345")
    after = scrape(client)
    count = "postern_http_request_duration_seconds_count"
    paths = {dict(labels).get("route") for (name, labels) in after if name == count}
    assert not any(p and ("12345" in p or "some-id" in p) for p in paths), paths
    unmatched = {"method": "GET", "route": "unmatched", "status": "4xx"}
    assert value(after, count, **unmatched) - value(before, count, **unmatched) == 1
    opens = [labels for (name, labels) in after if name == count and "/t/o/" in str(labels)]
    assert opens and all(dict(labels)["route"] == "/t/o/<signed>.gif" for labels in opens)
    scraped = {"method": "GET", "route": "/metrics", "status": "2xx"}
    assert value(after, count, **scraped) - value(before, count, **scraped) == 1


def test_smtp_sessions_and_auth_failures_are_counted(client, relay, credential):
    before = scrape(client)
    with smtplib.SMTP("127.0.0.1", relay.ports["submission"], timeout=10) as c:
        c.starttls(context=NO_VERIFY)  # the same session, encrypted
        c.ehlo()
        wrong = base64.b64encode(f"\0{credential[0]}\0not-the-password".encode()).decode()
        assert c.docmd("AUTH", f"PLAIN {wrong}")[0] == 535
    after = scrape(client)
    sessions = "postern_smtp_sessions_total"
    failures = "postern_smtp_auth_failures_total"
    listener = {"listener": "submission"}
    assert value(after, sessions, **listener) - value(before, sessions, **listener) == 1
    assert value(after, failures, **listener) - value(before, failures, **listener) == 1


def test_a_token_keeps_metrics_private(make_app):
    client = make_app(metrics__token="s3cret-scrape-token").client
    for headers in (
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": "s3cret-scrape-token"},
    ):
        resp = client.get("/metrics", headers=headers)
        assert resp.status_code == 401, headers
        assert resp.get_json()["Errors"][0]["Code"] == 401
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    resp = client.get("/metrics", headers={"Authorization": "Bearer s3cret-scrape-token"})
    assert resp.status_code == 200
    assert "postern_deliveries_total" in resp.get_data(as_text=True)


def test_without_a_token_metrics_answer_anyone(client):
    assert client.get("/metrics").status_code == 200


def test_webhook_posts_are_counted_by_outcome_and_the_backlog_read(
    client, domain, hook, message, emit, sender_for, http_receiver, clock
):
    hook(domain, "delivered", http_receiver.url())
    http_receiver.answer(503, 503, 200)
    sender = sender_for(webhooks__retry_schedule=[10])
    before = scrape(client)
    emit(message(), "delivered")
    assert sender.run_once() == 1  # 503: retried in 10 s
    pending = scrape(client)
    assert value(pending, "postern_webhook_backlog") == 1
    clock.advance(seconds=12)
    assert sender.run_once() == 1  # 503 again: the last try, failed
    emit(message(), "delivered")
    assert sender.run_once() == 1  # 200
    after = scrape(client)
    posts = "postern_webhook_posts_total"
    for outcome in ("retrying", "failed", "succeeded"):
        moved = value(after, posts, outcome=outcome) - value(before, posts, outcome=outcome)
        assert moved == 1, (outcome, moved)
    assert value(after, "postern_webhook_backlog") == 0
    batches = "postern_worker_batch_duration_seconds_count"
    assert value(after, batches, worker="webhooks") - value(before, batches, worker="webhooks") == 3


def test_the_vendor_apis_are_counted_by_their_source(client, domain):
    before = scrape(client)
    postal = client.post(
        "/api/v1/send/message",
        headers={"X-Server-API-Key": domain.key},
        json={
            "to": ["a@dest.example", "b@dest.example"],
            "from": "news@example.com",
            "subject": "s",
            "plain_body": "x",
        },
    ).get_json()
    assert postal["status"] == "success", postal
    freshmail = client.post(
        "/v3/messaging/emails",
        headers={"Authorization": f"Bearer {domain.key}"},
        json={
            "recipients": [{"email": "c@dest.example"}, {"email": "d@dest.example"}],
            "from": {"email": "news@example.com"},
            "subject": "s",
            "contents": [{"type": "text/plain", "body": "x"}],
        },
    )
    assert freshmail.status_code == 201, freshmail.get_json()
    infobip = client.post(
        "/email/4/messages",
        headers={"Authorization": f"App {domain.key}"},
        json={
            "messages": [
                {
                    "sender": "news@example.com",
                    "destinations": [{"to": [{"destination": "e@dest.example"}]}],
                    "content": {"subject": "s", "text": "x"},
                }
            ]
        },
    )
    assert infobip.status_code == 200, infobip.get_json()
    after = scrape(client)
    accepted = "postern_messages_accepted_total"
    recipients = "postern_recipients_accepted_total"
    for source, messages, rcpts in (("postal", 1, 2), ("freshmail", 2, 2), ("infobip", 1, 1)):
        got = value(after, accepted, source=source) - value(before, accepted, source=source)
        assert got == messages, source
        got = value(after, recipients, source=source) - value(before, recipients, source=source)
        assert got == rcpts, source
