"""FreshMail v3 (POST /v3/messaging/emails): answers, every 400 listed, 401, and FreshMail's
own Python client pointed at a live local Postern."""

import json

import pytest

ROUTE = "/v3/messaging/emails"
UNAUTHORIZED = {"message": "Unauthorized user. Access denied"}


def bearer(key):
    return {"Authorization": f"Bearer {key}"}


def body(**changes):
    b = {
        "recipients": [{"email": "ann@dest.example", "personalization": {"name": "Ann"}}],
        "from": {"email": "news@example.com", "name": "News"},
        "subject": "Hi $$name$$",
        "contents": [{"type": "text/plain", "body": "Hello {{ name }}"}],
    }
    b.update(changes)
    return {k: v for k, v in b.items() if v is not None}


@pytest.fixture
def domain(active_domain):
    return active_domain()


def test_the_seeds_curl_example_with_a_sender_key(client, domain, api, user):
    seed = {
        "recipients": [
            {
                "email": "recipient@example.com",
                "name": "Adam Recipient",
                "personalization": {"key1": "value1", "key2": "value2"},
                "headers": {"x-custom-header-1": "Custom message header"},
            }
        ],
        "from": {"name": "John Sender", "email": "sender@example.com"},
        "subject": "Message subject",
        "contents": [
            {"type": "text/html", "body": "<p>sample HTML</p>"},
            {"type": "text/plain", "body": "same text"},
        ],
        "headers": {
            "x-custom-header-1": "Custom message header",
            "x-custom-header-2": "Custom message header",
        },
    }
    resp = client.post(
        ROUTE,
        headers={**bearer(domain.key), "Content-Type": "application/json"},
        data=json.dumps(seed),
    )
    assert resp.status_code == 201, resp.get_json()
    ((answer),) = resp.get_json()
    assert answer["email"] == "recipient@example.com"
    # The id is the message id the Octeth routes show.
    events = client.get(
        "/api/v1/events", headers=bearer(domain.key), query_string={"MessageID": answer["id"]}
    ).get_json()["Events"]
    assert events and all(e["MessageId"] == answer["id"] for e in events)


def test_every_problem_is_listed(client, domain):
    resp = client.post(
        ROUTE,
        headers=bearer(domain.key),
        json={
            "recipients": [
                {"email": "ok@dest.example"},
                {"email": "not an address"},
                {"name": "no email"},
                {"email": "x@dest.example", "personalization": [1], "headers": {"Bad": "v"}},
            ],
            "from": {"email": "nope"},
            "templateHash": "abc",
            "contents": [{"type": "text/rtf", "body": ""}],
            "headers": {"Subject": "x", "X-Fine": 1},
            "attachments": [{"name": "", "content": "%%%"}] * 11,
            "replyTo": {"email": "bad"},
        },
    )
    assert resp.status_code == 400
    errors = resp.get_json()["errors"]
    for expected in [
        "recipients[1].email: This value is not a valid email address.",
        "recipients[2].email: This value should not be blank.",
        "recipients[3].personalization: This value should be of type object.",
        "from.email: This value is not a valid email address.",
        "contents: Give either templateHash or contents, not both.",
        "contents[0].type: The value you selected is not a valid choice (text/html, text/plain).",
        "contents[0].body: This value should not be blank.",
        "headers.Subject: Header name must start with X-.",
        "headers.X-Fine: This value should be of type string.",
        "attachments: This collection should contain 10 elements or less.",
        "attachments[0].name: This value should not be blank.",
        "attachments[0].content: This value is not valid base64.",
        "replyTo.email: This value is not a valid email address.",
    ]:
        assert expected in errors, (expected, errors)


@pytest.mark.parametrize(
    "changes, expected",
    [
        ({"recipients": []}, "recipients: This value should not be blank."),
        (
            {"recipients": [{"email": f"a{i}@dest.example"} for i in range(101)]},
            "recipients: This collection should contain 100 elements or less.",
        ),
        ({"from": None}, "from: This value should not be blank."),
        ({"subject": None}, "subject: This value should not be blank."),
        ({"contents": None}, "contents: This value should not be blank."),
        ({"templateHash": "0" * 32, "contents": None}, "templateHash: Template not found."),
        # Seen: 500 on PostgreSQL, which cannot compare a text holding NUL.
        ({"templateHash": "ab\x00cd", "contents": None}, "templateHash: Template not found."),
        ({"templateHash": "a" * 65, "contents": None}, "templateHash: Template not found."),
        ({"from": {"email": "a@elsewhere.example"}}, "from.email: The address must be at"),
        (
            {"recipients": [{"email": "a@dest.example", "headers": {"Reply-To": "x"}}]},
            "recipients[0].headers.Reply-To: Header name must start with X-.",
        ),
    ],
)
def test_each_400(client, domain, changes, expected):
    resp = client.post(ROUTE, headers=bearer(domain.key), json=body(**changes))
    assert resp.status_code == 400
    errors = resp.get_json()["errors"]
    assert any(e.startswith(expected) for e in errors), errors


def test_a_template_syntax_error_is_refused(client, domain):
    resp = client.post(
        ROUTE,
        headers=bearer(domain.key),
        json=body(contents=[{"type": "text/html", "body": "<p>\n{% if x %}never closed</p>"}]),
    )
    assert resp.status_code == 400
    (error,) = resp.get_json()["errors"]
    assert "HTMLContent" in error and "line" in error, error
    hostile = client.post(
        ROUTE,
        headers=bearer(domain.key),
        json=body(contents=[{"type": "text/plain", "body": "{{ ''.__class__ }}"}]),
    )
    assert hostile.status_code == 400


