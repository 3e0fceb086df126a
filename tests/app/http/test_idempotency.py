"""Idempotency-Key on the send routes: the same key and request answer the first answer again
and send nothing twice; another request with the same key is refused; keys are the caller's."""

import threading
from datetime import timedelta

from sqlalchemy import func, select

from commands.housekeeping import sweep
from models import Delivery, IdempotencyRecord, Message


def count(database, table):
    with database.transaction(readonly=True) as s:
        return s.scalar(select(func.count()).select_from(table))


def mail(to="ann@dest.example", subject="Hello"):
    return {
        "From": {"email": "news@example.com"},
        "To": [{"email": to}],
        "Subject": subject,
        "ContentType": "plain",
        "PlainContent": "Hi",
    }


def v1(client, key, body, idem=None):
    headers = {"Authorization": f"Bearer {key}"}
    if idem is not None:
        headers["Idempotency-Key"] = idem
    return client.post("/api/v1/email", headers=headers, json=body)


def test_v1_the_same_key_and_body_answer_again_and_send_once(client, active_domain, database):
    domain = active_domain()
    first = v1(client, domain.key, mail(), "order-1")
    assert first.status_code == 200, first.get_data(as_text=True)
    again = v1(client, domain.key, mail(), "order-1")
    assert (again.status_code, again.get_data()) == (first.status_code, first.get_data())
    assert count(database, Message) == 1 and count(database, Delivery) == 1
    # Without a key, or with another, each request sends.
    assert v1(client, domain.key, mail()).status_code == 200
    other = v1(client, domain.key, mail(), "order-2")
    assert other.status_code == 200 and other.get_json() != first.get_json()
    assert count(database, Message) == 3


def test_v1_the_same_key_with_another_body_is_refused(client, active_domain, database):
    domain = active_domain()
    assert v1(client, domain.key, mail(), "k1").status_code == 200
    refused = v1(client, domain.key, mail(subject="Other"), "k1")
    assert refused.status_code == 409
    assert refused.get_json() == {
        "Errors": [
            {
                "Code": 100409,
                "Message": "Idempotency-Key was already used with a different request",
            }
        ]
    }
    assert count(database, Message) == 1


def test_v1_an_unusable_key_is_a_400(client, active_domain, database):
    domain = active_domain()
    for bad in ["", " ", "x" * 256, "tab\there", "é"]:
        resp = client.post(
            "/api/v1/email",
            headers={"Authorization": f"Bearer {domain.key}", "Idempotency-Key": bad},
            json=mail(),
        )
        assert resp.status_code == 400, bad
        assert resp.get_json()["Errors"][0]["Code"] == 100400, bad
    assert count(database, Message) == 0


def test_keys_belong_to_their_sender_key(client, active_domain, database, make_user):
    one = active_domain("one.example")
    other_user = make_user("bob")
    two = active_domain("two.example", key=other_user.api_key)
    first = v1(client, one.key, {**mail(), "From": {"email": "a@one.example"}}, "same")
    second = v1(client, two.key, {**mail(), "From": {"email": "a@two.example"}}, "same")
    assert first.status_code == second.status_code == 200
    assert first.get_json() != second.get_json()
    assert count(database, Message) == 2


def test_a_refused_send_leaves_the_key_free(client, active_domain, database):
    domain = active_domain()
    bad = {**mail(), "To": []}
    assert v1(client, domain.key, bad, "k").status_code == 400
    ok = v1(client, domain.key, mail(), "k")
    assert ok.status_code == 200
    assert count(database, IdempotencyRecord) == 1


def test_api_php_send_email_honours_the_key(client, active_domain, user, database):
    domain = active_domain()
    params = {"Command": "EmailGateway.SendEmail", "DomainID": domain.id, **mail()}

    def send(idem, auth, **more):
        return client.post(
            "/api.php", headers={"Idempotency-Key": idem}, json={**params, **auth, **more}
        )

    first = send("php-1", {"APIKey": user.api_key})
    assert first.status_code == 200 and first.get_json()["Success"] is True, first.get_json()
    # The same user by a session: the same key and request (credentials are not part of it).
    sid = client.post(
        "/api.php",
        json={"Command": "User.Login", "Username": user.username, "Password": user.password},
    ).get_json()["SessionID"]
    again = send("php-1", {"SessionID": sid})
    assert (again.status_code, again.get_data()) == (200, first.get_data())
    assert count(database, Message) == 1
    refused = send("php-1", {"APIKey": user.api_key}, Subject="Changed")
    assert refused.status_code == 409
    body = refused.get_json()
    assert (body["Success"], body["ErrorCode"]) == (False, 100409)
    bad = send("x" * 300, {"APIKey": user.api_key})
    assert (bad.status_code, bad.get_json()["ErrorCode"]) == (400, 100400)
    assert count(database, Message) == 1


def test_the_answer_is_kept_24_hours_then_swept(
    client, active_domain, database, clock, base_config
):
    domain = active_domain()
    assert v1(client, domain.key, mail(), "day").status_code == 200
    clock.advance(hours=23)
    assert v1(client, domain.key, mail(), "day").status_code == 200
    assert count(database, Message) == 1
    assert sweep(database, base_config, clock()).idempotency == 0
    clock.advance(hours=1, seconds=1)
    # Expired: the key is free again (whether or not the sweep has run).
    assert v1(client, domain.key, mail(subject="New day"), "day").status_code == 200
    assert count(database, Message) == 2
    assert v1(client, domain.key, mail(), "day2").status_code == 200
    clock.advance(hours=25)
    assert sweep(database, base_config, clock(), chunk=1).idempotency == 2
    assert count(database, IdempotencyRecord) == 0


def test_concurrent_duplicates_send_once(flask_app, active_domain, database):
    domain = active_domain()
    answers = []
    start = threading.Barrier(6)

    def go():
        client = flask_app.test_client()
        start.wait()
        resp = v1(client, domain.key, mail(), "race")
        answers.append((resp.status_code, resp.get_data()))

    threads = [threading.Thread(target=go) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(answers) == 6 and len(set(answers)) == 1, answers
    assert answers[0][0] == 200
    assert count(database, Message) == 1 and count(database, Delivery) == 1


def test_the_key_is_ignored_by_commands_that_are_not_sends(client, active_domain, user):
    domain = active_domain()
    for _ in range(2):
        resp = client.post(
            "/api.php",
            headers={"Idempotency-Key": "same"},
            json={
                "Command": "EmailGateway.GetDomain",
                "APIKey": user.api_key,
                "DomainID": domain.id,
            },
        )
        assert resp.get_json()["Success"] is True


def test_records_are_not_kept_past_24_hours_in_the_table(database, clock, base_config):
    with database.transaction() as s:
        for n in range(5):
            s.add(
                IdempotencyRecord(
                    scope="user:1",
                    key=f"k{n}",
                    request_digest="0" * 64,
                    status=200,
                    answer="{}",
                    created_at=clock() - timedelta(hours=24, seconds=n + 1),
                )
            )
    assert sweep(database, base_config, clock(), chunk=2).idempotency == 5
