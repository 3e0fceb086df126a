"""The loopback DNS server the tests use as the internet's DNS, checked with dnspython."""

from __future__ import annotations

import base64
import os
import time

import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import dns.resolver
import pytest

from tests import dnsserver
from tests.dnsserver import DNSServer

dns_server = dnsserver.dns_server

# A 2048-bit RSA public key (DER, base64) is 392 characters: the record is about 410.
DKIM_2048 = "v=DKIM1; k=rsa; p=" + base64.b64encode(os.urandom(294)).decode()


def resolver_for(server: DNSServer, lifetime: float = 3) -> dns.resolver.Resolver:
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = ["127.0.0.1"]
    resolver.port = server.port
    resolver.lifetime = lifetime
    resolver.timeout = lifetime
    return resolver


def texts(answer) -> list[str]:
    return sorted(rdata.to_text() for rdata in answer)


def joined(answer) -> list[bytes]:
    return [b"".join(rdata.strings) for rdata in answer]


def test_a_aaaa_mx(dns_server):
    dns_server.add("example.com", "A", "127.0.0.2")
    dns_server.add("example.com", "A", "127.0.0.3")
    dns_server.add("example.com", "AAAA", "::2")
    dns_server.add("example.com", "MX", "10 mx.example.com")
    dns_server.add("example.com.", "MX", "20 mx2.example.com.")
    r = resolver_for(dns_server)

    a = r.resolve("example.com", "A")
    assert texts(a) == ["127.0.0.2", "127.0.0.3"]
    assert a.response.flags & dns.flags.AA
    assert texts(r.resolve("example.com", "AAAA")) == ["::2"]
    mx = r.resolve("example.com", "MX")
    assert sorted((m.preference, m.exchange.to_text()) for m in mx) == [
        (10, "mx.example.com."),
        (20, "mx2.example.com."),
    ]
    assert dns_server.queries == [
        ("example.com", "A"),
        ("example.com", "AAAA"),
        ("example.com", "MX"),
    ]
    assert [t for t, *_ in dns_server.received] == ["udp", "udp", "udp"]


def test_names_are_case_insensitive(dns_server):
    dns_server.add("Mail.Example.COM", "A", "127.0.0.2")
    r = resolver_for(dns_server)
    assert texts(r.resolve("mail.example.com", "A")) == ["127.0.0.2"]
    assert texts(r.resolve("MAIL.EXAMPLE.COM.", "A")) == ["127.0.0.2"]
    assert dns_server.queries == [("mail.example.com", "A")] * 2
    dns_server.remove("MAIL.example.com")
    with pytest.raises(dns.resolver.NXDOMAIN):
        r.resolve("mail.example.com", "A")


def test_cname_is_chased_through_local_names(dns_server):
    dns_server.add("www.example.com", "CNAME", "edge.example.net")
    dns_server.add("edge.example.net", "CNAME", "host.example.org")
    dns_server.add("host.example.org", "A", "127.0.0.9")
    dns_server.add("host.example.org", "TXT", "hello")
    r = resolver_for(dns_server)

    a = r.resolve("www.example.com", "A")
    assert texts(a) == ["127.0.0.9"]
    assert a.canonical_name.to_text() == "host.example.org."
    assert len(a.response.answer) == 3
    assert joined(r.resolve("www.example.com", "TXT")) == [b"hello"]
    cname = r.resolve("www.example.com", "CNAME")
    assert texts(cname) == ["edge.example.net."]
    # The target exists, but not with this type: NODATA.
    with pytest.raises(dns.resolver.NoAnswer):
        r.resolve("www.example.com", "MX")
    # The target does not exist anywhere: NXDOMAIN, with the CNAME in the answer.
    dns_server.set("edge.example.net", "CNAME", ["gone.example.org"])
    with pytest.raises(dns.resolver.NXDOMAIN):
        r.resolve("www.example.com", "A")
    # A loop answers what there is instead of hanging.
    dns_server.set("gone.example.org", "CNAME", ["www.example.com"])
    q = dns.message.make_query("www.example.com", "A")
    response = dns.query.udp(q, "127.0.0.1", port=dns_server.port, timeout=2)
    assert response.rcode() == dns.rcode.NOERROR
    assert len(response.answer) == 3


def test_dkim_sized_txt_comes_back_whole(dns_server):
    name = "s1._domainkey.example.com"
    dns_server.add(name, "TXT", DKIM_2048)
    r = resolver_for(dns_server)

    answer = r.resolve(name, "TXT")
    assert joined(answer) == [DKIM_2048.encode()]
    (rdata,) = answer
    assert [len(s) for s in rdata.strings] == [255, len(DKIM_2048) - 255]

    q = dns.message.make_query(name, "TXT")
    response = dns.query.tcp(q, "127.0.0.1", port=dns_server.port, timeout=2)
    assert joined(response.answer[0]) == [DKIM_2048.encode()]
    assert response.flags & dns.flags.AA
    assert [t for t, *_ in dns_server.received] == ["udp", "tcp"]


