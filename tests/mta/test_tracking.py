"""Tracking URLs and rewriting a message's parts (mta.tracking)."""

import base64
import html
import re

from core.crypto import SecretBox
from mta import tracking
from mta.tracking import CLICK, OPEN, UNSUBSCRIBE, Tracking, sign, verify
from tests.conftest import SECRET_KEY

KEY = SecretBox(SECRET_KEY.encode()).tracking_key
TOKEN = "0123456789abcdef0123456789abcdef"
BASE = "https://track-sl.example.com"


def track(links=True, opens=False, unsubscribe=False) -> Tracking:
    return Tracking(BASE, KEY, TOKEN, links, opens, unsubscribe)


def click_targets(text: str) -> list[str]:
    """The original URLs of the click-tracking URLs in ``text``."""
    found = re.findall(r"/t/c/([A-Za-z0-9_-]+)", text)
    return [verify(KEY, CLICK, t)[1] for t in found]


def hrefs(text: str) -> list[str]:
    return [html.unescape(h) for _, h in re.findall(r"""href=(["'])(.*?)\1""", text)]


# -- tokens --------------------------------------------------------------------------------


def test_tokens_name_the_delivery_and_url_and_resist_tampering():
    url = "https://example.com/a?x=1&y=2"
    signed = sign(KEY, CLICK, TOKEN, url)
    assert verify(KEY, CLICK, signed) == (TOKEN, url)
    assert "=" not in signed and len(signed) < 45 + len(url) * 4 // 3
    packed = base64.urlsafe_b64decode(signed + "=" * (-len(signed) % 4))
    swapped = packed[:32] + b"https://evil.example/"
    other_delivery = bytes(16) + packed[16:]
    forged = [
        signed[:-1] + ("A" if signed[-1] != "A" else "B"),
        signed[:20] + ("A" if signed[20] != "A" else "B") + signed[21:],
        signed + "A",
        signed + "==",
        signed[:10] + "!" + signed[10:],
        base64.urlsafe_b64encode(swapped).rstrip(b"=").decode(),
        base64.urlsafe_b64encode(other_delivery).rstrip(b"=").decode(),
        sign(b"another key" * 3, CLICK, TOKEN, url),
        sign(KEY, OPEN, TOKEN),
        "",
        "abc",
    ]
    for bad in forged:
        assert verify(KEY, CLICK, bad) is None, bad
    assert verify(KEY, OPEN, sign(KEY, OPEN, TOKEN)) == (TOKEN, "")
    assert verify(KEY, UNSUBSCRIBE, sign(KEY, OPEN, TOKEN)) is None
    assert verify(KEY, CLICK, sign(KEY, CLICK, TOKEN, "javascript:alert(1)")) is None


def test_what_is_tracked_follows_the_domain_unless_the_message_says():
    assert tracking.wanted(None, None, True, False, False) == (True, False, False)
    assert tracking.wanted(False, True, True, False, False) == (False, True, False)
    assert tracking.wanted(False, None, True, False, False) is None


def test_base_url_is_the_setting_or_the_domains_tracking_host():
    host = "track-sl.example.com"
    assert tracking.base_url("http://127.0.0.1:9/", "https://x", host) == "http://127.0.0.1:9"
    assert tracking.base_url("", "https://mail.example.net", host) == f"https://{host}"
    assert tracking.base_url("", "http://127.0.0.1:8080", host) == f"http://{host}:8080"


# -- rewriting -----------------------------------------------------------------------------


def test_links_in_html_are_rewritten_with_their_unescaped_url():
    source = (
        '<p><a href="https://example.com/a?x=1&amp;y=2">one</a> '
        "<A class=b HREF=http://example.com/B>two</A> "
        "<a title=\"it's > here\" href='\n https://example.com/c\t'>three</a> "
        '<map><area shape="rect" href="https://example.com/area"></map></p>'
    )
    out = tracking.rewrite_html(source, track())
    assert click_targets(out) == [
        "https://example.com/a?x=1&y=2",
        "http://example.com/B",
        "https://example.com/c",
        "https://example.com/area",
    ]
    assert "<A class=b HREF=" in out and '<a title="it\'s > here" href=' in out
    assert all(h.startswith(f"{BASE}/t/c/") for h in hrefs(out))


