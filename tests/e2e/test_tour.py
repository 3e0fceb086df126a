"""The tour a new user takes, end to end against a running `postern serve` on loopback.

A user made with `postern user create`; a sender domain with link, open and unsubscribe
tracking, its DNS records published in the loopback DNS and verified; a sender key; two
webhooks (Postern's event names and Octeth's) to a loopback receiver; one HTML message
delivered to an aiosmtpd MX peer and DKIM-checked; its tracked link followed, its pixel
fetched and its one-click unsubscribe posted; then the event log, the statistics and the
signed webhook POSTs; and a second user who sees none of it.
"""

import email
import email.policy
import json
import re
from collections import Counter
from urllib.parse import urlsplit, urlunsplit

import dkim
import dns.resolver
import httpx

from tests import httpreceiver, smtppeer
from tests.conftest import SECRET_KEY
from tests.dnsserver import dns_txt
from tests.httpreceiver import assert_signed
from tests.livesrv import clean_env, postern, running, wait_until

http_receiver = httpreceiver.http_receiver
smtp_peer = smtppeer.smtp_peer

#: The four events of the tour, by Postern's names and by Octeth's.
OCTETH = {
    "delivered": "delivery",
    "opened": "open",
    "clicked": "click",
    "unsubscribed": "unsubscribe",
}
LINK = "https://shop.example/orders/1?src=mail&amp;n=1"
TARGET = "https://shop.example/orders/1?src=mail&n=1"
HTML = f'<html><body><p>See <a href="{LINK}">your order</a>.</p></body></html>'
BUYER = "buyer@dest.example"
BROWSER = "Tour Mail Client/1.0"


def through_dns(dns_server, url: str) -> tuple[str, dict[str, str]]:
    """``url`` with its host looked up in the loopback DNS, as a mail client would, and the
    Host header that names it."""
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = [dns_server.host]
    resolver.port = dns_server.port
    parts = urlsplit(url)
    address = resolver.resolve(parts.hostname, "A")[0].address
    assert address == "127.0.0.1"
    return urlunsplit(parts._replace(netloc=f"{address}:{parts.port}")), {"Host": parts.netloc}


