"""Open, click and unsubscribe tracking: signed tracking URLs, and rewriting a message's parts.

A tracking URL carries a token: base64url (no padding) of the delivery's token (16 bytes),
a MAC (HMAC-SHA256 truncated to 16 bytes, keyed by a key derived from the secret key, over
the kind, the delivery token and, for clicks, the URL) and, for clicks, the original URL.
The URL travels signed, so a click on a valid link redirects even when its delivery is gone,
and an altered token names nothing and redirects nowhere.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import html
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

CLICK, OPEN, UNSUBSCRIBE = b"c", b"o", b"u"
MAC_BYTES = 16  # 128 bits
TOKEN_BYTES = 16  # Delivery.token: 32 hex digits
MAX_URL = 2048  # longer links are left as they are (the tracking URL would be too long)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class Tracking:
    """What rewriting one delivery's message needs, as plain data (it may cross processes)."""

    base_url: str  # where tracking URLs point, without a trailing slash
    key: bytes  # the MAC key (SecretBox.tracking_key)
    token: str  # the delivery's token
    links: bool
    opens: bool
    unsubscribe: bool

    def click_url(self, url: str) -> str:
        return f"{self.base_url}/t/c/{sign(self.key, CLICK, self.token, url)}"

    def open_url(self) -> str:
        return f"{self.base_url}/t/o/{sign(self.key, OPEN, self.token)}.gif"

    def unsubscribe_url(self) -> str:
        return f"{self.base_url}/t/u/{sign(self.key, UNSUBSCRIBE, self.token)}"


def wanted(
    track_links: bool | None,
    track_opens: bool | None,
    link_tracking: bool,
    open_tracking: bool,
    unsubscribe_link: bool,
) -> tuple[bool, bool, bool] | None:
    """(links, opens, unsubscribe) for a message: the domain's settings, overridden by the
    message's TrackLinks/TrackOpens (None: not given); None when nothing is tracked."""
    flags = (
        link_tracking if track_links is None else bool(track_links),
        open_tracking if track_opens is None else bool(track_opens),
        unsubscribe_link,
    )
    return flags if any(flags) else None


def base_url(configured: str, public_url: str, tracking_host: str) -> str:
    """``tracking.base_url`` when set; else the domain's tracking host, with the scheme and
    port of ``http.public_url`` (the tracking host's DNS record points at its host)."""
    if configured:
        return configured.rstrip("/")
    parts = urlsplit(public_url)
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{tracking_host}{port}"


# -- tokens --------------------------------------------------------------------------------


def _mac(key: bytes, kind: bytes, raw_token: bytes, url: bytes) -> bytes:
    return hmac.digest(key, kind + raw_token + url, "sha256")[:MAC_BYTES]


def sign(key: bytes, kind: bytes, token: str, url: str = "") -> str:
    """The URL-safe token of a tracking URL for delivery ``token`` (and ``url``, for clicks)."""
    raw = bytes.fromhex(token)
    data = url.encode()
    return _encode(raw + _mac(key, kind, raw, data) + data)


def _encode(packed: bytes) -> str:
    return base64.urlsafe_b64encode(packed).rstrip(b"=").decode("ascii")


def verify(key: bytes, kind: bytes, signed: str) -> tuple[str, str] | None:
    """(delivery token, URL) named by a tracking token, or None if it was not made by us."""
    if len(signed) > 4 * MAX_URL:
        return None
    try:
        packed = base64.urlsafe_b64decode(signed + "=" * (-len(signed) % 4))
    except (binascii.Error, ValueError):
        return None
    if _encode(packed) != signed:  # stray characters, padding, or unused bits changed
        return None
    if len(packed) < TOKEN_BYTES + MAC_BYTES:
        return None
    raw, mac = packed[:TOKEN_BYTES], packed[TOKEN_BYTES : TOKEN_BYTES + MAC_BYTES]
    data = packed[TOKEN_BYTES + MAC_BYTES :]
    if kind != CLICK and data:
        return None
    if not hmac.compare_digest(mac, _mac(key, kind, raw, data)):
        return None
    try:
        url = data.decode()
    except UnicodeDecodeError:  # pragma: no cover - we only ever sign text
        return None
    if kind == CLICK and not _trackable(url):
        return None
    return raw.hex(), url


def can_track(token: str) -> bool:
    """Whether a delivery token fits in tracking URLs (every token Postern makes does)."""
    return len(token) == 2 * TOKEN_BYTES and all(c in "0123456789abcdef" for c in token)


def _trackable(url: str) -> bool:
    return (
        url[:8].lower().startswith(("http://", "https://"))
        and len(url) <= MAX_URL
        and not _CONTROL.search(url)
    )


# -- rewriting -----------------------------------------------------------------------------