def test_a_suppressed_recipient_is_refused_in_the_list(client, domain, api, user):
    added = api(
        "Suppression.Add",
        APIKey=user.api_key,
        DomainID=domain.id,
        EmailAddress="gone@dest.example",
    )
    assert added["Success"], added
    resp = client.post(
        ROUTE,
        headers=bearer(domain.key),
        json=body(recipients=[{"email": "ok@dest.example"}, {"email": "gone@dest.example"}]),
    )
    assert resp.status_code == 400
    assert resp.get_json()["errors"][0].startswith("recipients[1].email: ")


@pytest.mark.parametrize("headers", [{}, bearer("nope"), {"Authorization": "Basic abc"}])
def test_401(client, domain, headers):
    resp = client.post(ROUTE, headers=headers, json=body())
    assert resp.status_code == 401 and resp.get_json() == UNAUTHORIZED


def test_a_user_key_sends_only_from_the_users_domains(client, domain, user, make_user):
    resp = client.post(ROUTE, headers=bearer(user.api_key), json=body())
    assert resp.status_code == 201
    other = make_user("other")
    resp = client.post(ROUTE, headers=bearer(other.api_key), json=body())
    assert resp.status_code == 400
    assert resp.get_json()["errors"] == [
        "from.email: The sender's domain is not one of your enabled domains."
    ]


@pytest.mark.parametrize(
    "data", [b"", b"not json", b"[1,2]", b'{"recipients": "x"}', b"\xff\xfe", b"[" * 5000]
)
def test_bad_bodies_are_json_400s(client, domain, data):
    resp = client.post(ROUTE, headers=bearer(domain.key), data=data)
    assert resp.status_code == 400 and isinstance(resp.get_json()["errors"], list)


def test_other_methods_and_paths_answer_json(client, domain):
    resp = client.get(ROUTE, headers=bearer(domain.key))
    assert resp.status_code == 405 and "message" in resp.get_json()
    resp = client.post("/v3/messaging/nothing", headers=bearer(domain.key))
    assert resp.status_code == 404 and "message" in resp.get_json()


def test_idempotency_key_answers_the_first_answer(client, domain):
    headers = {**bearer(domain.key), "Idempotency-Key": "fm-1"}
    first = client.post(ROUTE, headers=headers, json=body())
    again = client.post(ROUTE, headers=headers, json=body())
    assert first.status_code == again.status_code == 201
    assert first.get_json() == again.get_json()


@pytest.fixture
def live(served):
    return served


def freshmail_sender(key, host):
    from freshmail.sender.sender import FreshmailSender
    from freshmail.transport.api.email import EmailApiTransport

    transport = EmailApiTransport(key)
    ex = transport._EmailApiTransport__request_executor
    ex._RequestExecutor__scheme = "http"
    ex._RequestExecutor__host = host
    return FreshmailSender(transport)


def test_freshmails_python_client(live, domain):
    from freshmail.messaging.email.attachment import Base64Attachment
    from freshmail.messaging.email.mailbag import MailBag
    from freshmail.transport.request_executor import ClientException

    sender = freshmail_sender(domain.key, live)
    bag = MailBag(
        tos=[
            {"email": "ann@dest.example", "name": "Ann", "personalization": {"name": "Ann"}},
            {"email": "bob@dest.example", "personalization": {"name": "Bob"}},
        ],
        from_={"email": "news@example.com", "name": "News"},
        subject="Hi $$name$$",
        contents={"html": "<p>Hi {{ name }}</p>", "text": "Hi $$name$$"},
        headers={"X-Campaign": "c1"},
        attachments=[Base64Attachment("a.txt", "aGVsbG8=")],
    )
    response = sender.send(bag)
    assert response.is_success()
    data = response.get_data()
    assert [d["email"] for d in data] == ["ann@dest.example", "bob@dest.example"]
    with pytest.raises(ClientException) as refused:
        sender.send(
            MailBag(
                tos=[{"email": "bad"}],
                from_={"email": "news@example.com"},
                subject="s",
                contents={"text": "x"},
            )
        )
    assert "recipients[0].email: This value is not a valid email address." in str(refused.value)
    with pytest.raises(ClientException) as unauthorised:
        freshmail_sender("wrong", live).send(bag)
    assert "Unauthorized user" in str(unauthorised.value)


def test_deeper_checks_name_their_field(client, domain):
    resp = client.post(
        ROUTE,
        headers=bearer(domain.key),
        json=body(
            recipients=[
                {"email": "a@dest.example"},
                {"email": "b@dest.example", "personalization": {"a-b": 1}},
            ]
        ),
    )
    assert resp.status_code == 400
    (error,) = resp.get_json()["errors"]
    assert error.startswith("recipients[1].personalization: "), error
    resp = client.post(ROUTE, headers=bearer(domain.key), json=body(subject="a\nb"))
    assert resp.status_code == 400
    assert resp.get_json()["errors"][0].startswith("subject: "), resp.get_json()


def test_the_rate_limit_answers_429(make_app, active_domain):
    call = make_app(ratelimit__requests=1)
    d = active_domain()
    first = call.client.post(ROUTE, headers=bearer(d.key), json=body())
    second = call.client.post(ROUTE, headers=bearer(d.key), json=body())
    assert first.status_code == 201
    assert second.status_code == 429 and "message" in second.get_json()
    assert int(second.headers["Retry-After"]) > 0
