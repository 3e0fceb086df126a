"""A small authoritative DNS server on loopback that tests use as "the internet's DNS".

Built on dnspython. It answers standard queries over UDP and TCP on one port of
127.0.0.1: records when present (chasing CNAMEs between names it holds), NODATA when
the name exists with other types only, NXDOMAIN when it does not exist at all, and
TC over UDP when the answer does not fit (the client retries over TCP)::

    server = DNSServer()
    server.start()
    server.add("example.com", "MX", "10 mx.example.com")
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = [server.host]
    resolver.port = server.port
    ...
    server.stop()

or use the ``dns_server`` fixture.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading
from collections.abc import Iterable

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdataset
import dns.rdatatype
import dns.rdtypes.ANY.TXT
import dns.resolver
import dns.rrset
import pytest

HOST = "127.0.0.1"
UDP_LIMIT = 512  # the largest UDP answer to a client that does not speak EDNS
TXT_CHUNK = 255  # the largest character-string in a TXT record
IN = dns.rdataclass.IN


def _name(name: str | dns.name.Name) -> dns.name.Name:
    if isinstance(name, dns.name.Name):
        return name if name.is_absolute() else name.concatenate(dns.name.root)
    return dns.name.from_text(name)


def _rdtype(rdtype: str | int) -> dns.rdatatype.RdataType:
    if isinstance(rdtype, str):
        return dns.rdatatype.from_text(rdtype)
    return dns.rdatatype.RdataType.make(rdtype)


def _rdata(rdtype: dns.rdatatype.RdataType, value) -> dns.rdata.Rdata:
    """One record from its text. TXT: the value unquoted, split in 255-byte strings;
    a list or tuple gives the character-strings explicitly."""
    if isinstance(value, dns.rdata.Rdata):
        return value
    if rdtype == dns.rdatatype.TXT:
        if isinstance(value, list | tuple):
            strings = [s.encode() if isinstance(s, str) else bytes(s) for s in value]
        else:
            data = value.encode() if isinstance(value, str) else bytes(value)
            strings = [data[i : i + TXT_CHUNK] for i in range(0, len(data), TXT_CHUNK)] or [b""]
        return dns.rdtypes.ANY.TXT.TXT(IN, rdtype, strings)
    # Names in the value (MX exchange, CNAME target) are absolute, with or without the dot.
    return dns.rdata.from_text(IN, rdtype, value, origin=dns.name.root, relativize=False)


def _label(name: dns.name.Name) -> str:
    return name.to_text(omit_final_dot=True).lower()


class DNSServer:
    """An authoritative server for every name, on 127.0.0.1, UDP and TCP on one port."""

    def __init__(self, ttl: int = 300):
        self.host = HOST
        self.port: int | None = None
        self.ttl = ttl
        #: (name, rdtype) of every query received, e.g. ("example.com", "MX"); names
        #: lower-case without the final dot. Silenced queries are recorded too.
        self.queries: list[tuple[str, str]] = []
        #: The same with the transport first: ("udp" | "tcp", name, rdtype).
        self.received: list[tuple[str, str, str]] = []
        #: Exceptions raised while answering (the client got SERVFAIL or nothing).
        self.errors: list[BaseException] = []
        self._zone: dict[dns.name.Name, dict[int, dns.rdataset.Rdataset]] = {}
        self._silenced: set[dns.name.Name] = set()
        self._lock = threading.Lock()
        self._udp: socket.socket | None = None
        self._tcp: socket.socket | None = None
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._conns: list[threading.Thread] = []

    # -- records ------------------------------------------------------------------------

    def add(self, name: str, rdtype: str, value) -> None:
        """Add one record. A second CNAME at a name replaces the first."""
        owner, rdt = _name(name), _rdtype(rdtype)
        rdata = _rdata(rdt, value)
        with self._lock:
            node = self._zone.setdefault(owner, {})
            rdataset = node.get(rdt)
            if rdataset is None:
                rdataset = node[rdt] = dns.rdataset.Rdataset(IN, rdt)
            rdataset.add(rdata, self.ttl)

    def set(self, name: str, rdtype: str, values: Iterable) -> None:
        """Replace the records of that name and type (an empty list removes them)."""
        if isinstance(values, str | bytes):
            raise TypeError("values must be a list of values, not a single value")
        owner, rdt = _name(name), _rdtype(rdtype)
        rdataset = dns.rdataset.Rdataset(IN, rdt)
        for value in values:
            rdataset.add(_rdata(rdt, value), self.ttl)
        with self._lock:
            node = self._zone.setdefault(owner, {})
            node.pop(rdt, None)
            if rdataset:
                node[rdt] = rdataset
            if not node:
                del self._zone[owner]

    def remove(self, name: str, rdtype: str | None = None) -> None:
        """Remove the name's records of that type, or all of them."""
        owner = _name(name)
        with self._lock:
            node = self._zone.get(owner)
            if node is None:
                return
            if rdtype is None:
                node.clear()
            else:
                node.pop(_rdtype(rdtype), None)
            if not node:
                del self._zone[owner]

    def clear(self) -> None:
        """Remove every record and un-silence every name (``queries`` is kept)."""
        with self._lock:
            self._zone.clear()
            self._silenced.clear()

    def silence(self, name: str) -> None:
        """Drop queries for that exact name (any type) unanswered: the client times out."""
        with self._lock:
            self._silenced.add(_name(name))

    def unsilence(self, name: str) -> None:
        with self._lock:
            self._silenced.discard(_name(name))

    # -- answering ----------------------------------------------------------------------

    def _exists(self, name: dns.name.Name) -> bool:
        if self._zone.get(name):
            return True
        return any(owner.is_subdomain(name) for owner in self._zone)

    def _resolve(self, response: dns.message.Message, qname, qtype) -> None:
        """Fill the answer section and rcode, chasing CNAMEs between names held here."""
        name, seen = qname, set()
        while True:
            seen.add(name)
            node = self._zone.get(name, {})
            if qtype == dns.rdatatype.ANY and node:
                for rdataset in node.values():
                    response.answer.append(self._rrset(name, rdataset))
                return
            cname = node.get(dns.rdatatype.CNAME)
            if cname is not None and qtype != dns.rdatatype.CNAME:
                response.answer.append(self._rrset(name, cname))
                name = next(iter(cname)).target
                if name in seen:  # a loop: answer what we have
                    return
                continue
            rdataset = node.get(qtype)
            if rdataset is not None:
                response.answer.append(self._rrset(name, rdataset))
            elif not self._exists(name):
                response.set_rcode(dns.rcode.NXDOMAIN)
            return

    @staticmethod
    def _rrset(name: dns.name.Name, rdataset: dns.rdataset.Rdataset) -> dns.rrset.RRset:
        rrset = dns.rrset.RRset(name, rdataset.rdclass, rdataset.rdtype)
        rrset.update(rdataset)
        return rrset

    def _answer(self, wire: bytes, transport: str) -> bytes | None:
        """The answer to a query in wire format, or None to say nothing."""
        try:
            query = dns.message.from_wire(wire)
        except dns.exception.DNSException:
            return None
        if query.flags & dns.flags.QR:
            return None
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        if query.opcode() != dns.opcode.QUERY:
            response.set_rcode(dns.rcode.NOTIMP)
        elif len(query.question) != 1:
            response.set_rcode(dns.rcode.FORMERR)
        else:
            question = query.question[0]
            qname, qtype = question.name, question.rdtype
            label, type_text = _label(qname), dns.rdatatype.to_text(qtype)
            self.queries.append((label, type_text))
            self.received.append((transport, label, type_text))
            with self._lock:
                if qname in self._silenced:
                    return None
                if question.rdclass != IN:
                    response.set_rcode(dns.rcode.REFUSED)
                else:
                    self._resolve(response, qname, qtype)
        out = response.to_wire(max_size=65535)  # not limited to the EDNS payload
        if transport == "udp":
            limit = max(UDP_LIMIT, query.payload) if query.edns >= 0 else UDP_LIMIT
            if len(out) > limit:
                truncated = dns.message.make_response(query)
                truncated.flags |= dns.flags.AA | dns.flags.TC
                truncated.set_rcode(response.rcode())
                out = truncated.to_wire()
        return out

    def _safe_answer(self, wire: bytes, transport: str) -> bytes | None:
        try:
            return self._answer(wire, transport)
        except Exception as exc:  # recorded for the test; the client gets SERVFAIL
            self.errors.append(exc)
            try:
                query = dns.message.from_wire(wire)
                response = dns.message.make_response(query)
                response.set_rcode(dns.rcode.SERVFAIL)
                return response.to_wire()
            except Exception:
                return None

    # -- serving ------------------------------------------------------------------------

    def start(self) -> DNSServer:
        if self._thread is not None:
            raise RuntimeError("already started")
        for _ in range(50):
            udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                udp.bind((HOST, 0))
                port = udp.getsockname()[1]
                tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                tcp.bind((HOST, port))
                tcp.listen(64)
            except OSError:
                udp.close()
                tcp.close()
                continue
            break
        else:
            raise RuntimeError("no free port for both UDP and TCP on 127.0.0.1")
        self._udp, self._tcp, self.port = udp, tcp, port
        self._wake_r, self._wake_w = socket.socketpair()
        self._thread = threading.Thread(target=self._serve, name=f"dns-{port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is None:
            return
        self._wake_w.send(b"x")  # every serving thread watches the other end
        self._thread.join()
        with self._lock:
            conns = list(self._conns)
        for thread in conns:
            thread.join()
        for sock in (self._udp, self._tcp, self._wake_r, self._wake_w):
            sock.close()
        self._thread = self._udp = self._tcp = self._wake_r = self._wake_w = None
        self._conns = []

    def __enter__(self) -> DNSServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _serve(self) -> None:
        with selectors.DefaultSelector() as sel:
            sel.register(self._udp, selectors.EVENT_READ)
            sel.register(self._tcp, selectors.EVENT_READ)
            sel.register(self._wake_r, selectors.EVENT_READ)
            while True:
                for key, _ in sel.select():
                    if key.fileobj is self._wake_r:
                        return
                    if key.fileobj is self._udp:
                        self._serve_udp()
                    else:
                        self._accept()

    def _serve_udp(self) -> None:
        try:
            wire, peer = self._udp.recvfrom(65535)
        except OSError:
            return
        out = self._safe_answer(wire, "udp")
        if out is not None:
            with contextlib.suppress(OSError):
                self._udp.sendto(out, peer)

    def _accept(self) -> None:
        try:
            conn, _ = self._tcp.accept()
        except OSError:
            return
        thread = threading.Thread(target=self._serve_tcp, args=(conn,), daemon=True)
        with self._lock:
            self._conns = [t for t in self._conns if t.is_alive()]
            self._conns.append(thread)
        thread.start()

    def _serve_tcp(self, conn: socket.socket) -> None:
        """Answer length-prefixed queries on one connection until the client closes it."""
        conn.settimeout(5)
        buf = b""
        with conn, selectors.DefaultSelector() as sel:
            sel.register(conn, selectors.EVENT_READ)
            sel.register(self._wake_r, selectors.EVENT_READ)
            while True:
                ready = {key.fileobj for key, _ in sel.select()}
                if self._wake_r in ready:
                    return
                try:
                    data = conn.recv(65535)
                except OSError:
                    return
                if not data:
                    return
                buf += data
                while len(buf) >= 2 and len(buf) >= 2 + int.from_bytes(buf[:2], "big"):
                    size = int.from_bytes(buf[:2], "big")
                    wire, buf = buf[2 : 2 + size], buf[2 + size :]
                    out = self._safe_answer(wire, "tcp")
                    if out is None:
                        continue
                    try:
                        conn.sendall(len(out).to_bytes(2, "big") + out)
                    except OSError:
                        return


def dns_txt(dns_session):
    """A dkimpy ``dnsfunc`` that asks the loopback DNS server for TXT records."""
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = [dns_session.host]
    resolver.port = dns_session.port

    def lookup(name, timeout=5):
        answer = resolver.resolve(name.decode().rstrip("."), "TXT")
        return b"".join(answer[0].strings)

    return lookup


@pytest.fixture
def dns_server():
    """A running DNSServer, empty; stopped after the test (which fails if it hit an error)."""
    server = DNSServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()
    assert not server.errors, server.errors
