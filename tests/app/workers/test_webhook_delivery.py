"""Webhook delivery: fan-out from the event log, signed POSTs to a loopback receiver, retries,
GetWebhookDeliveries, and a real postern worker posting a delivered event."""

import threading
from collections import Counter

import pytest
from sqlalchemy import func, select

from app.workers.webhooks import WebhookSender
from commands.events import writer as events
from commands.webhooks.fanout import fan_out
from models import Delivery, Domain, Event, Message, WebhookAttempt, WebhookDelivery
from tests import httpreceiver, smtppeer
from tests.app.workers.test_worker_processes import start_worker, worker_env
from tests.httpreceiver import assert_signed
from tests.livesrv import wait_until

http_receiver = httpreceiver.http_receiver
smtp_peer = smtppeer.smtp_peer


@pytest.fixture
def domain(active_domain):
    return active_domain()


@pytest.fixture
def hook(api, user):
    """Register a webhook through AddWebhook; its WebhookID."""

    def add(domain, event, url, key=None):
        body = api(
            "EmailGateway.AddWebhook",
            APIKey=key or user.api_key,
            DomainID=domain.id,
            Event=event,
            WebhookURL=url,
        )
        assert body["Success"] is True, body
        return int(body["NewWebhookID"])

    return add


@pytest.fixture
def message(client, domain):
    """Accept one message for buyer@dest.example; its MessageID."""

    def send(d=None):
        d = d or domain
        resp = client.post(
            "/api/v1/email",
            headers={"Authorization": f"Bearer {d.key}"},
            json={
                "Subject": "Order 1",
                "ContentType": "plain",
                "PlainContent": "Thanks",
                "From": {"email": f"orders@{d.name}", "name": "Shop"},
                "To": [{"email": "buyer@dest.example"}],
                "Tags": ["order", "eu"],
            },
        )
        assert resp.status_code == 200, resp.get_json()
        return resp.get_json()["MessageID"]

    return send


@pytest.fixture
def emit(database, clock):
    """Write an event for a message's first delivery, as the worker and tracking do."""

    def write(message_id, kind, *, event_id=None, **kw):
        with database.transaction() as s:
            msg = s.get(Message, message_id)
            delivery = s.scalars(
                select(Delivery).where(Delivery.message_id == message_id).order_by(Delivery.id)
            ).first()
            row = events.event_row(kind, msg, delivery, delivery.recipient, clock(), **kw)
            if event_id is not None:
                row.id = event_id
            s.add(row)
            s.flush()
            return row.id, row.uid

    return write


@pytest.fixture
def sender_for(base_config, database, clock, box):
    def make(**changes):
        return WebhookSender(base_config.replace(**changes), database, box, clock=clock)

    return make


def drain(sender):
    """Post until nothing is due; the number of POSTs."""
    total = 0
    while n := sender.run_once():
        total += n
    return total


def signing_key(api, user, domain):
    return api("EmailGateway.GetWebhooks", APIKey=user.api_key, DomainID=domain.id)["SigningKey"]


def deliveries(database):
    with database.transaction(readonly=True) as s:
        return list(s.scalars(select(WebhookDelivery).order_by(WebhookDelivery.event_id)))