# Comments (but not Outlook's conditional comments, whose content is shown), the raw text of
# script and style, and the start of <a> and <area> tags.
_SCAN = re.compile(
    r"<(?:(?P<skip>!--(?!\[if).*?(?:-->|\Z)|(?P<raw>script|style)\b.*?(?:</(?P=raw)\s*>|\Z))"
    r"|(?:a|area)(?=[\s/>]))",
    re.IGNORECASE | re.DOTALL,
)
# One attribute inside a start tag (HTML's tokenizer rules: a quote only opens a value after =).
_ATTR = re.compile(r"""[\s/]*([^\s/>][^\s/>=]*)(?:\s*=\s*("[^"]*"|'[^']*'|[^\s>]*))?""")
_TAG_END = re.compile(r"[\s/]*>")
_NOTRACK = "data-postern-notrack"
_TAB_NEWLINE = str.maketrans("", "", "\t\n\r")
_C0_SPACE = "".join(map(chr, range(33)))
_TEXT_URL = re.compile(r"""https?://[^\s<>"'\x00-\x1f\x7f]+""", re.IGNORECASE)
_TRAILING = ".,;:!?"
_CLOSERS = {")": "(", "]": "["}
_BODY_END = re.compile(r"</body\s*>", re.IGNORECASE)


def apply(
    track: Tracking, html_text: str | None, text: str | None
) -> tuple[str | None, str | None, dict[str, str]]:
    """The HTML and plain parts rewritten for one delivery, and the headers to add.

    A plain part left None is derived from the rewritten HTML when the message is built.
    """
    if html_text is not None:
        html_text = rewrite_html(html_text, track)
    if text is not None:
        text = rewrite_text(text, track)
    headers: dict[str, str] = {}
    if track.unsubscribe:  # RFC 8058 one-click unsubscribe
        headers["List-Unsubscribe"] = f"<{track.unsubscribe_url()}>"
        headers["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    return html_text, text, headers


def rewrite_html(html_text: str, track: Tracking) -> str:
    """``html_text`` with its links tracked (if asked), an unsubscribe footer and the open
    pixel (if asked) before ``</body>``."""
    if track.links:
        html_text = _rewrite_links(html_text, track)
    tail = ""
    if track.unsubscribe:
        url = html.escape(track.unsubscribe_url())
        tail += (
            '<p style="margin:24px 0 0;font-size:12px;color:#888888;text-align:center">'
            f'<a href="{url}" style="color:#888888">Unsubscribe</a></p>'
        )
    if track.opens:
        tail += (
            f'<img src="{html.escape(track.open_url())}" width="1" height="1" alt="" '
            'style="display:block;width:1px;height:1px;border:0">'
        )
    if tail:
        ends = list(_BODY_END.finditer(html_text))
        at = ends[-1].start() if ends else len(html_text)
        html_text = html_text[:at] + tail + html_text[at:]
    return html_text


def rewrite_text(text: str, track: Tracking) -> str:
    """A plain part with its links tracked (if asked) and an unsubscribe line (if asked)."""
    if track.links:
        text = _TEXT_URL.sub(lambda m: _text_link(m.group(), track), text)
    if track.unsubscribe:
        text = f"{text.rstrip()}\n\nUnsubscribe: {track.unsubscribe_url()}\n"
    return text


def _text_link(found: str, track: Tracking) -> str:
    url = found
    while url:  # punctuation ending a sentence, or a closing bracket opened before the URL
        last = url[-1]
        if last in _TRAILING or (last in _CLOSERS and url.count(_CLOSERS[last]) < url.count(last)):
            url = url[:-1]
        else:
            break
    if not _should_track(url, track):
        return found
    return track.click_url(url) + found[len(url) :]


def _should_track(url: str, track: Tracking) -> bool:
    return _trackable(url) and not url.startswith(track.base_url + "/t/")


def _rewrite_links(source: str, track: Tracking) -> str:
    out: list[str] = []
    done = 0  # source[:done] is in out already
    pos = 0
    while True:
        found = _SCAN.search(source, pos)
        if found is None:
            break
        pos = found.end()
        if found.group("skip") is not None:
            continue  # a comment, or script or style text
        edits, pos = _tag_edits(source, pos, track)
        for start, end, replacement in edits:
            out.append(source[done:start])
            out.append(replacement)
            done = end
    out.append(source[done:])
    return "".join(out)


def _tag_edits(source: str, pos: int, track: Tracking) -> tuple[list[tuple[int, int, str]], int]:
    """The changes to one <a>/<area> start tag whose attributes begin at ``pos``, and where
    the tag ends."""
    href: tuple[int, int, str] | None = None
    notrack: list[tuple[int, int]] = []
    while True:
        end = _TAG_END.match(source, pos)
        if end is not None or pos >= len(source):
            break
        attr = _ATTR.match(source, pos)
        if attr is None or attr.end() == pos:
            return [], pos + 1
        name = attr.group(1).lower()
        value = attr.group(2)
        if name == "href" and href is None and value is not None:
            href = (attr.start(2), attr.end(2), value)
        elif name == _NOTRACK or (
            name == "clicktracking" and value is not None and _unquote(value).lower() == "off"
        ):
            notrack.append((attr.start(), attr.end()))
        pos = attr.end()
    stop = end.end() if end is not None else len(source)
    if notrack:
        return [(start, stop_, "") for start, stop_ in notrack], stop
    if href is None:
        return [], stop
    # As browsers read an href: tabs and line breaks dropped, spaces and controls trimmed.
    url = _unquote(href[2]).translate(_TAB_NEWLINE).strip(_C0_SPACE)
    if not _should_track(url, track):
        return [], stop
    return [(href[0], href[1], f'"{html.escape(track.click_url(url))}"')], stop


def _unquote(value: str) -> str:
    if value[:1] in ("'", '"'):
        value = value[1:-1]
    return html.unescape(value) if "&" in value else value
