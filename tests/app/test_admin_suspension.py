"""A suspension end to end: the SMTP relay refuses the user's mail, and the delivery worker
leaves their queued mail alone until an administrator enables them again."""

import smtplib

import pytest

from tests.app.smtp import test_relay as relay_tests
from tests.app.workers import test_delivery as delivery_tests

smtp_peer, mx, worker_for = delivery_tests.smtp_peer, delivery_tests.mx, delivery_tests.worker_for
deliveries = delivery_tests.deliveries
relay_for, relay, credential = relay_tests.relay_for, relay_tests.relay, relay_tests.credential
NO_VERIFY, message = relay_tests.NO_VERIFY, relay_tests.message


@pytest.fixture
def admin(make_user):
    return make_user("root", is_admin=True)


def send(client, key, to):
    return client.post(
        "/api/v1/email",
        headers={"Authorization": f"Bearer {key}"},
        json={
            "Subject": "Hello",
            "ContentType": "plain",
            "PlainContent": "Hello there",
            "From": {"email": "news@example.com", "name": "News"},
            "To": [{"email": to}],
        },
    )


def admin_call(api, admin, command, **params):
    body = api(command, APIKey=admin.api_key, **params)
    assert body["Success"] is True, body
    return body


@pytest.mark.parametrize("what", ["user", "domain"])
def test_queued_mail_waits_while_suspended_and_goes_out_after(
    what, api, admin, user, active_domain, client, mx, worker_for, database
):
    domain = active_domain()
    first = send(client, domain.key, "a@dest.example").get_json()["MessageID"]
    if what == "user":
        admin_call(api, admin, "Admin.User.Update", UserID=user.id, Status="Suspended")
        refused = 12
    else:
        admin_call(api, admin, "Admin.Domain.Suspend", DomainID=domain.id)
        refused = 32
    assert send(client, domain.key, "b@dest.example").get_json()["Errors"][0]["Code"] == refused
    worker = worker_for(mx)
    assert worker.run_once() == 0  # not claimed: queued, due, waiting
    assert mx.messages == []
    [d] = deliveries(database, first)
    assert (d.status, d.attempts) == ("queued", 0) and d.due_at is not None
    queue = admin_call(api, admin, "Admin.Queue")["Users"]
    assert [(u["UserID"], u["Queued"], u["Due"]) for u in queue] == [(user.id, 1, 1)]
    if what == "user":
        admin_call(api, admin, "Admin.User.Update", UserID=user.id, Status="Enabled")
    else:
        admin_call(api, admin, "Admin.Domain.Enable", DomainID=domain.id)
    assert worker.run_once() == 1
    [d] = deliveries(database, first)
    assert d.status == "delivered"
    assert [m.rcpt_tos for m in mx.messages] == [["a@dest.example"]]
    assert admin_call(api, admin, "Admin.Queue")["Users"] == []


def test_another_users_mail_goes_out_while_one_is_suspended(
    api, admin, user, make_user, active_domain, client, mx, worker_for, database
):
    domain = active_domain()
    bob = make_user("bob")
    bobs = active_domain("example.com", key=bob.api_key)
    held = send(client, domain.key, "a@dest.example").get_json()["MessageID"]
    sent = send(client, bobs.key, "b@dest.example").get_json()["MessageID"]
    admin_call(api, admin, "Admin.User.Update", UserID=user.id, Status="Suspended")
    assert worker_for(mx).run_once() == 1
    assert deliveries(database, sent)[0].status == "delivered"
    assert deliveries(database, held)[0].status == "queued"


def test_the_relay_refuses_a_suspended_users_mail_at_mail_from(
    relay, credential, api, admin, user, database
):
    admin_call(api, admin, "Admin.User.Update", UserID=user.id, Status="Suspended")
    with smtplib.SMTP("127.0.0.1", relay.ports["submission"], timeout=10) as c:
        c.starttls(context=NO_VERIFY)
        c.login(*credential)  # still logs in: suspended, not disabled
        with pytest.raises(smtplib.SMTPSenderRefused) as refused:
            c.send_message(message(), to_addrs=["rcpt@dest.example"])
        assert (refused.value.smtp_code, refused.value.smtp_error) == (
            550,
            b"5.7.1 Account disabled",
        )
        admin_call(api, admin, "Admin.User.Update", UserID=user.id, Status="Enabled")
        assert c.send_message(message(), to_addrs=["rcpt@dest.example"]) == {}
        [domain] = api("EmailGateway.GetDomains", APIKey=user.api_key)["Domains"]
        admin_call(api, admin, "Admin.Domain.Suspend", DomainID=int(domain["DomainID"]))
        with pytest.raises(smtplib.SMTPSenderRefused) as refused:
            c.send_message(message(), to_addrs=["rcpt@dest.example"])
        assert refused.value.smtp_code == 550
        assert refused.value.smtp_error == b"5.7.1 Domain is not activated"
    assert len(relay_tests.queued(database)) == 1


def test_a_suspension_between_mail_from_and_data_refuses_the_message(
    gateway, api, admin, user, credential, database
):
    from commands.keys.smtp_credentials import authenticate_smtp

    caller, _ = authenticate_smtp(database, *credential)
    admin_call(api, admin, "Admin.User.Update", UserID=user.id, Status="Suspended")
    [result] = gateway.submit_many([(caller, ["rcpt@dest.example"], bytes(message()))])
    assert result.code == 12
    assert relay_tests.queued(database) == []


@pytest.mark.parametrize("what", ["user", "domain"])
def test_postals_api_answers_server_suspended(what, api, admin, user, active_domain, client):
    domain = active_domain()
    if what == "user":
        admin_call(api, admin, "Admin.User.Update", UserID=user.id, Status="Suspended")
    else:
        admin_call(api, admin, "Admin.Domain.Suspend", DomainID=domain.id)
    for key in (domain.key, user.api_key):
        body = client.post(
            "/api/v1/send/message",
            headers={"X-Server-API-Key": key},
            json={"to": ["a@dest.example"], "from": "news@example.com", "plain_body": "x"},
        ).get_json()
        assert (body["status"], body["data"]["code"]) == ("error", "ServerSuspended"), body
