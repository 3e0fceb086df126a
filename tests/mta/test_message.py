"""mta.message: the MIME structure and headers of built messages, and custom header checks."""

from __future__ import annotations

import email
import email.policy
import email.utils
from datetime import UTC, datetime, timedelta, timezone

import pytest

from mta.message import (
    RESERVED_HEADERS,
    TRACE_HEADERS,
    Address,
    Attachment,
    MessageSpec,
    build_message,
    header_problem,
    html_to_text,
)

DATE = datetime(2025, 4, 1, 14, 30, 5, tzinfo=timezone(timedelta(hours=2)))
PDF = b"%PDF-1.4\n" + bytes(range(256)) * 40
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(255, -1, -1)) * 8
HTML = (
    "<html><head><title>Order</title><style>p { color: red }</style></head><body>"
    "<h1>Hello&nbsp;Zoë</h1><p>Your   order\n is <b>ready</b>. "
    '<a href="https://shop.example.com/o/1">View order</a></p>'
    "<ul><li>one</li><li>two &amp; three</li></ul>"
    '<p>Thanks<br>The shop <img src="cid:logo@shop" alt="Logo"></p>'
    "<script>alert('x')</script></body></html>"
)


def make_spec(**changes) -> MessageSpec:
    spec = MessageSpec(
        sender=Address("zoe@example.com", "Zoë Ünïcode"),
        to=[Address("jurgen@example.org", "Jürgen Groß"), Address("bob@example.net")],
        cc=[Address("carol@example.org", "Carol, Finance")],
        reply_to=[Address("help@example.com", "Help"), Address("sales@example.com")],
        subject="Grüße — your order",
        html=None,
        text="Hello Zoë,\nyour order is ready.\n",
        attachments=[],
        headers={},
        tags=[],
        message_id="<0b7c4e2a9f@example.com>",
        date=DATE,
    )
    for name, value in changes.items():
        setattr(spec, name, value)
    return spec


def parse(raw: bytes) -> email.message.EmailMessage:
    return email.message_from_bytes(raw, policy=email.policy.default)


def assert_wire_clean(raw: bytes) -> None:
    """CRLF line ends only, no line over 998 octets, nothing but 7-bit ASCII."""
    assert raw.endswith(b"\r\n")
    lines = raw[:-2].split(b"\r\n")
    assert not any(b"\r" in line or b"\n" in line for line in lines)
    assert max(len(line) for line in lines) <= 998
    assert raw.isascii()


def content(part) -> str | bytes:
    """A part's decoded content, with text line ends as Python writes them."""
    value = part.get_content()
    return value.replace("\r\n", "\n") if isinstance(value, str) else value


def header_names(msg) -> list[str]:
    return [name for name, _ in msg.items()]


def test_text_only_is_a_single_text_plain_part():
    raw = build_message(make_spec())
    assert_wire_clean(raw)
    msg = parse(raw)
    assert not msg.is_multipart()
    assert msg.get_content_type() == "text/plain"
    assert msg.get_content_charset() == "utf-8"
    assert msg["Content-Transfer-Encoding"] in ("quoted-printable", "base64")
    assert content(msg) == "Hello Zoë,\nyour order is ready.\n"


def test_ascii_text_with_short_lines_stays_7bit():
    msg = parse(build_message(make_spec(text="plain words\n")))
    assert msg["Content-Transfer-Encoding"] == "7bit"
    assert content(msg) == "plain words\n"


def test_html_only_gets_a_plain_alternative_derived_from_it():
    raw = build_message(make_spec(html=HTML, text=None))
    assert_wire_clean(raw)
    msg = parse(raw)
    assert msg.get_content_type() == "multipart/alternative"
    plain, html = msg.get_payload()
    assert plain.get_content_type() == "text/plain"
    assert html.get_content_type() == "text/html"
    assert content(html) == HTML + "\n"  # the email package ends text with a line break
    assert content(plain).rstrip("\n") == html_to_text(HTML)
    assert "View order (https://shop.example.com/o/1)" in plain.get_content()
    assert "alert" not in plain.get_content()