def test_signed_post_retried_until_the_receiver_takes_it(
    api, user, domain, hook, message, emit, sender_for, http_receiver, clock
):
    webhook_id = hook(domain, "delivery", http_receiver.url())
    msg = message()
    _, uid = emit(msg, "delivered", code=250, enhanced="2.0.0", text="2.0.0 Ok: queued as X")
    http_receiver.answer(500, 500)
    sender = sender_for()
    assert sender.run_once() == 1
    assert sender.run_once() == 0  # the retry waits about a minute
    clock.advance(seconds=67)
    assert sender.run_once() == 1
    clock.advance(seconds=250)
    assert sender.run_once() == 0  # the second retry waits about five minutes
    clock.advance(seconds=81)
    assert sender.run_once() == 1
    clock.advance(days=2)
    assert sender.run_once() == 0  # succeeded: never posted again

    requests = http_receiver.wait_for(3)
    assert len(requests) == 3
    key = signing_key(api, user, domain)
    for r in requests:
        assert_signed(r, key)
        assert r.headers["webhook-id"] == uid
        assert r.headers["content-type"] == "application/json"
    assert len({r.body for r in requests}) == 1  # the same event, byte for byte
    payload = requests[0].json()
    assert payload == {
        "id": uid,
        "event": "delivery",  # as the webhook was registered
        "timestamp": payload["timestamp"],
        "timestamp_unix": payload["timestamp_unix"],
        "message_id": msg,
        "recipient": "buyer@dest.example",
        "domain": domain.name,
        "tags": ["order", "eu"],
        "details": {
            "smtp_code": 250,
            "enhanced_code": "2.0.0",
            "smtp_text": "2.0.0 Ok: queued as X",
        },
    }
    assert payload["timestamp"].endswith("Z")

    listed = api(
        "EmailGateway.GetWebhookDeliveries",
        APIKey=user.api_key,
        DomainID=domain.id,
        WebhookID=webhook_id,
    )
    assert listed["TotalRecords"] == 1
    (d,) = listed["Deliveries"]
    assert (d["EventID"], d["Event"], d["Status"], d["AttemptCount"]) == (
        uid,
        "delivery",
        "succeeded",
        3,
    )
    assert d["NextAttemptDate"] is None and d["LastStatusCode"] == 200
    assert [a["StatusCode"] for a in d["Attempts"]] == [500, 500, 200]
    assert d["Attempts"][0]["Error"] == "HTTP 500: ok"
    assert d["Attempts"][2]["Error"] is None
    assert all(isinstance(a["DurationMs"], int) and a["Time"] for a in d["Attempts"])


def test_a_timeout_is_a_failed_attempt(
    domain, hook, message, emit, sender_for, http_receiver, database, clock
):
    hook(domain, "delivered", http_receiver.url())
    emit(message(), "delivered")
    http_receiver.answer(httpreceiver.Answer(200, delay=3.0))
    sender = sender_for(webhooks__timeout=0.5)
    assert sender.run_once() == 1
    (d,) = deliveries(database)
    assert (d.status, d.attempts, d.last_status_code) == ("pending", 1, None)
    assert d.last_error == "No answer within 0.5 s"
    clock.advance(seconds=70)
    assert sender.run_once() == 1
    (d,) = deliveries(database)
    assert (d.status, d.attempts, d.due_at) == ("succeeded", 2, None)


def test_failed_after_the_last_scheduled_retry(
    domain, hook, message, emit, sender_for, http_receiver, database, clock
):
    hook(domain, "delivered", http_receiver.url())
    emit(message(), "delivered")
    http_receiver.answer(503, 503, 503, 503)
    sender = sender_for(webhooks__retry_schedule=[10, 20])
    assert sender.run_once() == 1
    clock.advance(seconds=12)
    assert sender.run_once() == 1
    clock.advance(seconds=23)
    assert sender.run_once() == 1
    (d,) = deliveries(database)
    assert (d.status, d.attempts, d.due_at, d.last_status_code) == ("failed", 3, None, 503)
    clock.advance(days=3)
    assert sender.run_once() == 0
    assert len(http_receiver.requests) == 3


def test_finished_deliveries_are_deleted_after_keep_days(
    domain, hook, message, emit, sender_for, http_receiver, database, clock
):
    hook(domain, "delivered,bounced", http_receiver.url())
    emit(message(), "delivered")
    http_receiver.answer(200, 503, 503)
    sender = sender_for(webhooks__keep_days=7, webhooks__retry_schedule=[60])
    assert sender.run_once() == 1  # delivered: succeeded at once
    clock.advance(days=5)
    emit(message(), "bounced")
    assert sender.run_once() == 1  # bounced: pending, retried in a minute
    clock.advance(days=3)
    # The first is 8 days old; the second is still pending: both stay until it finishes.
    assert sender.prune() == 1
    assert [d.status for d in deliveries(database)] == ["pending"]
    assert sender.run_once() == 1  # its last try: failed
    assert sender.prune() == 0  # finished just now
    clock.advance(days=8)
    assert sender.prune() == 1
    assert deliveries(database) == []
    with database.transaction(readonly=True) as s:
        assert s.scalar(select(func.count()).select_from(WebhookAttempt)) == 0
    assert sender_for(webhooks__keep_days=0).prune() == 0  # 0 keeps everything