def test_links_that_are_not_tracked():
    source = (
        '<a href="mailto:a@example.com">m</a><a href="tel:+1555">t</a><a href="#top">a</a>'
        '<a href="/relative">r</a><a href="javascript:void(0)">j</a><a name="x">n</a>'
        '<a href="https://example.com/n" data-postern-notrack>no</a>'
        "<a clicktracking=off href='https://example.com/o'>off</a>"
        '<a CLICKTRACKING="OFF" href="https://example.com/p" >off</a>'
        f'<a href="{BASE}/t/u/xyz">ours</a>'
        '<!-- <a href="https://example.com/comment">c</a> -->'
        "<script>document.write('<a href=\"https://example.com/script\">')</script>"
        '<style>a[href="https://example.com/style"]{}</style>'
    )
    out = tracking.rewrite_html(source, track())
    assert "/t/c/" not in out
    assert "notrack" not in out.lower() and "clicktracking" not in out.lower()
    assert out == (
        source.replace(" data-postern-notrack", "")
        .replace(" clicktracking=off", "")
        .replace(' CLICKTRACKING="OFF"', "")
    )


def test_outlook_conditional_comments_are_rewritten():
    source = '<!--[if mso]><a href="https://example.com/mso">o</a><![endif]-->'
    assert click_targets(tracking.rewrite_html(source, track())) == ["https://example.com/mso"]


def test_pixel_and_footer_go_before_the_end_of_the_body():
    out = tracking.rewrite_html(
        "<html><body><p>Hi</p></BODY></html>", track(links=False, opens=True, unsubscribe=True)
    )
    body, end = out.split("</BODY>")
    assert end == "</html>"
    unsubscribe, pixel = hrefs(body)[0], re.search(r'<img src="([^"]+)"', body).group(1)
    assert body.index("Unsubscribe") < body.index("<img")
    assert verify(KEY, UNSUBSCRIBE, unsubscribe.rsplit("/", 1)[1]) == (TOKEN, "")
    assert pixel.endswith(".gif") and verify(KEY, OPEN, pixel.rsplit("/", 1)[1][:-4])
    assert 'width="1" height="1" alt=""' in body
    # No </body>: appended.
    assert tracking.rewrite_html("<p>Hi</p>", track(opens=True)).startswith("<p>Hi</p><img ")


def test_links_in_plain_text():
    text = (
        "See https://example.com/x. Or (https://example.com/y) and "
        "https://example.com/wiki/A_(b)! <https://example.com/z> mailto:a@example.com"
    )
    out = tracking.rewrite_text(text, track(unsubscribe=True))
    assert click_targets(out) == [
        "https://example.com/x",
        "https://example.com/y",
        "https://example.com/wiki/A_(b)",
        "https://example.com/z",
    ]
    assert re.search(r"/t/c/[\w-]+\. Or \(https://", out)
    assert re.search(r"/t/c/[\w-]+\) and https://", out)
    assert re.search(r"/t/c/[\w-]+! <https://", out)
    assert out.rstrip().endswith(track().unsubscribe_url())
    assert "mailto:a@example.com" in out


def test_headers_for_one_click_unsubscribe():
    html_part, text, headers = tracking.apply(track(unsubscribe=True), None, "Hi")
    assert html_part is None and text.startswith("Hi\n\nUnsubscribe: ")
    assert headers == {
        "List-Unsubscribe": f"<{track().unsubscribe_url()}>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    }
    assert tracking.apply(track(), "<a href='https://a.example/'>", None)[2] == {}