def test_html_and_text_make_an_alternative_with_both_as_given():
    msg = parse(build_message(make_spec(html=HTML, text="Own plain text ✓\n")))
    assert msg.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in msg.get_payload()] == ["text/plain", "text/html"]
    assert content(msg.get_payload()[0]) == "Own plain text ✓\n"
    assert content(msg.get_payload()[1]) == HTML + "\n"


def test_inline_parts_go_with_the_html_and_attachments_make_it_mixed():
    attachments = [
        Attachment("logo.png", PNG, "image/png", "inline", "logo@shop"),
        Attachment("Rechnung März 2025.pdf", PDF, "application/pdf"),
        Attachment("notes.txt", "héllo\n".encode(), "text/plain"),
    ]
    raw = build_message(make_spec(html=HTML, attachments=attachments))
    assert_wire_clean(raw)
    msg = parse(raw)
    assert msg.get_content_type() == "multipart/mixed"
    alternative, pdf, notes = msg.get_payload()
    assert alternative.get_content_type() == "multipart/alternative"
    plain, related = alternative.get_payload()
    assert plain.get_content_type() == "text/plain"
    assert related.get_content_type() == "multipart/related"
    html, logo = related.get_payload()
    assert html.get_content_type() == "text/html"
    assert logo.get_content_type() == "image/png"
    assert logo.get_content_disposition() == "inline"
    assert logo["Content-ID"] == "<logo@shop>"
    assert logo.get_content() == PNG
    assert logo["Content-Transfer-Encoding"] == "base64"

    assert pdf.get_content_type() == "application/pdf"
    assert pdf.get_content_disposition() == "attachment"
    assert pdf.get_filename() == "Rechnung März 2025.pdf"
    assert pdf.get_content() == PDF
    assert pdf["Content-Transfer-Encoding"] == "base64"
    assert notes.get_filename() == "notes.txt"
    assert notes.get_payload(decode=True) == "héllo\n".encode()
    assert [p.get_filename() for p in msg.iter_attachments()] == [
        "Rechnung März 2025.pdf",
        "notes.txt",
    ]


def test_inline_parts_without_html_travel_as_attachments():
    inline = Attachment("logo.png", PNG, "image/png", "inline", "logo")
    msg = parse(build_message(make_spec(attachments=[inline])))
    assert msg.get_content_type() == "multipart/mixed"
    text, logo = msg.get_payload()
    assert text.get_content_type() == "text/plain"
    assert logo.get_content() == PNG


def test_disposition_is_case_insensitive_and_needs_a_content_id_to_be_related():
    attachments = [
        Attachment("a.png", PNG, "image/png", "Inline", "a"),
        Attachment("b.png", PNG, "image/png", "inline", ""),
    ]
    msg = parse(build_message(make_spec(html=HTML, attachments=attachments)))
    alternative, b = msg.get_payload()
    _, related = alternative.get_payload()
    assert related.get_payload()[1]["Content-ID"] == "<a>"
    assert b.get_content_disposition() == "inline"
    assert "Content-ID" not in b


def test_html_without_inline_parts_has_no_related():
    attachment = Attachment("a.bin", b"\x00\x01\x02")
    msg = parse(build_message(make_spec(html=HTML, attachments=[attachment])))
    alternative, part = msg.get_payload()
    assert [p.get_content_type() for p in alternative.get_payload()] == [
        "text/plain",
        "text/html",
    ]
    assert part.get_content_type() == "application/octet-stream"
    assert content(part) == b"\x00\x01\x02"


@pytest.mark.parametrize("content_type", ["", "pdf", "multipart/mixed", "message/rfc822", "a b/c"])
def test_unusable_attachment_types_become_octet_stream(content_type):
    msg = parse(build_message(make_spec(attachments=[Attachment("x", b"data", content_type)])))
    part = msg.get_payload()[1]
    assert part.get_content_type() == "application/octet-stream"
    assert content(part) == b"data"


