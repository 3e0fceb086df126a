"""A personalized message for one recipient: its subject and parts rendered with its values.

Used when a message is built (commands/delivery/build.py) and when a send is accepted (its
checks render each recipient's message once, so that what cannot be rendered, or would be
too large, is refused then rather than failing its delivery later). Rendering is pure.
"""

from __future__ import annotations

from dataclasses import replace

from models.payload import Composed
from mta.templating import render

MAX_SUBJECT = 998


def one_line(text: str) -> str:
    """A rendered subject as a header may carry it: its lines joined by spaces, at most
    ``MAX_SUBJECT`` characters."""
    return " ".join(text.splitlines())[:MAX_SUBJECT]


def personalized(payload: Composed, recipient: str) -> Composed:
    """``payload`` as sent to ``recipient``: rendered with the message's values overridden
    by the recipient's; a payload that is not personalized is returned as it is.
    ``mta.templating.TemplateError`` when a part cannot be rendered."""
    p = payload.personalization
    if p is None:
        return payload
    values = p.values_for(recipient)
    return replace(
        payload,
        subject=one_line(render(payload.subject, values, html=False)),
        html=render(payload.html, values, html=True) if payload.html is not None else None,
        text=render(payload.text, values, html=False) if payload.text is not None else None,
        personalization=None,
    )
