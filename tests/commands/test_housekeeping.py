"""Housekeeping: sessions that end however much they are used, and the sweep of what expired."""

from datetime import timedelta

from sqlalchemy import func, select

from commands.housekeeping import sweep
from core.crypto import token_digest
from models import UserSession


def login(api, user):
    body = api("User.Login", Username=user.username, Password=user.password)
    assert body["Success"] is True, body
    return body["SessionID"]


def test_a_session_ends_at_its_maximum_age_however_much_it_is_used(api, user, clock, base_config):
    idle = base_config.security.session_idle_timeout
    max_age = base_config.security.session_max_age
    assert max_age > idle
    sid = login(api, user)
    used = 0
    while used + idle // 2 < max_age:  # used every half idle period: never idle for long
        clock.advance(seconds=idle // 2)
        used += idle // 2
        assert api("User.APIKey.List", SessionID=sid)["Success"] is True, used
    clock.advance(seconds=max_age - used + 1)
    body = api("User.APIKey.List", SessionID=sid)
    assert body["ErrorCode"] == 99998 and "expired" in body["ErrorText"]
    assert api("User.APIKey.List", SessionID=sid)["ErrorCode"] == 99998
    assert login(api, user)  # a new login starts again


def test_a_shorter_maximum_age_is_a_setting(make_app, user, clock):
    call = make_app(security__session_max_age=600)
    sid = call("User.Login", Username=user.username, Password=user.password)["SessionID"]
    clock.advance(seconds=590)
    assert call("User.APIKey.List", SessionID=sid)["Success"] is True
    clock.advance(seconds=11)
    assert call("User.APIKey.List", SessionID=sid)["ErrorCode"] == 99998


def test_expired_sessions_are_swept_in_batches(api, user, make_user, database, clock, base_config):
    other = make_user("bob")
    idle_ones = [login(api, user) for _ in range(5)]
    clock.advance(seconds=base_config.security.session_idle_timeout + 10)
    fresh = login(api, other)
    # A session used all along but past its maximum age goes too.
    with database.transaction() as s:
        s.add(
            UserSession(
                token_digest=token_digest("old but busy"),
                user_id=other.id,
                created_at=clock() - timedelta(seconds=base_config.security.session_max_age + 1),
                last_seen_at=clock(),
            )
        )
    swept = sweep(database, base_config, clock(), chunk=2)
    assert swept.sessions == 6
    with database.transaction(readonly=True) as s:
        left = s.scalars(select(UserSession.token_digest)).all()
    assert left == [token_digest(fresh)]
    assert all(api("User.APIKey.List", SessionID=sid)["ErrorCode"] == 99998 for sid in idle_ones)
    assert api("User.APIKey.List", SessionID=fresh)["Success"] is True
    assert sweep(database, base_config, clock(), chunk=2).sessions == 0
    with database.transaction(readonly=True) as s:
        assert s.scalar(select(func.count()).select_from(UserSession)) == 1


def test_the_worker_sweeps_when_it_prunes(api, user, database, clock, base_config, box):
    from app.workers.webhooks import WebhookSender

    login(api, user)
    clock.advance(seconds=base_config.security.session_idle_timeout + 10)
    sender = WebhookSender(base_config, database, box, clock=clock)
    sender._next_prune = 0  # its hour is up
    sender.claim(10)
    with database.transaction(readonly=True) as s:
        assert s.scalar(select(func.count()).select_from(UserSession)) == 0


def test_clear_domain_queue_works_in_bounded_batches(
    client, api, user, active_domain, database, monkeypatch
):
    from sqlalchemy import event

    from commands.delivery import queue
    from models import Delivery, Event

    domain = active_domain()
    for n in range(7):
        resp = client.post(
            "/api/v1/email",
            headers={"Authorization": f"Bearer {domain.key}"},
            json={
                "From": {"email": "news@example.com"},
                "To": [{"email": f"r{n}@dest.example"}],
                "Subject": "Hello",
                "ContentType": "plain",
                "PlainContent": "Hi",
            },
        )
        assert resp.status_code == 200, resp.get_data(as_text=True)
    monkeypatch.setattr(queue, "CLEAR_BATCH", 3)
    # What each write transaction failed, counted where it commits.
    batches: list[int] = []

    def on_commit(conn):
        batches.append(conn.info.pop("failed", 0))

    def on_update(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith("UPDATE DELIVERIES"):
            rows = len(parameters) if executemany else 1
            conn.info["failed"] = conn.info.get("failed", 0) + rows

    event.listen(database.engine, "commit", on_commit)
    event.listen(database.engine, "after_cursor_execute", on_update)
    try:
        body = api("EmailGateway.ClearDomainQueue", APIKey=user.api_key, DomainID=domain.id)
    finally:
        event.remove(database.engine, "commit", on_commit)
        event.remove(database.engine, "after_cursor_execute", on_update)
    assert body == {"Success": True, "ErrorCode": 0, "ClearedCount": 7}
    assert [n for n in batches if n] == [3, 3, 1]
    with database.transaction(readonly=True) as s:
        assert set(s.scalars(select(Delivery.status))) == {"failed"}
        assert s.scalar(select(func.count()).where(Event.type == "failed")) == 7


def test_an_event_query_holds_at_most_20_terms(api, user):
    def get(query):
        return api(
            "EmailGateway.GetEvents",
            APIKey=user.api_key,
            StartFrom=0,
            RetrieveCount=10,
            Query=query,
        )

    twenty = " ".join(f"to:r{n}@dest.example" for n in range(20))
    assert get(twenty)["Success"] is True
    assert get('subject:"a b c" ' + " ".join(["x"] * 19))["Success"] is True  # quotes: 1 term
    body = get(twenty + " subject:one-more")
    assert (body["Success"], body["ErrorCode"]) == (False, 11)
    assert body["ErrorText"] == "Invalid Query: at most 1000 characters and 20 terms"
    assert get(" ".join(["a"] * 500))["ErrorCode"] == 11