def test_headers_in_order_with_addresses_and_encoded_words():
    spec = make_spec(
        tags=["welcome", "spring-sale"],
        headers={"X-Campaign": "spring", "Content-Language": "de"},
        extra_headers={"List-Unsubscribe-Post": "List-Unsubscribe=One-Click"},
    )
    raw = build_message(spec)
    assert_wire_clean(raw)
    msg = parse(raw)
    assert header_names(msg) == [
        "From",
        "To",
        "Cc",
        "Reply-To",
        "Subject",
        "Date",
        "Message-ID",
        "MIME-Version",
        "X-Postern-Tags",
        "X-Campaign",
        "Content-Language",
        "List-Unsubscribe-Post",
        "Content-Type",
        "Content-Transfer-Encoding",
    ]
    assert msg["From"].addresses[0].display_name == "Zoë Ünïcode"
    assert msg["From"].addresses[0].addr_spec == "zoe@example.com"
    assert [(a.display_name, a.addr_spec) for a in msg["To"].addresses] == [
        ("Jürgen Groß", "jurgen@example.org"),
        ("", "bob@example.net"),
    ]
    assert [(a.display_name, a.addr_spec) for a in msg["Cc"].addresses] == [
        ("Carol, Finance", "carol@example.org")
    ]
    assert [a.addr_spec for a in msg["Reply-To"].addresses] == [
        "help@example.com",
        "sales@example.com",
    ]
    assert msg["Subject"] == "Grüße — your order"
    assert b"=?utf-8?" in raw.split(b"\r\n\r\n")[0]
    assert msg["Date"].datetime == DATE
    assert email.utils.parsedate_to_datetime(str(msg["Date"])) == DATE
    assert msg["Message-ID"] == "<0b7c4e2a9f@example.com>"
    assert msg["MIME-Version"] == "1.0"
    assert msg["X-Postern-Tags"] == "welcome, spring-sale"
    assert msg["X-Campaign"] == "spring"
    assert msg["Content-Language"] == "de"
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert "Bcc" not in msg
    assert b"\r\nbcc:" not in raw.lower()


def test_no_tags_no_tags_header_and_empty_lists_no_header():
    msg = parse(build_message(make_spec(cc=[], reply_to=[])))
    assert "X-Postern-Tags" not in msg
    assert "Cc" not in msg
    assert "Reply-To" not in msg
    assert "To" in msg


def test_date_and_message_id_are_always_present():
    now = datetime.now(UTC).replace(microsecond=0)
    msg = parse(build_message(make_spec(date=now, message_id="<a.b-c@mail.example.com>")))
    assert msg["Date"].datetime == now
    assert msg["Message-ID"] == "<a.b-c@mail.example.com>"


def test_long_message_id_stays_on_one_line():
    mid = "<" + "0b7c" * 30 + "@mail.example.com>"
    raw = build_message(make_spec(message_id=mid))
    assert b"\r\nMessage-ID: " + mid.encode() + b"\r\n" in raw


def test_idn_domains_are_written_as_a_labels():
    msg = parse(build_message(make_spec(to=[Address("info@bücher.de", "Bücher")])))
    assert msg["To"].addresses[0].addr_spec == "info@xn--bcher-kva.de"


def test_non_ascii_local_part_is_refused():
    with pytest.raises(ValueError, match="SMTPUTF8"):
        build_message(make_spec(to=[Address("jörg@example.com")]))


def test_long_unbreakable_header_values_are_not_encoded():
    url = "<https://track.example.com/unsubscribe/" + "a1b2c3" * 30 + ">"
    value = f"{url}, <mailto:unsubscribe+42@example.com?subject=unsubscribe>"
    raw = build_message(make_spec(extra_headers={"List-Unsubscribe": value}))
    assert_wire_clean(raw)
    assert url.encode() in raw
    assert parse(raw)["List-Unsubscribe"] == value


def test_long_header_values_are_folded_at_whitespace():
    value = " ".join(f"word{i}" for i in range(100))
    raw = build_message(make_spec(headers={"X-Words": value}))
    assert_wire_clean(raw)
    head = raw.split(b"\r\n\r\n")[0].decode()
    start = head.index("X-Words:")
    folded = head[start : head.index("\r\nContent-Type")]
    assert folded.count("\r\n ") > 5
    assert all(len(line) <= 78 for line in folded.split("\r\n"))
    assert parse(raw)["X-Words"] == value


def test_longest_acceptable_header_still_fits_a_line():
    value = "x" * 997
    name = "X-" + "N" * 74
    assert header_problem(name, value) is None
    raw = build_message(make_spec(headers={name: value}))
    assert_wire_clean(raw)
    assert parse(raw)[name].strip() == value