def test_only_subscribed_events_in_the_webhooks_own_vocabulary(
    domain, hook, message, emit, sender_for, http_receiver, clock
):
    hook(domain, "delivery,bounce", http_receiver.url("/old"))
    hook(domain, "delivered, opened", http_receiver.url("/new"))
    msg = message()
    emit(msg, "deferred", code=451)  # never a webhook event
    emit(msg, "delivered", code=250)
    emit(msg, "bounced", code=550, enhanced="5.1.1", text="No such user")
    emit(msg, "clicked", details={"url": "https://example.com/x", "ip": "192.0.2.1"})
    _, opened = emit(
        msg, "opened", details={"ip": "192.0.2.7", "user_agent": "Mail/1.0", "other": "x"}
    )
    clock.advance(seconds=1)
    hook(domain, "complaint", http_receiver.url("/later"))  # added after the events
    assert drain(sender_for()) == 4

    got = Counter((r.path, r.json()["event"]) for r in http_receiver.requests)
    assert got == {
        ("/old", "delivery"): 1,
        ("/old", "bounce"): 1,
        ("/new", "delivered"): 1,
        ("/new", "opened"): 1,
    }
    by_id = {r.json()["id"]: r.json() for r in http_receiver.requests}
    assert by_id[opened]["details"] == {"ip": "192.0.2.7", "user_agent": "Mail/1.0"}
    bounce = next(p for p in by_id.values() if p["event"] == "bounce")
    assert bounce["details"] == {
        "smtp_code": 550,
        "enhanced_code": "5.1.1",
        "smtp_text": "No such user",
    }
    emit(msg, "complained", details={"feedback_type": "abuse"})
    assert drain(sender_for()) == 1
    assert http_receiver.requests[-1].path == "/later"
    assert http_receiver.requests[-1].json()["details"] == {"feedback_type": "abuse"}


def test_fan_out_finds_late_ids_and_forgets_expired_gaps(
    domain, hook, message, emit, base_config, database, clock
):
    hook(domain, "delivered", "http://127.0.0.1:9/hook")
    msg = message()
    first, _ = emit(msg, "delivered")
    base = first + 100
    emit(msg, "delivered", event_id=base)
    emit(msg, "delivered", event_id=base + 2)
    fan_out(database, base_config, clock())
    assert [d.event_id for d in deliveries(database)] == [first, base, base + 2]
    # base + 1 was taken by a transaction that commits only now.
    emit(msg, "delivered", event_id=base + 1)
    fan_out(database, base_config, clock())
    assert [d.event_id for d in deliveries(database)] == [first, base, base + 1, base + 2]
    # base + 4 stays missing for longer than webhooks.gap_expiry: it is given up.
    emit(msg, "delivered", event_id=base + 3)
    emit(msg, "delivered", event_id=base + 5)
    fan_out(database, base_config, clock())
    clock.advance(seconds=base_config.webhooks.gap_expiry + 1)
    fan_out(database, base_config, clock())
    emit(msg, "delivered", event_id=base + 4)
    fan_out(database, base_config, clock())
    assert [d.event_id for d in deliveries(database)] == [
        first,
        base,
        base + 1,
        base + 2,
        base + 3,
        base + 5,
    ]