def test_a_new_users_tour(
    tmp_path, database, base_config, dns_server, smtp_peer, http_receiver, make_user
):
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
    created = postern(
        "user", "create", "alice", "--password", "correct horse", cwd=tmp_path, env=env
    )
    assert created.returncode == 0, created.stderr
    key = json.loads(created.stdout)["APIKey"]

    with running("serve", tmp_path, env) as (base, log), httpx.Client(base_url=base) as http:

        def call(command, api_key=key, **params):
            resp = http.post("/api.php", json={"Command": command, "APIKey": api_key, **params})
            assert resp.status_code == 200, resp.text
            return resp.json()

        # 1. A sender domain with tracking, verified over DNS, and a sender key.
        added = call("EmailGateway.AddDomain", DomainName="shop.example")
        domain_id = added["NewSenderDomainID"]
        flags = {"LinkTracking": 1, "OpenTracking": 1, "UnsubscribeLink": 1}
        updated = call("EmailGateway.UpdateDomain", DomainID=domain_id, **flags)
        assert updated["Success"] is True, updated
        for record in added["Domain"]["DNSRecords"]:
            dns_server.add(record["Host"], record["Type"], record["Value"])
        verified = call("EmailGateway.VerifyDomain", DomainID=domain_id)
        assert verified["Domain"]["Status"] == "Enabled"
        assert all(r["Verified"] for r in verified["DNSVerificationResults"]), verified
        sender = call("EmailGateway.AddAPI", DomainID=domain_id, Description="shop")["APIKey"]
        auth = {"Authorization": f"Bearer {sender['Key']}"}

        # 2. Webhooks: one in Postern's vocabulary (with the sender key), one in Octeth's.
        made = http.post(
            "/api/v1/webhooks",
            headers=auth,
            json={"Event": ",".join(OCTETH), "WebhookURL": http_receiver.url("/postern")},
        )
        assert made.status_code == 200, made.text
        octeth = call(
            "EmailGateway.AddWebhook",
            DomainID=domain_id,
            Event=",".join(OCTETH.values()),
            WebhookURL=http_receiver.url("/octeth"),
        )
        assert octeth["Success"] is True, octeth
        hooks = call("EmailGateway.GetWebhooks", DomainID=domain_id)
        signing_key = hooks["SigningKey"]
        assert re.fullmatch(r"[0-9A-F]{64}", signing_key)
        assert [(w["URL"], w["Events"]) for w in hooks["Webhooks"]] == [
            (http_receiver.url("/postern"), list(OCTETH)),
            (http_receiver.url("/octeth"), list(OCTETH.values())),
        ]

        # 3. One HTML message with a link, to the MX peer, DKIM-signed.
        dns_server.add("dest.example", "MX", "10 mx.dest.example")
        dns_server.add("mx.dest.example", "A", "127.0.0.1")
        sent = http.post(
            "/api/v1/email",
            headers=auth,
            json={
                "Subject": "Your order",
                "ContentType": "html",
                "HtmlContent": HTML,
                "From": {"email": "orders@shop.example", "name": "Shop"},
                "To": [{"email": BUYER, "name": "Buyer"}],
                "Tags": ["order"],
            },
        )
        assert sent.status_code == 200, sent.text
        message_id = sent.json()["MessageID"]
        wait_until(lambda: len(smtp_peer.messages) == 1, timeout=15)
        received = smtp_peer.messages[0]
        assert received.rcpt_tos == [BUYER] and received.mail_from.endswith("@sl.shop.example")
        assert dkim.verify(received.data, dnsfunc=dns_txt(dns_server))
        msg = email.message_from_bytes(received.data, policy=email.policy.default)
        assert msg["Message-ID"] == f"<{message_id}@shop.example>"
        html = msg.get_body(("html",)).get_content()
        tracking = f"http://track-sl.shop.example:{urlsplit(base).port}"
        [click] = re.findall(r'href="([^"]*/t/c/[^"]+)"', html)
        [pixel] = re.findall(r'<img src="([^"]+)"', html)
        unsubscribe = msg["List-Unsubscribe"].strip("<>")
        assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        for url in (click, pixel, unsubscribe):
            assert url.startswith(f"{tracking}/t/"), url
        assert LINK not in html and TARGET not in html

        def events_of_type(event):
            return call("EmailGateway.GetEvents", StartFrom=0, RetrieveCount=1, Event=event)

        # The worker records the delivery once the MX has answered 250.
        wait_until(lambda: events_of_type("delivered")["TotalRecords"] == 1, timeout=10)

        # 4. The reader clicks, opens and unsubscribes in one click, all over HTTP.
        agent = {"User-Agent": BROWSER}
        url, host = through_dns(dns_server, click)
        clicked = httpx.get(url, headers={**host, **agent})
        assert clicked.status_code == 302 and clicked.headers["Location"] == TARGET
        url, host = through_dns(dns_server, pixel)
        opened = httpx.get(url, headers={**host, **agent})
        assert opened.status_code == 200 and opened.content.startswith(b"GIF89a")
        url, host = through_dns(dns_server, unsubscribe)
        gone = httpx.post(url, headers={**host, **agent}, data={"List-Unsubscribe": "One-Click"})
        assert gone.status_code == 200 and BUYER in gone.text
        assert call("Suppression.Check", EmailAddress=BUYER, DomainID=domain_id)["Suppressed"]

        # 5. The event log and the statistics.
        wanted = {"accepted", *OCTETH.values()}  # answers use Octeth's names where it has one
        logged = call("EmailGateway.GetEvents", StartFrom=0, RetrieveCount=100, DomainID=domain_id)
        assert logged["TotalRecords"] == 5
        by_type = {e["event_type"]: e for e in logged["Events"]}
        assert set(by_type) == wanted
        assert all(e["message_id"] == message_id for e in logged["Events"])
        assert all(e["recipient"] == BUYER and e["tags"] == ["order"] for e in logged["Events"])
        assert by_type["delivery"]["delivery_status"]["code"] == 250
        assert by_type["click"]["url"] == TARGET
        for kind in ("open", "click", "unsubscribe"):
            assert (by_type[kind]["ip"], by_type[kind]["user_agent"]) == ("127.0.0.1", BROWSER)
        everywhere = call("EmailGateway.GetEvents", StartFrom=0, RetrieveCount=100)
        assert everywhere["Events"] == logged["Events"]
        for postern_name, octeth_name in OCTETH.items():
            for name in (postern_name, octeth_name):
                one = call(
                    "EmailGateway.GetEvents",
                    StartFrom=0,
                    RetrieveCount=100,
                    DomainID=domain_id,
                    Event=name,
                )
                assert [e["id"] for e in one["Events"]] == [by_type[octeth_name]["id"]]

        v1 = http.get("/api/v1/events", headers=auth, params={"RetrieveCount": 100})
        assert v1.status_code == 200, v1.text
        v1_types = Counter(e["EventType"] for e in v1.json()["Events"])
        assert v1.json()["TotalRecords"] == 5 and v1_types == Counter(wanted)
        assert {e["EventId"] for e in v1.json()["Events"]} == {e["id"] for e in logged["Events"]}
        assert all(e["MessageId"] == message_id for e in v1.json()["Events"])

        buckets = call("EmailGateway.AggrEvents", DomainID=domain_id, AggregatedField="eventType")[
            "AggBuckets"
        ]
        assert {b["key"]: b["doc_count"] for b in buckets} == dict.fromkeys(wanted, 1)

        stats = call("EmailGateway.DomainStats", DomainID=domain_id)
        assert stats["Stats"] == {
            "Sent": 1,
            "Delivered": 1,
            "Bounced": 0,
            "Blocked": 0,
            "Opened": 1,
            "Clicked": 1,
            "Unsubscribed": 1,
            "Complained": 0,
            "NotSpam": 0,
            "AuthFailures": 0,
            "UniqueOpened": 1,
            "UniqueClicked": 1,
        }
        assert stats["TagStats"]["order"] == stats["Stats"]

        # 6. Each webhook gets the four events, signed, in its own vocabulary.
        requests = http_receiver.wait_for(8, timeout=15)
        assert len(requests) == 8
        ids = {e["event_type"]: e["id"] for e in logged["Events"]}
        visitor = {"ip": "127.0.0.1", "user_agent": BROWSER}
        details = {
            "delivery": {
                "smtp_code": 250,
                "enhanced_code": "2.0.0",
                "smtp_text": "2.0.0 OK queued as 1",
            },
            "open": visitor,
            "click": {"url": TARGET, **visitor},
            "unsubscribe": visitor,
        }
        for request in requests:
            assert_signed(request, signing_key)
            assert request.headers["user-agent"] == "Postern-Webhooks/1"
            payload = request.json()
            assert (payload["message_id"], payload["recipient"]) == (message_id, BUYER)
            assert (payload["domain"], payload["tags"]) == ("shop.example", ["order"])
            assert payload["timestamp"].endswith("Z")
            octeth_name = OCTETH.get(payload["event"], payload["event"])
            assert request.headers["webhook-id"] == payload["id"] == ids[octeth_name]
            assert payload["details"] == details[octeth_name], payload
        got = Counter((r.path, r.json()["event"]) for r in requests)
        assert got == Counter(
            [("/postern", name) for name in OCTETH]
            + [("/octeth", name) for name in OCTETH.values()]
        )

        def deliveries(api_key=key, **params):
            return call("EmailGateway.GetWebhookDeliveries", api_key=api_key, **params)

        wait_until(  # the worker records each POST's outcome after the receiver answers
            lambda: deliveries(DomainID=domain_id, Status="succeeded")["TotalRecords"] == 8,
            timeout=10,
        )
        listed = deliveries(DomainID=domain_id)
        assert listed["TotalRecords"] == 8
        assert Counter(d["Event"] for d in listed["Deliveries"]) == Counter(
            [*OCTETH, *OCTETH.values()]
        )
        for d in listed["Deliveries"]:
            assert (d["Status"], d["AttemptCount"], d["LastStatusCode"]) == ("succeeded", 1, 200)
            assert d["EventID"] == ids[OCTETH.get(d["Event"], d["Event"])]

        # 7. A second user sees none of it: the first user's domain is as if it did not exist.
        mallory = make_user("mallory").api_key
        theirs = call("EmailGateway.GetEvents", api_key=mallory, StartFrom=0, RetrieveCount=100)
        assert (theirs["TotalRecords"], theirs["Events"]) == (0, [])
        missing = 10**9
        for command, params in [
            ("EmailGateway.GetEvents", {"StartFrom": 0, "RetrieveCount": 100}),
            ("EmailGateway.GetWebhookDeliveries", {}),
            ("EmailGateway.GetWebhooks", {}),
            ("EmailGateway.DomainStats", {}),
            ("EmailGateway.AggrEvents", {"AggregatedField": "eventType"}),
        ]:
            refused = call(command, api_key=mallory, DomainID=domain_id, **params)
            assert refused["Success"] is False and refused["ErrorCode"] == 2, (command, refused)
            assert refused == call(command, api_key=mallory, DomainID=missing, **params)

    lines = log.read_text().splitlines()
    problems = [line for line in lines if '"level": "ERROR"' in line or "Traceback" in line]
    assert problems == []