def test_non_ascii_custom_header_values_are_encoded():
    raw = build_message(make_spec(headers={"X-Note": "Grüße aus Köln"}, tags=["größe"]))
    assert_wire_clean(raw)
    msg = parse(raw)
    assert msg["X-Note"] == "Grüße aus Köln"
    assert msg["X-Postern-Tags"] == "größe"


def test_long_lines_and_non_ascii_bodies_are_encoded_7bit():
    text = "é" * 3000 + "\n" + "a" * 5000 + "\n" + "short\n"
    html = "<p>" + "x" * 4000 + "</p>" + "<p>" + "ü " * 2000 + "</p>"
    raw = build_message(make_spec(text=text, html=html))
    assert_wire_clean(raw)
    plain, rich = parse(raw).get_payload()
    assert content(plain) == text
    assert content(rich) == html + "\n"


def test_lines_end_in_crlf_everywhere():
    spec = make_spec(html=HTML, attachments=[Attachment("a.pdf", PDF, "application/pdf")])
    raw = build_message(spec)
    assert raw.count(b"\n") == raw.count(b"\r\n")
    assert raw.count(b"\r") == raw.count(b"\r\n")


def test_subject_and_names_with_line_breaks_are_joined():
    spec = make_spec(
        subject="one\r\nBcc: evil@example.com", sender=Address("a@example.com", "A\nB")
    )
    msg = parse(build_message(spec))
    assert msg["Subject"] == "one Bcc: evil@example.com"
    assert msg["From"].addresses[0].display_name == "A B"
    assert "Bcc" not in msg


def test_no_body_at_all_is_an_empty_text_part():
    msg = parse(build_message(make_spec(text=None, html=None)))
    assert msg.get_content_type() == "text/plain"
    assert content(msg).strip() == ""


@pytest.mark.parametrize(
    "changes",
    [
        {"headers": {"Bcc": "x@example.com"}},
        {"headers": {"X-Evil": "a\r\nBcc: x@example.com"}},
        {"extra_headers": {"List-Unsubscribe": "<https://x>\r\nBcc: x@example.com"}},
        {"extra_headers": {"Bad Name": "x"}},
        {"date": datetime(2025, 4, 1, 12, 0)},
        {"message_id": "no-brackets@example.com"},
        {"message_id": "<two words@example.com>"},
    ],
)
def test_build_refuses_bad_input(changes):
    with pytest.raises(ValueError):
        build_message(make_spec(**changes))


# -- header_problem --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value", "reason"),
    [
        ("From", "x@example.com", "Postern sets"),
        ("bcc", "x@example.com", "Postern sets"),
        ("DKIM-Signature", "v=1", "only the servers"),
        ("ARC-Seal", "i=1", "only the servers"),
        ("Received", "from x", "only the servers"),
        ("Return-Path", "<x@y>", "only the servers"),
        ("Authentication-Results", "mx; spf=pass", "only the servers"),
        ("From ", "x@example.com", "`From :` form is refused"),
        ("From\t", "x@example.com", "`From :` form is refused"),
        ("List-Unsubscribe", "<https://x>", "Postern sets"),
        ("Content-Type", "text/plain", "Postern sets"),
        ("X-Postern-Tags", "a", "Postern sets"),
        ("x-postern-anything", "a", "Postern sets"),
        ("X-Bad Name", "v", "printable ASCII"),
        ("X-Bad:Name", "v", "printable ASCII"),
        ("X-Ümlaut", "v", "printable ASCII"),
        ("X-Tab\tName", "v", "printable ASCII"),
        ("", "v", "empty"),
        ("X-" + "a" * 75, "v", "longer than 76"),
        ("X-Evil", "a\r\nBcc: x@example.com", "CR, LF or NUL"),
        ("X-Evil", "a\nb", "CR, LF or NUL"),
        ("X-Evil", "a\rb", "CR, LF or NUL"),
        ("X-Evil", "a\0b", "CR, LF or NUL"),
        ("X-Evil\r\nBcc", "x", "CR, LF or NUL"),
        ("X-Long", "v" * 999, "longer than 998"),
        ("X-Long", "v " * 499 + "v", "longer than 998"),
        ("X-Word", "v" * 998, "too long"),
    ],
)
def test_header_problem_rejects(name, value, reason):
    problem = header_problem(name, value)
    assert problem is not None
    assert reason in problem


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("X-Campaign", "spring"),
        ("List-Id", "<news.example.com>"),
        ("In-Reply-To", "<abc@example.com>"),
        ("Content-Language", "de-DE"),
        ("X-Note", "Grüße aus Köln"),
        ("X-Empty", ""),
        ("X-" + "a" * 74, "v"),
        ("X-Long", "v " * 499),
        ("X-Word", "v" * 997),
        ("x_weird!#$%&'*+-.^`|~", "ok"),
    ],
)
def test_header_problem_accepts(name, value):
    assert header_problem(name, value) is None