def test_without_webhooks_the_fan_out_moves_its_cursor_reading_no_events(
    domain, hook, message, emit, base_config, database, clock, monkeypatch
):
    from commands.webhooks import fanout as webhook_fanout
    from models import WebhookCursor

    msg = message()
    first, _ = emit(msg, "delivered")
    newest, _ = emit(msg, "delivered", event_id=first + 50)
    read = []
    real = webhook_fanout._create_deliveries
    monkeypatch.setattr(
        webhook_fanout, "_create_deliveries", lambda s, ev, now: read.extend(ev) or real(s, ev, now)
    )
    assert fan_out(database, base_config, clock()) == 0
    assert read == []
    with database.transaction(readonly=True) as s:
        cursor = s.get(WebhookCursor, webhook_fanout.CURSOR_ID)
        assert (cursor.last_event_id, cursor.gaps) == (newest, "{}")
    # A webhook added now takes what happens from now on, read as before.
    clock.advance(seconds=1)
    hook(domain, "delivered", "http://127.0.0.1:9/hook")
    after, _ = emit(msg, "delivered", event_id=newest + 1)
    assert fan_out(database, base_config, clock()) == 1
    assert [d.event_id for d in deliveries(database)] == [after]


def test_thousands_of_missing_ids_fit_in_the_cursor(
    domain, hook, message, emit, base_config, database, clock
):
    from commands.webhooks import fanout as webhook_fanout
    from models import WebhookCursor

    hook(domain, "delivered", "http://127.0.0.1:9/hook")
    msg = message()
    first, _ = emit(msg, "delivered")
    last, _ = emit(msg, "delivered", event_id=first + 4000)
    assert fan_out(database, base_config, clock()) >= 2  # and the message's accepted event
    with database.transaction(readonly=True) as s:
        cursor = s.get(WebhookCursor, webhook_fanout.CURSOR_ID)
        assert cursor.last_event_id == last
        assert len(cursor.gaps) > 65_535  # past what MariaDB's TEXT holds
    assert [d.event_id for d in deliveries(database)] == [first, last]


def test_a_deleted_webhook_takes_its_deliveries_along(
    api, user, domain, hook, message, emit, base_config, database, clock, http_receiver
):
    webhook_id = hook(domain, "delivered", http_receiver.url())
    emit(message(), "delivered")
    fan_out(database, base_config, clock())
    assert len(deliveries(database)) == 1
    gone = api(
        "EmailGateway.DeleteWebhook", APIKey=user.api_key, WebhookID=webhook_id, DomainID=domain.id
    )
    assert gone["Success"] is True
    assert deliveries(database) == []


def test_a_private_address_is_refused_at_send_time(
    domain, hook, message, emit, sender_for, http_receiver, dns_server, database
):
    dns_server.add("hooks.dest.example", "A", "127.0.0.1")
    url = f"http://hooks.dest.example:{http_receiver.port}/hook"
    hook(domain, "delivered", url)  # registered while allowed (a name is not checked then)
    emit(message(), "delivered")
    assert sender_for(webhooks__allow_private=False).run_once() == 1
    (d,) = deliveries(database)
    assert (d.status, d.attempts, d.due_at) == ("failed", 1, None)
    assert d.last_error == (
        "Refused, not retried: hooks.dest.example resolves to an address that is not allowed:"
        " the URL points at a loopback, private or reserved address"
        " (webhooks.allow_private is off)"
    )
    assert http_receiver.requests == []
    # Allowed, the same name is resolved through Postern's resolver and posted to.
    emit(message(), "delivered")
    assert sender_for().run_once() == 1
    (r,) = http_receiver.wait_for(1)
    assert r.headers["host"] == f"hooks.dest.example:{http_receiver.port}"