def test_answer_too_big_for_udp_is_truncated_and_served_over_tcp(dns_server):
    name = "s2._domainkey.example.com"
    value = "v=DKIM1; k=rsa; p=" + base64.b64encode(os.urandom(600)).decode()  # 818 chars
    dns_server.add(name, "TXT", value)

    q = dns.message.make_query(name, "TXT")
    response = dns.query.udp(q, "127.0.0.1", port=dns_server.port, timeout=2)
    assert response.flags & dns.flags.TC
    assert not response.answer

    r = resolver_for(dns_server)
    assert joined(r.resolve(name, "TXT")) == [value.encode()]
    assert [t for t, *_ in dns_server.received] == ["udp", "udp", "tcp"]

    # A client announcing a 1232-byte EDNS buffer gets it over UDP...
    dns_server.received.clear()
    r.use_edns(0, 0, 1232)
    assert joined(r.resolve(name, "TXT")) == [value.encode()]
    assert [t for t, *_ in dns_server.received] == ["udp"]
    # ...but not something larger.
    dns_server.set(name, "TXT", [value * 2])
    assert joined(r.resolve(name, "TXT")) == [value.encode() * 2]
    assert [t for t, *_ in dns_server.received] == ["udp", "udp", "tcp"]


def test_nxdomain_and_nodata(dns_server):
    dns_server.add("sel._domainkey.example.com", "TXT", "v=DKIM1; p=")
    r = resolver_for(dns_server)
    with pytest.raises(dns.resolver.NXDOMAIN):
        r.resolve("nowhere.example.com", "A")
    with pytest.raises(dns.resolver.NoAnswer):
        r.resolve("sel._domainkey.example.com", "A")
    # Empty non-terminals exist.
    for empty in ("_domainkey.example.com", "example.com", "com"):
        with pytest.raises(dns.resolver.NoAnswer):
            r.resolve(empty, "TXT")
    q = dns.message.make_query("nowhere.example.com", "MX")
    response = dns.query.tcp(q, "127.0.0.1", port=dns_server.port, timeout=2)
    assert response.rcode() == dns.rcode.NXDOMAIN
    assert response.flags & dns.flags.AA


def test_set_and_remove(dns_server):
    r = resolver_for(dns_server)
    dns_server.add("example.com", "A", "127.0.0.2")
    dns_server.add("example.com", "TXT", "v=spf1 -all")
    dns_server.set("example.com", "A", ["127.0.0.4", "127.0.0.5"])
    assert texts(r.resolve("example.com", "A")) == ["127.0.0.4", "127.0.0.5"]
    dns_server.remove("example.com", "A")
    with pytest.raises(dns.resolver.NoAnswer):
        r.resolve("example.com", "A")
    assert joined(r.resolve("example.com", "TXT")) == [b"v=spf1 -all"]
    dns_server.set("example.com", "TXT", [])
    with pytest.raises(dns.resolver.NXDOMAIN):
        r.resolve("example.com", "TXT")
    with pytest.raises(TypeError):
        dns_server.set("example.com", "TXT", "v=spf1 -all")


def test_silence_times_out(dns_server):
    dns_server.add("slow.example.com", "A", "127.0.0.2")
    dns_server.add("fast.example.com", "A", "127.0.0.3")
    dns_server.silence("Slow.Example.com.")
    r = resolver_for(dns_server, lifetime=1)

    started = time.monotonic()
    with pytest.raises(dns.resolver.LifetimeTimeout):
        r.resolve("slow.example.com", "A")
    assert time.monotonic() - started < 3
    assert ("slow.example.com", "A") in dns_server.queries
    assert texts(r.resolve("fast.example.com", "A")) == ["127.0.0.3"]

    q = dns.message.make_query("slow.example.com", "MX")
    with pytest.raises(dns.exception.Timeout):
        dns.query.tcp(q, "127.0.0.1", port=dns_server.port, timeout=0.3)

    dns_server.unsilence("slow.example.com")
    assert texts(r.resolve("slow.example.com", "A")) == ["127.0.0.2"]


def test_clear(dns_server):
    dns_server.add("a.example.com", "A", "127.0.0.2")
    dns_server.silence("b.example.com")
    dns_server.clear()
    r = resolver_for(dns_server, lifetime=1)
    with pytest.raises(dns.resolver.NXDOMAIN):
        r.resolve("a.example.com", "A")
    with pytest.raises(dns.resolver.NXDOMAIN):
        r.resolve("b.example.com", "A")


def test_start_stop_as_context_manager():
    with DNSServer() as server:
        server.add("example.com", "A", "127.0.0.2")
        assert server.host == "127.0.0.1"
        assert texts(resolver_for(server).resolve("example.com", "A")) == ["127.0.0.2"]
    assert not server.errors
    server.stop()  # stopping twice is harmless