def test_reserved_headers_are_lower_case_and_complete():
    assert all(name == name.lower() for name in RESERVED_HEADERS | TRACE_HEADERS)
    assert {"from", "bcc", "list-unsubscribe-post", "mime-version"} <= RESERVED_HEADERS
    assert {"dkim-signature", "received", "return-path", "authentication-results"} <= (
        TRACE_HEADERS
    )


def test_trace_headers_are_refused_unless_asked_for():
    assert header_problem("ARC-Seal", "i=1", trace_ok=True) is None
    assert header_problem("X-Ok", "v", trace_ok=True) is None
    assert header_problem("From", "x@example.com", trace_ok=True)  # still Postern's


# -- html_to_text ----------------------------------------------------------------------------


def test_html_to_text_renders_readable_text():
    assert html_to_text(HTML) == (
        "Hello Zoë\n\n"
        "Your order is ready. View order (https://shop.example.com/o/1)\n\n"
        "one\ntwo & three\n\n"
        "Thanks\nThe shop Logo"
    )


@pytest.mark.parametrize(
    ("html", "text"),
    [
        ("", ""),
        ("plain", "plain"),
        ("<p>a</p><p>b</p>", "a\n\nb"),
        ("a<br>b<br/><br>c", "a\nb\n\nc"),
        ("<div>a</div><div><div>b</div></div>", "a\nb"),
        ("<ol>\n <li>x</li>\n <li>y</li>\n</ol>", "x\ny"),
        ("<style>.a{}</style><script>var x = '<p>';</script>visible", "visible"),
        ("&lt;tag&gt; &amp; &#233;&eacute; &quot;q&quot;", '<tag> & éé "q"'),
        ("  lots \n\t of   space  ", "lots of space"),
        ('<a href="https://x.example">https://x.example</a>', "https://x.example"),
        ('<a href="mailto:a@example.com">a@example.com</a>', "a@example.com"),
        ('<a href="#top">Top</a> <a href="javascript:void(0)">JS</a>', "Top JS"),
        ('<a href="https://x.example/p"><img src="x.png"></a>', "https://x.example/p"),
        ('<a href="https://x.example/p">Go  <b>now</b></a>', "Go now (https://x.example/p)"),
        ("<table><tr><td>a</td><td>b</td></tr><tr><td>c</td></tr></table>", "a b\nc"),
        # Loose HTML, as mail templates have it.
        ("<b>a</b> <i>b</i>", "a b"),
        ("<p>x</p> <p>y</p>", "x\n\ny"),
        ("<p>a<p>b", "a\n\nb"),
        ("<p>unclosed <b>bold", "unclosed bold"),
        ("x < y and y > z", "x < y and y > z"),
        ("Tom &amp Jerry &copy 2024", "Tom & Jerry \u00a9 2024"),
        ("<!-- c --> a <!doctype html>", "a"),
        ("<title>T</title>body", "body"),
        ("<html><body>a</body></html> tail", "a tail"),
        ("a&nbsp;&nbsp;b \t\u2003 c", "a b c"),
        ("<p>\u00e9 \u00f1 \U0001f600</p>", "\u00e9 \u00f1 \U0001f600"),
        (
            '<meta charset="iso-8859-1"><p>Gr\u00fc\u00dfe \u2014 ok</p>',
            "Gr\u00fc\u00dfe \u2014 ok",
        ),
    ],
)
def test_html_to_text_cases(html, text):
    assert html_to_text(html) == text


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("a\x0bb", "line breaks"),
        ("a\x0cb", "line breaks"),
        ("a\x1cb", "line breaks"),
        ("Grüße\x85", "line breaks"),
        ("a\u2028b", "line breaks"),
        ("\ud800", "lone surrogate at character 1"),
        ("ok \udfff", "lone surrogate at character 4"),
    ],
)
def test_header_values_the_message_could_not_hold_are_refused(value, reason):
    problem = header_problem("X-Note", value)
    assert problem is not None and reason in problem
    with pytest.raises(ValueError, match=reason):
        build_message(make_spec(headers={"X-Note": value}))