def test_get_webhook_deliveries_is_tenant_scoped_and_paged(
    api, user, make_user, domain, active_domain, hook, message, emit, sender_for, http_receiver,
    clock,
):  # fmt: skip
    mine = domain
    mallory = make_user("mallory")
    theirs = active_domain("other.example", key=mallory.api_key)
    my_hook = hook(mine, "delivered", http_receiver.url("/mine"))
    their_hook = hook(theirs, "delivered", http_receiver.url("/theirs"), key=mallory.api_key)
    my_uids = []
    for _ in range(3):
        my_uids.append(emit(message(mine), "delivered")[1])
        clock.advance(seconds=1)
        drain(sender_for())
    emit(message(theirs), "delivered")
    drain(sender_for())

    def call(key=user.api_key, **params):
        return api("EmailGateway.GetWebhookDeliveries", APIKey=key, **params)

    listed = call(DomainID=mine.id)
    assert listed["TotalRecords"] == 3
    assert [d["EventID"] for d in listed["Deliveries"]] == my_uids[::-1]  # newest first
    assert {d["WebhookID"] for d in listed["Deliveries"]} == {str(my_hook)}
    page = call(DomainID=mine.id, StartFrom=1, RetrieveCount=1)
    assert [d["EventID"] for d in page["Deliveries"]] == [my_uids[1]]
    assert call(DomainID=mine.id, Status="failed")["TotalRecords"] == 0
    assert call(DomainID=mine.id, Status="succeeded")["TotalRecords"] == 3
    assert call(key=mallory.api_key, DomainID=theirs.id)["TotalRecords"] == 1
    # Another user's domain or webhook answers as a missing one.
    assert call(DomainID=theirs.id)["ErrorCode"] == 2
    assert call(DomainID=mine.id, WebhookID=their_hook)["ErrorCode"] == 3
    assert call()["ErrorCode"] == 1
    assert call(DomainID=mine.id, Status="sent")["ErrorCode"] == 4
    assert call(DomainID=mine.id, StartFrom=-1)["ErrorCode"] == 5
    assert call(DomainID=mine.id, RetrieveCount=101)["ErrorCode"] == 6


def _many_events(domain, hook, message, emit, url, n):
    hook(domain, "delivered", url)
    msg = message()
    return {emit(msg, "delivered")[1] for _ in range(n)}


def test_two_senders_never_post_the_same_delivery(
    domain, hook, message, emit, sender_for, http_receiver, database
):
    uids = _many_events(domain, hook, message, emit, http_receiver.url(), 40)
    senders = [sender_for(webhooks__concurrency=3) for _ in range(2)]
    senders[0].fan_out()
    posted = [0, 0]
    start = threading.Barrier(2)

    def run(i):
        start.wait()
        posted[i] = drain(senders[i])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    got = Counter(r.json()["id"] for r in http_receiver.requests)
    assert set(got) == uids and set(got.values()) == {1}
    assert sum(posted) == 40
    with database.transaction(readonly=True) as s:
        assert s.scalar(select(func.count()).select_from(WebhookAttempt)) == 40


def test_a_claim_skips_rows_another_sender_holds(
    domain, hook, message, emit, sender_for, database, http_receiver
):
    if database.backend == "sqlite":
        pytest.skip("SQLite claims under its write lock; nothing to skip")
    _many_events(domain, hook, message, emit, http_receiver.url(), 6)
    # One webhook's six deliveries: its share of a claim must not stop at the locked four.
    sender = sender_for(webhooks__concurrency_per_webhook=10, webhooks__concurrency_per_user=10)
    sender.fan_out()
    with database.transaction() as held:
        locked = list(
            held.scalars(
                select(WebhookDelivery.id).order_by(WebhookDelivery.id).limit(4).with_for_update()
            )
        )
        claimed = sender.claim(100)  # in another transaction, while those rows are locked
        assert {c.delivery_id for c in claimed}.isdisjoint(locked)
        assert len(claimed) == 2


def test_a_real_worker_posts_the_delivered_event_signed(
    api, user, domain, hook, message, base_config, database, dns_server, smtp_peer,
    http_receiver, tmp_path,
):  # fmt: skip
    dns_server.add("dest.example", "A", "127.0.0.1")
    hook(domain, "delivered", http_receiver.url("/postern"))
    msg = message()
    env = worker_env(
        base_config,
        dns_server,
        smtp_peer.port,
        POSTERN_WEBHOOKS_ALLOW_PRIVATE="true",
        POSTERN_WEBHOOKS_POLL_INTERVAL="0.2",
    )
    proc, log = start_worker(env, tmp_path, "worker")
    try:
        (request,) = http_receiver.wait_for(1, timeout=60)
        wait_until(lambda: [d.status for d in deliveries(database)] == ["succeeded"])
    finally:
        proc.terminate()
        assert proc.wait(timeout=60) == 0  # stopped cleanly on SIGTERM
        log.close()
    assert smtp_peer.messages[0].rcpt_tos == ["buyer@dest.example"]
    assert_signed(request, signing_key(api, user, domain))
    payload = request.json()
    assert (payload["event"], payload["message_id"]) == ("delivered", msg)
    assert payload["details"]["smtp_code"] == 250
    assert '"webhook sender started"' in (tmp_path / "worker.log").read_text()


