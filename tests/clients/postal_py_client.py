"""Postal's Python client (postal-py) against a Postern: run by tests/app/http/test_postal.py
in an environment of its own (tests/clientvenv.py). Reads {"step", "base", "key", ...} as
JSON on its input; prints what the client answered, as JSON."""

import json
import sys

from postal_py import PostalPyAPI
from postal_py.api.schemas import (
    MessageExpansion,
    RequestAttachmentSchema,
    RequestMessageDetailsSchema,
    RequestMessageSchema,
    RequestRawMessageSchema,
)


def refused(call):
    """The name of the client's exception, or None when the call succeeded."""
    try:
        call()
    except Exception as exc:  # noqa: BLE001 - the test checks which one
        return type(exc).__name__
    return None


def send(postal, args):
    sent = postal.send_message(
        RequestMessageSchema(
            to=["john@dest.example"],
            cc=["mary@dest.example"],
            from_="News <news@example.com>",
            subject="Hi",
            plain_body="Hello",
            tag="t1",
            attachments=[RequestAttachmentSchema(name="a.txt", data=b"abc")],
        )
    )
    raw = postal.send_raw_message(
        RequestRawMessageSchema(
            mail_from="news@example.com", rcpt_to=["john@dest.example"], data=args["raw"]
        )
    )
    other = PostalPyAPI(base_url=args["base"], api_key="wrong")
    return {
        "sent": sent.status,
        "raw": raw.status,
        "not_authorised": refused(
            lambda: postal.send_message(
                RequestMessageSchema(
                    to=["a@dest.example"], from_="x@elsewhere.example", plain_body="x"
                )
            )
        ),
        "bad_key": refused(
            lambda: other.send_message(
                RequestMessageSchema(to=["a@dest.example"], from_="x@example.com", plain_body="x")
            )
        ),
    }


def read(postal, args):
    details = postal.get_message_details(
        RequestMessageDetailsSchema(id=args["id"], expansions={MessageExpansion.all})
    )
    attempts = postal.get_message_deliveries(args["id"])
    return {
        "status": details.data.status.status,
        "rcpt_to": details.data.details.rcpt_to,
        "message_id": details.data.headers.message_id,
        "attempts": [a.status for a in attempts.data],
        "missing": refused(
            lambda: postal.get_message_details(
                RequestMessageDetailsSchema(id=args["id"] + 999, expansions=set())
            )
        ),
    }


def main():
    args = json.load(sys.stdin)
    postal = PostalPyAPI(base_url=args["base"], api_key=args["key"])
    try:
        out = {"send": send, "read": read}[args["step"]](postal, args)
    finally:
        postal.close()
    print(json.dumps(out, default=str))


if __name__ == "__main__":
    main()