def test_lone_surrogate():
    from mta.message import lone_surrogate

    assert lone_surrogate("plain ascii") is None
    assert lone_surrogate("Grüße 😀") is None
    assert lone_surrogate("ab\ud800") == 2
    assert lone_surrogate("\udc00\ud800") == 0


def test_twenty_long_tags_are_folded_into_the_tags_header():
    tags = [f"tag{i:02d}-" + "x" * 94 for i in range(20)]  # the most a send may have
    raw = build_message(make_spec(tags=tags))
    assert_wire_clean(raw)
    assert parse(raw)["X-Postern-Tags"] == ", ".join(tags)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"From: a@example.com\r\nNot a header\r\n\r\nHi\r\n", "line 2 is neither"),
        (b"From: a@example.com\nNot a header\n\nHi\n", "line 2 is neither"),
        (b"From : a@example.com\r\n\r\nHi\r\n", "line 1: a header name must be followed"),
        (b"From: a@example.com\r\nSubject\t: x\r\n\r\nHi\r\n", "line 2: a header name"),
        (b" folded\r\nFrom: a@example.com\r\n\r\nHi\r\n", "line 1 begins with a space"),
        (b"From: a@example.com\r\nX-\xc3\xa9: y\r\n\r\nHi\r\n", "line 2 is neither"),
        (b"From: a@example.com\r\n: no name\r\n\r\nHi\r\n", "line 2 is neither"),
        (b"From sender@example.com Mon Jan 1\r\nFrom: a@example.com\r\n\r\n", "line 1"),
        (b"From: a@example.com\r\n\r\r\nHi\r\n", "line 2 is neither"),
    ],
)
def test_header_blocks_the_signer_cannot_read(data, reason):
    from mta.message import header_block_problem

    problem = header_block_problem(data)
    assert problem is not None and problem.startswith(reason), problem


@pytest.mark.parametrize(
    "data",
    [
        b"From: a@example.com\r\nSubject: x\r\n folded\r\n\tagain\r\n\r\nNot a header\r\n",
        b"From: a@example.com\nSubject: x\n\nbody\n",
        b"From: a@example.com\r\n",  # no body
        b"From:a@example.com\r\nX-Empty:\r\nX-Odd!#$%&'*+-.^`|~: v\r\n\r\n",
        b"From: a@example.com\r\nX-8bit: Gr\xc3\xbc\xc3\x9fe\r\n\r\n",
        b"\r\nno headers at all\r\n",
        b"",
    ],
)
def test_header_blocks_the_signer_reads(data):
    from mta.message import header_block_problem

    assert header_block_problem(data) is None


def test_a_header_block_found_readable_is_signed():
    """Random header blocks: every one header_block_problem lets through (with a From
    header, which the relay requires) is one the DKIM signer takes."""
    import random

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    from mta.message import header_block_problem
    from mta.signing import SigningKey, sign_message

    pem = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    keys = [SigningKey("example.com", "key1", "ed25519", pem)]
    pieces = [b"From: a@example.com", b"From : a@example.com", b"Subject: x", b"Bad line"]
    pieces += [b" cont", b"\tcont", b"X-\xc3\xa9: y", b"Subject: \xc3\xa9", b"Bcc: z", b""]
    pieces += [b":novalue", b"X-A:", b"\x00", b"X:\r", b"From sender", b"X-B: a\rb", b"\r"]
    rnd = random.Random(5)
    readable = 0
    for _ in range(3000):
        lines = [rnd.choice(pieces) for _ in range(rnd.randint(1, 6))]
        end = rnd.choice([b"\r\n", b"\n"])
        data = end.join([b"From: a@example.com", *lines]) + end + end + b"body" + end
        if header_block_problem(data) is None:
            readable += 1
            sign_message(data, keys)  # raises for a header block it cannot read
    assert readable > 300