# -- one failing delivery is isolated -------------------------------------------------------


def _break_signing_key(database, box, domain_id, event_id, text="not a Fernet token"):
    with database.transaction() as s:
        s.get(Domain, domain_id).signing_key_encrypted = text


def _break_key_text(database, box, domain_id, event_id):
    # It decrypts, but is no key: signing the POST fails.
    _break_signing_key(database, box, domain_id, event_id, box.encrypt("not hex"))


def _break_event(database, box, domain_id, event_id):
    with database.transaction() as s:
        s.get(Event, event_id).details = "{not json"


BREAKAGES = {
    "undecryptable signing key": (_break_signing_key, "decrypting the signing key: ValueError"),
    "signing key not hex": (_break_key_text, "signing the POST: ValueError"),
    "unreadable event": (_break_event, "building the body: JSONDecodeError"),
}


@pytest.mark.parametrize("breakage", BREAKAGES)
def test_one_failing_delivery_is_retried_then_failed_alone(
    breakage, api, user, make_user, domain, active_domain, hook, message, emit, sender_for,
    http_receiver, database, box, clock,
):  # fmt: skip
    break_it, reason = BREAKAGES[breakage]
    mallory = make_user("mallory")
    theirs = active_domain("other.example", key=mallory.api_key)
    hook(domain, "delivered", http_receiver.url("/mine"))
    hook(theirs, "delivered", http_receiver.url("/theirs"), key=mallory.api_key)
    good = [emit(message(), "delivered")[1] for _ in range(2)]
    bad_id, bad_uid = emit(message(theirs), "delivered")
    good += [emit(message(), "delivered")[1] for _ in range(2)]
    break_it(database, box, theirs.id, bad_id)
    sender = sender_for()  # one batch holds all five
    posts = 0
    for _ in range(10):  # the failing one's retries, on the schedule
        posts += sender.run_once()
        clock.advance(days=1)
    assert posts == 4 + 3  # each good one once; the failing one three times, then no more

    got = Counter(r.json()["id"] for r in http_receiver.requests)
    assert got == dict.fromkeys(good, 1)
    by_uid = {d.event_uid: d for d in deliveries(database)}
    assert {(by_uid[u].status, by_uid[u].attempts) for u in good} == {("succeeded", 1)}

    listed = api("EmailGateway.GetWebhookDeliveries", APIKey=mallory.api_key, DomainID=theirs.id)
    (d,) = listed["Deliveries"]
    assert (d["EventID"], d["Status"], d["AttemptCount"]) == (bad_uid, "failed", 3)
    assert d["NextAttemptDate"] is None and d["LastStatusCode"] is None
    errors = [a["Error"] for a in d["Attempts"]]
    assert errors == [f"Internal error {reason}"] * 3
    assert d["LastError"] == f"Internal error {reason} (given up after 3 internal errors)"


def test_the_running_sender_posts_the_batch_mates_of_a_failing_delivery(
    domain, active_domain, make_user, hook, message, emit, sender_for, http_receiver, database,
    box,
):  # fmt: skip
    mallory = make_user("mallory")
    theirs = active_domain("other.example", key=mallory.api_key)
    hook(domain, "delivered", http_receiver.url("/mine"))
    hook(theirs, "delivered", http_receiver.url("/theirs"), key=mallory.api_key)
    bad_id, _ = emit(message(theirs), "delivered")
    good = {emit(message(), "delivered")[1] for _ in range(3)}
    _break_signing_key(database, box, theirs.id, bad_id)
    sender = sender_for(webhooks__poll_interval=0.05)
    sender.start()
    try:
        http_receiver.wait_for(3, timeout=60)
        wait_until(lambda: sorted(d.attempts for d in deliveries(database)) == [1, 1, 1, 1])
    finally:
        sender.stop()
        sender.join(60)
    assert {r.json()["id"] for r in http_receiver.requests} == good
    (bad,) = [d for d in deliveries(database) if d.domain_id == theirs.id]
    assert (bad.status, bad.last_error) == (
        "pending",
        "Internal error decrypting the signing key: ValueError",
    )


