"""Infobip's email reports and logs: GET /email/1/reports and /email/4/reports (each report
handed out once), GET /email/1/logs and /email/4/logs (the last 48 hours, any number of
times).

Read the query here (``ReportQuery``, ``LogQuery``); the commands (commands/sending/
infobip_reports.py) find the caller's messages; the answers are rendered in the route
version's shape, errors as the send routes give them (app/http/infobip.py).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from flask import Response, jsonify, request

from app.http.infobip import bp, run_infobip
from commands.sending.infobip_reports import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    InfobipReport,
    LogQuery,
    ReportQuery,
)
from commands.sending.infobip_status import GENERAL_STATUSES, infobip_time

PRICE = {"pricePerMessage": 0, "currency": "EUR"}
_MAX_VALUE = 255  # characters of a filter value
_MAX_VALUES = 100  # values of a repeated filter


class _Problems(dict[str, list[str]]):
    def add(self, name: str, text: str) -> None:
        self.setdefault(name, []).append(text)


def _one(name: str, problems: _Problems) -> str | None:
    values = request.args.getlist(name)
    if not values:
        return None
    value = values[-1].strip()
    if len(value) > _MAX_VALUE:
        problems.add(name, f"size must be between 0 and {_MAX_VALUE}")
        return None
    if "\x00" in value:  # no stored value holds one (PostgreSQL text cannot)
        problems.add(name, _NUL)
        return None
    return value or None


_NUL = "must not contain NUL characters"


def _many(name: str, problems: _Problems) -> tuple[str, ...]:
    """A repeatable filter: ``name=a&name=b`` (the Python clients), ``name[]=a`` (axios, under
    the Node SDK)."""
    given = request.args.getlist(name) + request.args.getlist(name + "[]")
    values = [v.strip() for v in given if v.strip()]
    if len(values) > _MAX_VALUES or any(len(v) > _MAX_VALUE for v in values):
        problems.add(name, f"at most {_MAX_VALUES} values of at most {_MAX_VALUE} characters")
        return ()
    if any("\x00" in v for v in values):
        problems.add(name, _NUL)
        return ()
    return tuple(values)


def _limit(problems: _Problems) -> int:
    text = _one("limit", problems)
    if text is None:
        return DEFAULT_LIMIT
    if not re.fullmatch(r"[+]?\d{1,9}", text) or not 1 <= int(text) <= MAX_LIMIT:
        problems.add("limit", f"must be a whole number from 1 to {MAX_LIMIT}")
        return DEFAULT_LIMIT
    return int(text)


def _moment(name: str, problems: _Problems) -> datetime | None:
    """``2024-01-01T00:00:00.000000+0000``, ``2021-01-02T01:00:00.123Z``, ``...+00:00``;
    UTC when no offset is given."""
    text = _one(name, problems)
    if text is None:
        return None
    normal = re.sub(r"([+-]\d\d)(\d\d)$", r"\1:\2", text.replace(" ", "+"))
    normal = normal[:-1] + "+00:00" if normal.endswith(("Z", "z")) else normal
    try:
        moment = datetime.fromisoformat(normal)
    except ValueError:
        problems.add(name, "must be a date and time such as 2024-01-02T03:04:05.000+0000")
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _report_query() -> ReportQuery:
    p = _Problems()
    return ReportQuery(
        bulk_id=_one("bulkId", p),
        message_id=_one("messageId", p),
        campaign_reference_id=_one("campaignReferenceId", p),
        application_id=_one("applicationId", p),
        entity_id=_one("entityId", p),
        limit=_limit(p),
        problems=dict(p),
    )


def _log_query(version: int) -> LogQuery:
    p = _Problems()
    status = _one("generalStatus", p)
    if status is not None and status.upper() not in GENERAL_STATUSES:
        p.add("generalStatus", "must be one of " + ", ".join(GENERAL_STATUSES))
        status = None
    return LogQuery(
        message_ids=_many("messageId", p),
        bulk_ids=_many("bulkId", p),
        sender=_one("sender" if version == 4 else "from", p),
        to=_one("destination" if version == 4 else "to", p),
        campaign_reference_id=_one("campaignReferenceId", p),
        application_id=_one("applicationId", p),
        entity_id=_one("entityId", p),
        general_status=status.upper() if status else None,
        sent_since=_moment("sentSince", p),
        sent_until=_moment("sentUntil", p),
        limit=_limit(p),
        problems=dict(p),
    )


def _report(r: InfobipReport, version: int) -> dict[str, Any]:
    body: dict[str, Any] = {
        "bulkId": r.bulk_id,
        "messageId": r.message_id,
        "to": r.to,
        "sentAt": infobip_time(r.sent_at),
        "doneAt": infobip_time(r.done_at),
        "messageCount": 1,
        "price": PRICE,
        "status": r.outcome.status,
        "error": r.outcome.error,
    }
    if version == 4:
        body["sender"] = r.sender
        body["attemptCount"] = r.attempts
    if r.callback_data is not None:
        body["callbackData"] = r.callback_data
    if r.campaign_reference_id is not None:
        body["campaignReferenceId"] = r.campaign_reference_id
    return body


def _log(r: InfobipReport, version: int) -> dict[str, Any]:
    people = (
        {"sender": r.sender, "destination": r.to}
        if version == 4
        else {"from": r.sender, "to": r.to}
    )
    body: dict[str, Any] = {
        "bulkId": r.bulk_id,
        "messageId": r.message_id,
        **people,
        "text": r.subject,
        "sentAt": infobip_time(r.sent_at),
        "doneAt": infobip_time(r.done_at),
        "messageCount": 1,
        "price": PRICE,
        "status": r.outcome.status,
        "error": r.outcome.error,
    }
    if r.campaign_reference_id is not None:
        body["campaignReferenceId"] = r.campaign_reference_id
    return body


def _reports(version: int) -> Response:
    fields = run_infobip("infobip.Reports", "infobip.ReportsAsUser", {"Query": _report_query()})
    if isinstance(fields, Response):
        return fields
    return jsonify({"results": [_report(r, version) for r in fields["Reports"]]})


def _logs(version: int) -> Response:
    fields = run_infobip("infobip.Logs", "infobip.LogsAsUser", {"Query": _log_query(version)})
    if isinstance(fields, Response):
        return fields
    return jsonify({"results": [_log(r, version) for r in fields["Reports"]]})


@bp.route("/1/reports", methods=["GET"])
def reports_v1() -> Response:
    return _reports(1)


@bp.route("/4/reports", methods=["GET"])
def reports_v4() -> Response:
    return _reports(4)


@bp.route("/1/logs", methods=["GET"])
def logs_v1() -> Response:
    return _logs(1)


@bp.route("/4/logs", methods=["GET"])
def logs_v4() -> Response:
    return _logs(4)
