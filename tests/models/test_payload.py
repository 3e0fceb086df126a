"""The stored payload: every form ever kept decodes to the same typed payload."""

import base64
import json
import zlib

import pytest

from models.payload import (
    PACK_ABOVE,
    VERSION,
    Composed,
    File,
    PayloadError,
    Person,
    Submitted,
    decode_payload,
    encode_payload,
)

V1 = {
    "from": {"email": "news@example.com", "name": "News"},
    "to": [{"email": "a@dest.example", "name": "A"}],
    "cc": [{"email": "c@dest.example", "name": ""}],
    "reply_to": [],
    "subject": "Hello",
    "html": "<p>Hi</p>",
    "text": "Hi",
    "headers": {"X-Campaign": "7"},
    "attachments": [
        {
            "filename": "a.txt",
            "content": "aGk=",
            "type": "text/plain",
            "disposition": "attachment",
            "contentid": None,
        }
    ],
    "track_links": True,
    "track_opens": None,
}
EXPECTED = Composed(
    sender=Person("news@example.com", "News"),
    to=(Person("a@dest.example", "A"),),
    cc=(Person("c@dest.example"),),
    subject="Hello",
    html="<p>Hi</p>",
    text="Hi",
    headers={"X-Campaign": "7"},
    attachments=(File("a.txt", "aGk=", "text/plain", "attachment", None),),
    track_links=True,
)
RAW = b"From: a@example.com\r\nSubject: s\r\n\r\nbody\r\n"


def squeezed(data: bytes) -> str:
    return base64.b64encode(zlib.compress(data)).decode()


def test_version_1_plain_json():
    assert decode_payload(json.dumps(V1)) == EXPECTED


def test_version_1_compressed_jz():
    stored = json.dumps({"jz": squeezed(json.dumps(V1).encode())})
    assert decode_payload(stored) == EXPECTED


def test_version_1_raw_and_rawz_submissions():
    raw = {"raw": base64.b64encode(RAW).decode(), "track_links": None, "track_opens": None}
    rawz = {"rawz": squeezed(RAW), "track_links": None, "track_opens": None}
    assert decode_payload(json.dumps(raw)) == Submitted(RAW)
    assert decode_payload(json.dumps(rawz)) == Submitted(RAW)


def test_current_version_round_trips_small_large_and_submitted():
    large = Composed(sender=Person("n@example.com"), html="é" * PACK_ABOVE, to=EXPECTED.to)
    for payload in (EXPECTED, large, Submitted(RAW)):
        stored = encode_payload(payload)
        assert decode_payload(stored) == payload
    assert json.loads(encode_payload(EXPECTED))["v"] == VERSION
    assert "jz" in json.loads(encode_payload(large))  # compressed
    kept = json.loads(encode_payload(Submitted(RAW)))
    assert kept["v"] == VERSION and "rawz" in kept and "raw" not in kept


def test_unreadable_payloads_are_refused_with_payload_error():
    for stored in ('{"v": 99, "rawz": ""}', '{"subject": "no sender"}', "[1]", '{"jz": "?"}'):
        with pytest.raises(PayloadError):
            decode_payload(stored)


def test_a_personalized_payload_is_version_3_and_round_trips():
    from dataclasses import replace

    from models.payload import Personalization

    plain = Composed(sender=Person("a@example.com"), to=(Person("b@dest.example"),), text="x")
    assert json.loads(encode_payload(plain))["v"] == 2  # as before
    assert "personalization" not in json.loads(encode_payload(plain))
    p = Personalization({"name": "Ann", "n": 3}, {"b@dest.example": {"name": "Bob"}})
    personal = replace(plain, text="Hi {{ name }}", personalization=p)
    stored = json.loads(encode_payload(personal))
    assert stored["v"] == 3
    back = decode_payload(encode_payload(personal))
    assert back == personal
    assert back.personalization.values_for("B@dest.example") == {"name": "Bob", "n": 3}
    assert back.personalization.values_for("c@dest.example") == {"name": "Ann", "n": 3}


def test_the_sender_header_and_bounce_are_kept_only_when_set():
    marked = Composed(
        sender=Person("n@example.com"),
        to=EXPECTED.to,
        sender_header=Person("bot@example.com", "Bot"),
        bounce=True,
    )
    stored = json.loads(encode_payload(marked))
    assert stored["sender_header"] == {"email": "bot@example.com", "name": "Bot"}
    assert stored["bounce"] is True and stored["v"] == VERSION
    assert decode_payload(encode_payload(marked)) == marked
    plain = json.loads(encode_payload(EXPECTED))
    assert "sender_header" not in plain and "bounce" not in plain