# -- fairness: per webhook and per user, across senders --------------------------------------


def test_a_slow_failing_webhook_does_not_starve_another_tenants(
    domain, active_domain, make_user, hook, message, emit, sender_for, http_receiver
):
    mallory = make_user("mallory")
    theirs = active_domain("other.example", key=mallory.api_key)
    hook(domain, "delivered", http_receiver.url("/slow"))
    with httpreceiver.HTTPReceiver() as other:
        hook(theirs, "delivered", other.url("/theirs"), key=mallory.api_key)
        http_receiver.answer(*[httpreceiver.Answer(500, delay=0.2)] * 30)
        msg = message()
        for _ in range(30):  # a long queue for the slow webhook, made first
            emit(msg, "delivered")
        emit(message(theirs), "delivered")
        sender = sender_for(webhooks__concurrency=10)
        assert sender.run_once() == 3  # two of the slow webhook's (its share), one of theirs
        assert len(other.wait_for(1)) == 1
        assert len(http_receiver.requests) == 2


def test_concurrency_per_webhook_and_per_user_counts_other_senders_claims(
    domain, active_domain, make_user, hook, message, emit, sender_for, http_receiver
):
    mallory = make_user("mallory")
    theirs = active_domain("other.example", key=mallory.api_key)
    for path in ("/a", "/b", "/c"):
        hook(domain, "delivered", http_receiver.url(path))
    hook(theirs, "delivered", http_receiver.url("/theirs"), key=mallory.api_key)
    for _ in range(4):
        emit(message(), "delivered")
    emit(message(theirs), "delivered")
    first = sender_for(webhooks__concurrency_per_webhook=1, webhooks__concurrency_per_user=2)
    held = first.claim(10)  # claimed and not yet posted: in flight
    urls = sorted(p.url.rsplit("/", 1)[1] for p in held)
    assert len([u for u in urls if u != "theirs"]) == 2  # the user's share, one per webhook
    assert "theirs" in urls
    second = sender_for(webhooks__concurrency_per_webhook=2, webhooks__concurrency_per_user=3)
    more = second.claim_due(10)
    # The user has two in flight, so one more; the third webhook's, or a second of one.
    assert len(more) == 1 and not more[0].url.endswith("/theirs")  # theirs: held by first


# -- a webhook failing for days is disabled; EnableWebhook -------------------------------------


def webhooks_of(api, user, domain):
    return api("EmailGateway.GetWebhooks", APIKey=user.api_key, DomainID=domain.id)["Webhooks"]


