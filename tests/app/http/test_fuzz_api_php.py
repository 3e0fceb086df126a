"""A fuzz of /api.php: every registered command, with random parameter names (the command's
own in any letter case, others, unknown ones), random values (text with control characters
and lone surrogates, huge numbers, floats, NaN, lists, nested objects, nulls, booleans), each
sent as JSON (labelled as such or as a form), as a form (labelled or bare), as multipart or
in the query string, the answer in JSON or XML.

No answer may be a 5xx, every answer must parse (JSON strictly as UTF-8, XML with lxml), and
nothing may be logged at ERROR or with a traceback. The caller is a real user (an
administrator, so that every command gets past authentication) with a real domain.

The run is derandomized (the same requests each time) and bounded: POSTERN_FUZZ_EXAMPLES
requests (1000 by default, about 20 s on SQLite; CI may ask for more).
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from urllib.parse import quote_plus

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree
from sqlalchemy import select

from commands.gateway import schema_of
from commands.registry import all_commands
from commands.users import create_api_key
from models import Domain, User
from models.domains import ENABLED

EXAMPLES = int(os.environ.get("POSTERN_FUZZ_EXAMPLES", "1000"))

# Postern's own commands (other test modules register test commands that fail on purpose).
COMMANDS = [
    c
    for c in all_commands()
    if c.transport == "api.php" and c.handler.__module__.startswith("commands.")
]
NAMES = {c.name: [f.data_key or n for n, f in schema_of(c).fields.items()] for c in COMMANDS}
COMMON = ["APIKey", "SessionID", "DomainID", "Command", "ResponseFormat", "From", "To", "x"]

STRINGS = [
    "",
    " ",
    "0",
    "-1",
    "1",
    "²",
    "١٢",
    "9" * 30,
    "1e309",
    "NaN",
    "Infinity",
    "true",
    "false",
    "null",
    "[]",
    "{}",
    '{"a": [1, {"b": null}]}',
    '[{"email": "a@example.com"}]',
    "2024-01-01",
    "0001-01-01",
    "9999-12-31 23:59:59",
    "1970-01-01",
    "253402300800",
    "a@example.com",
    "news@example.com",
    "<a@b>",
    "http://127.0.0.1:1/hook",
    "ftp://x",
    "html",
    "plain",
    "delivered,opened",
    "subject:hi tag:x to:a@b",
    "example.com",
    "A" * 3000,
    "\ud800",
    "a\udfffb",
    "\x00\x01\x0b\x1f\x7f",
    "line\r\nbreak",
    "<x>&amp;</x>",
    "µ",
    "Ünïcödé 😀",
    "a[b]",
    "From :",
]
SEND = {
    "Subject": "Hello",
    "ContentType": "html",
    "HTMLContent": "<p>Hello <a href='https://shop.example.com/'>shop</a></p>",
    "PlainContent": "Hello",
    "From": {"email": "news@example.com", "name": "News"},
    "To": [{"email": "rcpt@dest.example", "name": "Rcpt"}],
    "CC": [{"email": "cc@dest.example"}],
    "Headers": {"X-Campaign": "spring"},
    "Tags": ["a", "b"],
    "TrackLinks": "true",
    "Attachments": [{"filename": "a.txt", "content": "aGk=", "type": "text/plain"}],
}
BASES: dict[str, dict[str, object]] = {
    "EmailGateway.SendEmail": SEND,
    "EmailGateway.AddWebhook": {"Event": "delivered,opened", "WebhookURL": "http://127.0.0.1:9/h"},
    "EmailGateway.UpdateDomain": {"LinkTracking": "true", "Subdomain": "track"},
    "EmailGateway.AddAPI": {"Description": "app"},
    "EmailGateway.AddSMTP": {"FromEmail": "news@example.com", "FromName": "News"},
    "EmailGateway.GetEvents": {"StartDate": "2024-01-01", "Query": "subject:hi", "Event": "sent"},
    "EmailGateway.AggrEvents": {"AggregatedField": "tag", "StartDate": "2024-01-01"},
    "EmailGateway.DomainStats": {"StartDate": "2024-01-01", "EndDate": "2024-02-01"},
    "Suppression.Add": {"EmailAddress": "a@dest.example", "Reason": "asked"},
    "Suppression.Browse": {"SearchPattern": "a*", "Source": "manual"},
    "User.APIKey.Create": {"Description": "more"},
    "User.Create": {"Username": "someone", "Password": "a long enough password"},
    "User.Login": {"Username": "fuzz", "Password": "correct horse battery"},
}
ODD = "\ud800\udfff\x00\x01\x0b\x1f\x7f\u2028\ufffe\uffff ²١<>&\"'[]{}:;,@.\r\n\tµ😀a1"

text = st.one_of(
    st.sampled_from(STRINGS),
    st.text(max_size=20),
    st.text(alphabet=st.sampled_from(ODD), max_size=20),
)
numbers = st.one_of(
    st.integers(),
    st.sampled_from([0, -1, 1, 2**31 - 1, 2**31, 2**63, -(2**63) - 1, 10**30, 10**300]),
    st.floats(allow_nan=True, allow_infinity=True),
)
scalars = st.one_of(text, numbers, st.booleans(), st.none())
values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=3), st.dictionaries(text, children, max_size=3)
    ),
    max_leaves=8,
)


def _case(name: str):
    return st.sampled_from([name, name.lower(), name.upper(), name.swapcase()])


@st.composite
def requests(draw):
    command = draw(st.sampled_from(COMMANDS)).name
    if draw(st.integers(0, 19)) == 0:
        command = draw(st.one_of(text, st.just(command + "x")))
    elif draw(st.booleans()):
        command = draw(_case(command))
    # Half the time a valid call to start from, so that random values reach the later checks.
    # ... with valid credentials and DomainID, and a few of its values changed.
    based = draw(st.booleans())
    params: dict[str, object] = dict(BASES.get(command, {})) if based else {}
    own = NAMES.get(command, [])
    for _ in range(draw(st.integers(0, 2 if based else 6))):
        name = draw(st.one_of(st.sampled_from(own or COMMON), st.sampled_from(COMMON), text))
        params[draw(_case(name))] = draw(values)
    return {
        "command": command,
        "params": params,
        "domain": draw(st.sampled_from(["int", "str"] + ([] if based else ["none", "none"]))),
        "auth": draw(
            st.sampled_from(
                ["key", "key", "session", "both"] + ([] if based else ["none", "bogus"])
            )
        ),
        "encoding": draw(
            st.sampled_from(
                ["json", "json", "json as form", "form", "bare form", "multipart", "query"]
            )
        ),
        "xml": draw(st.sampled_from([None, None, "query", "body"])),
    }


def _pairs(prefix: str, value: object) -> list[tuple[str, str]]:
    """A value as PHP-style form fields."""
    if isinstance(value, dict):
        if not value:
            return [(prefix, "")]
        return [p for k, v in value.items() for p in _pairs(f"{prefix}[{k}]", v)]
    if isinstance(value, list):
        if not value:
            return [(prefix, "")]
        return [p for i, v in enumerate(value) for p in _pairs(f"{prefix}[{i}]", v)]
    if value is None:
        return [(prefix, "")]
    if isinstance(value, bool):
        return [(prefix, "1" if value else "0")]
    return [(prefix, str(value))]


def _urlencoded(pairs: list[tuple[str, str]]) -> bytes:
    """Form encoding of the pairs; lone surrogates go out as the bytes Python would make of
    them ("surrogatepass"), which are not UTF-8."""
    return "&".join(
        quote_plus(k.encode("utf-8", "surrogatepass"))
        + "="
        + quote_plus(v.encode("utf-8", "surrogatepass"))
        for k, v in pairs
    ).encode("ascii")


def _scrub(text: str) -> str:
    return text.encode("utf-8", "replace").decode("utf-8")


class State:
    """The fuzzing user, its credentials and a domain of it, restored before each request
    (a request may well have deleted the key, ended the session or deleted the domain)."""

    def __init__(self, client, database, box, make_user):
        self.client, self.database, self.box = client, database, box
        self.user = make_user(username="fuzz", is_admin=True)
        self.key = self.user.api_key
        self.session = None
        self.domain_id = None
        self.password_hash = None
        self.requests = 0
        self.succeeded: Counter[str] = Counter()

    def restore(self):
        with self.database.transaction() as s:
            user = s.get(User, self.user.id)
            user.enabled = True
            # What the admin commands may have changed of the fuzzing user itself.
            if self.password_hash is None:
                self.password_hash = user.password_hash
            user.password_hash = self.password_hash
            user.suspended = False
            user.send_quota = user.send_quota_period = user.domain_limit = None
            domain = s.scalars(select(Domain).where(Domain.user_id == user.id)).first()
            self.domain_id = domain.id if domain else None
            if domain is not None:
                domain.status = ENABLED
                domain.suspended = False
        if not self.call({"Command": "User.APIKey.List", "APIKey": self.key}).get("Success"):
            with self.database.transaction() as s:
                _, self.key = create_api_key(s, self.box, s.get(User, self.user.id), "fuzz")
        if self.domain_id is None:
            body = self.call(
                {
                    "Command": "EmailGateway.AddDomain",
                    "APIKey": self.key,
                    "DomainName": "example.com",
                }
            )
            self.domain_id = int(body["NewSenderDomainID"])
            with self.database.transaction() as s:
                s.get(Domain, self.domain_id).status = ENABLED
        if self.session is None or not self.call(
            {"Command": "User.APIKey.List", "SessionID": self.session}
        ).get("Success"):
            self.session = self.call(
                {"Command": "User.Login", "Username": "fuzz", "Password": self.user.password}
            )["SessionID"]

    def call(self, params):
        return self.client.post("/api.php", json=params).get_json()


def test_fuzz_api_php(make_app, database, box, make_user, postern_log):
    # Its own app, with the limits on a user's commands and on failed logins lifted: the fuzz
    # runs far more commands a minute than a user may (and fails many logins), and it is
    # about what every command answers, not about the limits (their own tests are elsewhere).
    client = make_app(
        ratelimit__user_requests=10**9,
        security__login_failures_per_user=10**9,
        security__login_failures_per_address=10**9,
    ).client
    state = State(client, database, box, make_user)

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(requests())
    def one(req):
        state.restore()
        postern_log.clear()
        params: dict[str, object] = {"Command": req["command"]}
        auth = req["auth"]
        if auth in ("key", "both"):
            params["APIKey"] = state.key
        if auth in ("session", "both"):
            params["SessionID"] = state.session
        if auth == "bogus":
            params["APIKey"] = "pu_" + "0" * 40
        if req["domain"] != "none":
            params["DomainID"] = state.domain_id if req["domain"] == "int" else str(state.domain_id)
        params.update(req["params"])
        query = ""
        if req["xml"] == "query":
            query = "?ResponseFormat=XML"
        elif req["xml"] == "body":
            params["ResponseFormat"] = "XML"
        encoding = req["encoding"]
        if encoding.startswith("json"):
            label = (
                "application/json" if encoding == "json" else "application/x-www-form-urlencoded"
            )
            resp = client.post("/api.php" + query, data=json.dumps(params), content_type=label)
        else:
            pairs = [p for k, v in params.items() for p in _pairs(str(k), v)]
            if encoding.endswith("form"):  # labelled, or with no Content-Type at all
                label = "application/x-www-form-urlencoded" if encoding == "form" else None
                resp = client.post("/api.php" + query, data=_urlencoded(pairs), content_type=label)
            elif encoding == "multipart":
                form: dict[str, list[str]] = {}
                for k, v in pairs:
                    form.setdefault(_scrub(k), []).append(_scrub(v))
                resp = client.post(
                    "/api.php" + query, data=form, content_type="multipart/form-data"
                )
            else:
                qs = _urlencoded(pairs).decode("ascii")
                sep = "&" if query else "?"
                resp = client.get("/api.php" + query + (sep + qs if qs else ""))
        state.requests += 1
        raw = resp.get_data()
        shown = f"{req!r} -> {resp.status_code} {raw[:500]!r}"
        assert resp.status_code < 500, shown
        if raw.startswith(b"<?xml"):
            ok = etree.fromstring(raw).findtext("Success") == "1"
        else:
            ok = json.loads(raw.decode("utf-8")).get("Success") is True
        state.succeeded[req["command"]] += ok
        bad = [r for r in postern_log if r.levelno >= logging.ERROR or r.exc_info]
        assert not bad, f"{shown}: logged {bad[0].getMessage()}"

    one()
    print(
        f"\n/api.php fuzz: {state.requests} requests, none answered 5xx;"
        f" {sum(state.succeeded.values())} succeeded: {dict(state.succeeded.most_common())}"
    )
    assert state.requests >= EXAMPLES