def test_a_webhook_failing_for_days_is_disabled_and_enable_webhook_turns_it_on(
    api, user, domain, hook, message, emit, sender_for, http_receiver, database, clock,
    postern_log,
):  # fmt: skip
    webhook_id = hook(domain, "delivered", http_receiver.url())
    http_receiver.answer(*[500] * 5)
    sender = sender_for()  # webhooks.disable_after_days = 3
    emit(message(), "delivered")
    assert sender.run_once() == 1
    (listed,) = webhooks_of(api, user, domain)
    assert listed["Status"] == "Active" and listed["FailingSince"] is not None
    clock.advance(days=1)
    emit(message(), "delivered")
    assert sender.run_once() == 2  # the first one's retry and the new one: both fail
    assert webhooks_of(api, user, domain)[0]["Status"] == "Active"
    clock.advance(days=2, hours=1)
    emit(message(), "delivered")
    # Two in flight at most per webhook: the two retries, which disable it; the third
    # delivery, pending, is failed with it.
    assert sender.run_once() == 2
    assert len(http_receiver.wait_for(5)) == 5
    (listed,) = webhooks_of(api, user, domain)
    assert listed["Status"] == "Disabled"
    assert listed["DisabledDate"] is not None
    assert listed["DisabledReason"].startswith("Every POST failed for 3.0 days")
    assert [d.status for d in deliveries(database)] == ["failed"] * 3
    assert any(r.getMessage() == "webhook disabled" for r in postern_log)
    # ...and an event of the domain in its event log.
    [event] = api(
        "EmailGateway.GetEvents",
        APIKey=user.api_key,
        StartFrom=0,
        RetrieveCount=10,
        Event="webhook_disabled",
    )["Events"]
    assert event["delivery_status"]["text"].startswith("Every POST failed for 3.0 days")
    assert event["details"]["webhook_id"] == int(listed["WebhookID"])
    # Disabled: new events make no deliveries, nothing is posted.
    emit(message(), "delivered")
    assert sender.run_once() == 0
    assert len(deliveries(database)) == 3
    assert len(http_receiver.requests) == 5

    enabled = api("EmailGateway.EnableWebhook", APIKey=user.api_key, WebhookID=webhook_id)
    assert enabled["Success"] is True, enabled
    assert enabled["Webhook"]["Status"] == "Active"
    (listed,) = webhooks_of(api, user, domain)
    assert (listed["Status"], listed["FailingSince"], listed["DisabledDate"]) == (
        "Active",
        None,
        None,
    )
    emit(message(), "delivered")
    assert sender.run_once() == 1
    assert http_receiver.wait_for(6)[-1].json()["event"] == "delivered"
    assert webhooks_of(api, user, domain)[0]["FailingSince"] is None  # succeeded


def test_a_success_ends_the_failing_streak(
    api, user, domain, hook, message, emit, sender_for, http_receiver, database, clock
):
    hook(domain, "delivered", http_receiver.url())
    http_receiver.answer(500)
    sender = sender_for()
    emit(message(), "delivered")
    assert sender.run_once() == 1
    clock.advance(days=2)
    emit(message(), "delivered")
    assert sender.run_once() == 2  # the retry and the new one succeed
    assert webhooks_of(api, user, domain)[0]["FailingSince"] is None
    http_receiver.answer(500)
    clock.advance(days=2)
    emit(message(), "delivered")
    assert sender.run_once() == 1  # fails: a new streak, not four days of one
    (listed,) = webhooks_of(api, user, domain)
    assert listed["Status"] == "Active" and listed["FailingSince"] is not None


@pytest.mark.parametrize(
    "rdtype, address",
    [
        ("AAAA", "::7f00:1"),
        ("AAAA", "64:ff9b::7f00:1"),
        ("AAAA", "2002:7f00:1::"),
        ("AAAA", "::ffff:127.0.0.1"),
        ("AAAA", "2001:0:808:808:0:0:80ff:fffe"),  # Teredo, client 127.0.0.1
        ("A", "10.0.0.1"),
    ],
)
def test_ipv4_carried_in_ipv6_is_refused_at_send_time_and_never_told(
    domain, hook, message, emit, sender_for, http_receiver, dns_server, database, rdtype, address
):
    dns_server.add("hooks.dest.example", rdtype, address)
    hook(domain, "delivered", f"http://hooks.dest.example:{http_receiver.port}/hook")
    emit(message(), "delivered")
    assert sender_for(webhooks__allow_private=False).run_once() == 1
    (d,) = deliveries(database)
    assert (d.status, d.attempts) == ("failed", 1)
    assert d.last_error.startswith("Refused, not retried: hooks.dest.example resolves to an")
    assert address not in d.last_error
    assert http_receiver.requests == []


def test_a_connection_error_does_not_tell_the_resolved_address(
    domain, hook, message, emit, sender_for, dns_server, database
):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dns_server.add("closed.dest.example", "A", "127.0.0.1")
    hook(domain, "delivered", f"http://closed.dest.example:{port}/hook")
    emit(message(), "delivered")
    assert sender_for().run_once() == 1
    (d,) = deliveries(database)
    assert d.status == "pending"
    assert d.last_error == f"ConnectError: cannot connect to closed.dest.example:{port}: " + (
        "Connection refused"
    )
    assert "127.0.0.1" not in d.last_error
