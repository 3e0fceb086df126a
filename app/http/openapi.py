"""GET /openapi.json: an OpenAPI 3.1 description of every HTTP route of the API (the /api/v1
routes, /api.php as one operation, /healthz, /readyz, /metrics and this document), answers
and errors alike.

``tests/app/http/test_openapi.py`` checks that every /api/v1 route Flask serves is in it, and
``tests/e2e/test_schemathesis.py`` that a running Postern answers as it says.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify

from app.http.infobip_fields import FORM_FIELDS, REPEATED
from commands import all_commands
from commands.idempotency import MAX_KEY_LENGTH

bp = Blueprint("openapi", __name__)

JSON = "application/json"
Schema = dict[str, Any]


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: Schema, description: str) -> Schema:
    return {"description": description, "content": {JSON: {"schema": schema}}}


def _errors(description: str) -> Schema:
    return _json(_ref("Errors"), description)


_ERRORS_COMMON = {
    "400": _errors("The request was refused: its parameters or body (Errors gives the code)"),
    "401": _errors("No sender API key (code 1) or an invalid one (13)"),
    "403": _errors("The key's user is disabled"),
    "413": _errors("The body is larger than http.max_body_bytes"),
    "429": {
        **_errors("Past the key's rate limit (code 429)"),
        "headers": {"Retry-After": {"schema": {"type": "string"}}},
    },
}

_ADDRESS: Schema = {
    "oneOf": [
        {"type": "string"},
        {
            "type": "object",
            "properties": {"email": {"type": "string"}, "name": {"type": "string"}},
        },
    ]
}
_ADDRESSES: Schema = {"oneOf": [{"type": "array", "items": _ADDRESS}, _ADDRESS]}

_SEND_FIELDS: Schema = {
    "type": "object",
    "description": "The send fields (docs/api.md, Sending mail); names match in any case.",
    "properties": {
        "Subject": {"type": "string"},
        "ContentType": {"type": "string", "enum": ["html", "plain"]},
        "HTMLContent": {"type": "string"},
        "PlainContent": {"type": "string"},
        "From": _ADDRESS,
        "To": _ADDRESSES,
        "CC": _ADDRESSES,
        "BCC": {"type": "array", "items": _ADDRESS},
        "ReplyTo": {"type": "array", "items": _ADDRESS},
        "Headers": {"type": "object", "additionalProperties": {"type": "string"}},
        "Tags": {"type": "array", "items": {"type": "string"}},
        "TrackLinks": {"type": "string", "enum": ["true", "false"]},
        "TrackOpens": {"type": "string", "enum": ["true", "false"]},
        "SendAt": {"type": "integer"},
        "Attachments": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "filename": {"type": "string"},
                    "content": {"type": "string", "description": "base64"},
                    "type": {"type": "string"},
                    "disposition": {"type": "string", "enum": ["attachment", "inline"]},
                    "contentid": {"type": "string"},
                },
            },
        },
        "TemplateID": {
            "type": ["integer", "string"],
            "description": "one of the key's user's templates; the fields given override its",
        },
        "Personalization": {
            "type": "object",
            "description": "the template's values; a To entry may carry its own",
            "additionalProperties": {"type": ["string", "number", "boolean", "null"]},
        },
        "SenderAPIKey": {"type": "string", "description": "instead of the Bearer header"},
    },
}

_TEMPLATE_SUMMARY: Schema = {
    "type": "object",
    "required": ["TemplateID", "TemplateHash", "Name", "Subject"],
    "properties": {
        "TemplateID": {"type": "integer"},
        "TemplateHash": {"type": "string", "minLength": 16},
        "Name": {"type": "string"},
        "Subject": {"type": "string"},
        "CreatedAt": {"type": ["string", "null"]},
        "UpdatedAt": {"type": ["string", "null"]},
    },
}
_TEMPLATE: Schema = {
    **_TEMPLATE_SUMMARY,
    "properties": {
        **_TEMPLATE_SUMMARY["properties"],
        "HTMLContent": {"type": ["string", "null"]},
        "PlainContent": {"type": ["string", "null"]},
    },
}
_TEMPLATE_FIELDS: Schema = {
    "Name": {"type": "string", "maxLength": 255},
    "Subject": {"type": "string"},
    "HTMLContent": {"type": "string"},
    "PlainContent": {"type": "string"},
}
_TEMPLATE_ID: Schema = {"type": ["integer", "string"]}
_NO_TEMPLATE = _errors("No such template of the key's user (code 2)")


def _template_body(required: list[str], properties: Schema) -> Schema:
    return {
        "required": True,
        "content": {
            JSON: {"schema": {"type": "object", "required": required, "properties": properties}}
        },
    }


def _templates_path() -> Schema:
    one = _json(
        {"type": "object", "required": ["Template"], "properties": {"Template": _TEMPLATE}},
        "The template",
    )
    return {
        "get": _v1(
            "The key's user's templates (without their parts), or one given TemplateID",
            _json(
                {
                    "type": "object",
                    "properties": {
                        "Templates": {"type": "array", "items": _TEMPLATE_SUMMARY},
                        "Template": _TEMPLATE,
                    },
                },
                "The templates, or the one asked for",
            ),
            parameters=[_query("TemplateID", _TEMPLATE_ID)],
            responses={"404": _NO_TEMPLATE},
        ),
        "post": _v1(
            "Make a template (checked: a syntax error is refused with its line, code 6)",
            _json(
                {
                    "type": "object",
                    "required": ["TemplateID", "TemplateHash"],
                    "properties": {
                        "TemplateID": {"type": "integer"},
                        "TemplateHash": {"type": "string"},
                    },
                },
                "The new template's id and hash",
            ),
            requestBody=_template_body(["Name"], _TEMPLATE_FIELDS),
        ),
        "put": _v1(
            "Change a template's name or parts (those given)",
            one,
            requestBody=_template_body(
                ["TemplateID"], {"TemplateID": _TEMPLATE_ID, **_TEMPLATE_FIELDS}
            ),
            responses={"404": _NO_TEMPLATE},
        ),
        "delete": _v1(
            "Delete a template",
            _json({"type": "object"}, "Deleted"),
            requestBody=_template_body(["TemplateID"], {"TemplateID": _TEMPLATE_ID}),
            responses={"404": _NO_TEMPLATE},
        ),
    }


_SEND_EXAMPLES: Schema = {
    "plain": {
        "value": {
            "From": {"email": "news@example.com", "name": "News"},
            "To": [{"email": "ann@example.net", "name": "Ann"}],
            "Subject": "Your order",
            "ContentType": "plain",
            "PlainContent": "It is on its way.",
            "Tags": ["orders"],
        }
    },
    "html": {
        "value": {
            "From": {"email": "news@example.com"},
            "To": [{"email": "ann@example.net"}],
            "CC": [{"email": "bob@example.net"}],
            "Subject": "Your order",
            "ContentType": "html",
            "HTMLContent": "<p>It is <b>on its way</b>.</p>",
            "TrackLinks": "true",
            "Headers": {"X-Order": "1234"},
        }
    },
}

_IDEMPOTENCY_KEY: Schema = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": (
        "The same key and request within 24 hours answer the first answer again and send "
        "nothing twice; another request with the same key is refused (409, code 100409)."
    ),
    "schema": {
        "type": "string",
        "minLength": 1,
        "maxLength": MAX_KEY_LENGTH,
        "pattern": "^[!-~]([ -~]*[!-~])?$",
    },
}

_V1_EVENT: Schema = {
    "type": "object",
    "required": [
        "EventId",
        "EventType",
        "EventTimestamp",
        "Recipient",
        "MessageId",
        "CampaignId",
        "Tags",
        "Details",
    ],
    "properties": {
        "EventId": {"type": "string"},
        "EventType": {"type": "string"},
        "EventTimestamp": {"type": "string"},
        "Recipient": {"type": "string"},
        "MessageId": {"type": "string"},
        "CampaignId": {"type": "null"},
        "Tags": {"type": "array", "items": {"type": "string"}},
        "Details": {"type": "object"},
    },
}

_V1_WEBHOOK: Schema = {
    "type": "object",
    "required": ["WebhookID", "Event", "Events", "Format", "URL", "Status"],
    "properties": {
        "WebhookID": {"type": "string"},
        "Event": {"type": "string"},
        "Events": {"type": "array", "items": {"type": "string"}},
        "Format": {"type": "string", "enum": ["postern", "postal"]},
        "URL": {"type": "string"},
        "Status": {"type": "string", "enum": ["Active", "Inactive"]},
    },
}


def _v1(summary: str, ok: Schema, **more: Any) -> Schema:
    responses = {"200": ok, **_ERRORS_COMMON, **more.pop("responses", {})}
    return {"summary": summary, "security": [{"bearerAuth": []}], "responses": responses, **more}


def _fm_message(description: str) -> Schema:
    return _json(
        {"type": "object", "required": ["message"], "properties": {"message": {"type": "string"}}},
        description,
    )


_FM_PERSON: dict[str, Any] = {
    "type": "object",
    "required": ["email"],
    "properties": {"email": {"type": "string"}, "name": {"type": "string"}},
}


def _freshmail() -> Schema:
    """FreshMail's transactional v3 send (docs/api.md, "FreshMail v3")."""
    string_map = {"type": "object", "additionalProperties": {"type": "string"}}
    return {
        "summary": "FreshMail v3: one personalized message per recipient",
        "security": [{"bearerAuth": []}],
        "parameters": [_IDEMPOTENCY_KEY],
        "requestBody": {
            "required": True,
            "content": {
                JSON: {
                    "schema": {
                        "type": "object",
                        "required": ["recipients", "from"],
                        "properties": {
                            "recipients": {
                                "type": "array",
                                "minItems": 1,
                                "maxItems": 100,
                                "items": {
                                    **_FM_PERSON,
                                    "properties": {
                                        **_FM_PERSON["properties"],
                                        "personalization": {"type": "object"},
                                        "headers": string_map,
                                    },
                                },
                            },
                            "from": _FM_PERSON,
                            "subject": {"type": "string"},
                            "templateHash": {"type": "string"},
                            "contents": {
                                "type": "array",
                                "items": {
                                    "type": "object",
                                    "required": ["type", "body"],
                                    "properties": {
                                        "type": {"enum": ["text/html", "text/plain"]},
                                        "body": {"type": "string"},
                                    },
                                },
                            },
                            "headers": string_map,
                            "attachments": {
                                "type": "array",
                                "maxItems": 10,
                                "items": {
                                    "type": "object",
                                    "required": ["name", "content"],
                                    "properties": {
                                        "name": {"type": "string"},
                                        "content": {"type": "string"},
                                    },
                                },
                            },
                            "replyTo": _FM_PERSON,
                        },
                    }
                }
            },
        },
        "responses": {
            "201": _json(
                {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["email", "id"],
                        "properties": {"email": {"type": "string"}, "id": {"type": "string"}},
                    },
                },
                "Accepted: each recipient's message id",
            ),
            "400": _json(
                {
                    "type": "object",
                    "required": ["errors"],
                    "properties": {"errors": {"type": "array", "items": {"type": "string"}}},
                },
                "Every problem of the request, each naming its field",
            ),
            "401": _fm_message("Unauthorized user. Access denied"),
            "413": _fm_message("Request body too large"),
            "429": _fm_message("Too many requests"),
        },
    }


_POSTAL_ENVELOPE: Schema = {
    "type": "object",
    "required": ["status", "time", "flags", "data"],
    "properties": {
        "status": {"enum": ["success", "error", "parameter-error"]},
        "time": {"type": "number"},
        "flags": {"type": "object"},
        "data": {},
    },
}
_POSTAL_BODIES: dict[str, Schema] = {
    "/api/v1/send/message": {
        "type": "object",
        "properties": {
            "to": {"type": ["array", "string", "null"], "items": {"type": "string"}},
            "cc": {"type": ["array", "string", "null"], "items": {"type": "string"}},
            "bcc": {"type": ["array", "string", "null"], "items": {"type": "string"}},
            "from": {"type": ["string", "null"]},
            "sender": {"type": ["string", "null"]},
            "subject": {"type": ["string", "null"]},
            "reply_to": {"type": ["string", "null"]},
            "plain_body": {"type": ["string", "null"]},
            "html_body": {"type": ["string", "null"]},
            "headers": {"type": ["object", "null"]},
            "attachments": {
                "type": ["array", "null"],
                "items": {
                    "type": "object",
                    "properties": {
                        "name": {"type": "string"},
                        "content_type": {"type": "string"},
                        "data": {"type": "string", "description": "base64"},
                    },
                },
            },
            "tag": {"type": ["string", "null"]},
            "bounce": {"type": ["boolean", "null"]},
        },
    },
    "/api/v1/send/raw": {
        "type": "object",
        "required": ["mail_from", "rcpt_to", "data"],
        "properties": {
            "mail_from": {"type": "string"},
            "rcpt_to": {"type": "array", "items": {"type": "string"}},
            "data": {"type": "string", "description": "the RFC 2822 message in base64"},
            "bounce": {"type": ["boolean", "null"]},
        },
    },
    "/api/v1/messages/message": {
        "type": "object",
        "required": ["id"],
        "properties": {
            "id": {"type": "integer"},
            "_expansions": {"type": ["boolean", "array"], "items": {"type": "string"}},
        },
    },
    "/api/v1/messages/deliveries": {
        "type": "object",
        "required": ["id"],
        "properties": {"id": {"type": "integer"}},
    },
}
_POSTAL_SUMMARIES = {
    "/api/v1/send/message": "Postal: send a message (one delivery per recipient)",
    "/api/v1/send/raw": "Postal: send an RFC 2822 message to the given recipients",
    "/api/v1/messages/message": "Postal: one message (a delivery) and its expansions",
    "/api/v1/messages/deliveries": "Postal: a message's delivery attempts",
}


def _postal(path: str) -> Schema:
    """Postal's legacy API (docs/api.md, "Postal API"): GET, POST, PUT and PATCH alike."""
    operation = {
        "summary": _POSTAL_SUMMARIES[path],
        "security": [{"postalKey": []}],
        "parameters": [
            _query("params", {"type": "string", "description": "the parameters as JSON"}),
            _IDEMPOTENCY_KEY,
        ],
        "requestBody": {"content": {JSON: {"schema": _POSTAL_BODIES[path]}}},
        "responses": {
            "200": _json(_POSTAL_ENVELOPE, "Postal's envelope: success, error or parameter-error"),
            "413": _json(_POSTAL_ENVELOPE, "Request body too large"),
            "429": _json(_POSTAL_ENVELOPE, "Too many requests (code TooManyRequests)"),
        },
    }
    return {method: operation for method in ("get", "post", "put", "patch")}


_IB_STATUS: Schema = {
    "type": "object",
    "required": ["groupId", "groupName", "id", "name", "description"],
    "properties": {
        "groupId": {"type": "integer"},
        "groupName": {"type": "string"},
        "id": {"type": "integer"},
        "name": {"type": "string"},
        "description": {"type": "string"},
    },
}
_IB_REQUEST_ERROR: Schema = {
    "type": "object",
    "required": ["requestError"],
    "properties": {
        "requestError": {
            "type": "object",
            "required": ["serviceException"],
            "properties": {
                "serviceException": {
                    "type": "object",
                    "required": ["messageId", "text"],
                    "properties": {
                        "messageId": {"type": "string"},
                        "text": {"type": "string"},
                        "validationErrors": {
                            "type": "object",
                            "additionalProperties": {"type": "array", "items": {"type": "string"}},
                        },
                    },
                }
            },
        }
    },
}
_IB_API_ERROR: Schema = {
    "type": "object",
    "required": ["errorCode", "description", "action", "violations", "resources"],
    "properties": {
        "errorCode": {"type": "string"},
        "description": {"type": "string"},
        "action": {"type": "string"},
        "violations": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["property", "violation"],
                "properties": {"property": {"type": "string"}, "violation": {"type": "string"}},
            },
        },
        "resources": {"type": "array"},
    },
}
_IB_SECURITY: list[dict[str, list[str]]] = [{"infobipAppKey": []}, {"basicAuth": []}]
# The form fields but the repeated ones (recipients and files), each a string.
_IB_STRING_FIELDS = [n for n in FORM_FIELDS if n not in REPEATED]


def _ib_errors(schema: Schema) -> Schema:
    return {
        "400": _json(schema, "Refused: each problem under its field's name"),
        "401": _json(schema, "No credential, or an invalid one"),
        "403": _json(schema, "The user's sending quota is reached"),
        "409": _json(schema, "The Idempotency-Key was used with another request"),
        "413": _json(schema, "The body is larger than http.max_body_bytes"),
        "429": _json(schema, "Too many requests (Retry-After says how long to wait)"),
    }


def _infobip_form(version: int) -> Schema:
    """Infobip's multipart send (docs/api.md, "Infobip API")."""
    addresses = {"type": "array", "items": {"type": "string"}}
    files = {"type": "array", "items": {"type": "string", "format": "binary"}}
    properties: dict[str, Any] = {name: {"type": "string"} for name in _IB_STRING_FIELDS}
    properties.update(to=addresses, cc=addresses, bcc=addresses)
    properties.update(attachment=files, inlineImage=files)
    return {
        "summary": f"Infobip email v{version}: a message per recipient (multipart form)",
        "security": _IB_SECURITY,
        "parameters": [_IDEMPOTENCY_KEY],
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {"type": "object", "required": ["to"], "properties": properties},
                    "encoding": {"to": {"style": "form", "explode": True}},
                }
            },
        },
        "responses": {
            "200": _json(
                {
                    "type": "object",
                    "required": ["bulkId", "messages"],
                    "properties": {
                        "bulkId": {"type": "string"},
                        "messages": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["to", "messageId", "status"],
                                "properties": {
                                    "to": {"type": "string"},
                                    "messageId": {"type": "string"},
                                    "status": _IB_STATUS,
                                },
                            },
                        },
                    },
                },
                "Accepted: the bulk and each recipient's messageId, pending",
            ),
            **_ib_errors(_IB_REQUEST_ERROR),
        },
    }


_IB_ERROR_OBJECT: Schema = {
    "type": "object",
    "required": ["groupId", "groupName", "id", "name", "description", "permanent"],
    "properties": {
        "groupId": {"type": "integer"},
        "groupName": {"type": "string"},
        "id": {"type": "integer"},
        "name": {"type": "string"},
        "description": {"type": "string"},
        "permanent": {"type": "boolean"},
    },
}


def _infobip_reports(version: int, logs: bool) -> Schema:
    """Infobip's one-time reports or 48-hour logs (docs/api.md, "Infobip API")."""
    text = {"type": "string", "maxLength": 255}
    names = ["bulkId", "messageId", "campaignReferenceId", "applicationId", "entityId"]
    if logs:
        names += ["sender", "destination"] if version == 4 else ["from", "to"]
        names += ["sentSince", "sentUntil"]
    params = [_query(name, text) for name in names]
    if logs:
        statuses = ["ACCEPTED", "PENDING", "UNDELIVERABLE", "DELIVERED", "EXPIRED", "REJECTED"]
        params.append(_query("generalStatus", {"type": "string", "enum": statuses}))
    params.append(_query("limit", {"type": "integer", "minimum": 1, "maximum": 1000}))
    people = ("sender", "destination") if version == 4 else ("from", "to")
    item_properties: dict[str, Any] = {
        "bulkId": {"type": "string"},
        "messageId": {"type": "string"},
        "sentAt": {"type": "string"},
        "doneAt": {"type": ["string", "null"]},
        "messageCount": {"type": "integer"},
        "price": {"type": "object"},
        "status": _IB_STATUS,
        "error": _IB_ERROR_OBJECT,
        "callbackData": {"type": "string"},
        "campaignReferenceId": {"type": "string"},
    }
    if logs:
        item_properties.update({people[0]: {"type": "string"}, people[1]: {"type": "string"}})
        item_properties["text"] = {"type": "string"}
    else:
        item_properties["to"] = {"type": "string"}
        if version == 4:
            item_properties.update(sender={"type": "string"}, attemptCount={"type": "integer"})
    errors = _ib_errors(_IB_API_ERROR if version == 4 else _IB_REQUEST_ERROR)
    return {
        "summary": f"Infobip email v{version}: "
        + ("logs of the last 48 hours" if logs else "delivery reports, each given once"),
        "security": _IB_SECURITY,
        "parameters": params,
        "responses": {
            "200": _json(
                {
                    "type": "object",
                    "required": ["results"],
                    "properties": {
                        "results": {
                            "type": "array",
                            "items": {"type": "object", "properties": item_properties},
                        }
                    },
                },
                "The messages, newest first" if logs else "The reports, never given again",
            ),
            **{code: errors[code] for code in ("400", "401", "429")},
            # The HTTP server's own answer (gunicorn's limit_request_line), before Postern.
            "414": {
                "description": "The request line is longer than the server takes (4,094 bytes)",
                "content": {"text/html": {"schema": {"type": "string"}}},
            },
        },
    }


def _infobip_json() -> Schema:
    """Infobip's JSON send, as its Python client 6.x sends it."""
    destination = {
        "type": "object",
        "required": ["destination"],
        "properties": {
            "destination": {"type": "string"},
            "messageId": {"type": "string"},
            "placeholders": {"type": "string"},
        },
    }
    group = {
        "type": "object",
        "properties": {
            "to": {"type": "array", "items": destination},
            "cc": {"type": "array", "items": destination},
            "bcc": {"type": "array", "items": destination},
            "replyTo": {"type": "string"},
            "preserveRecipients": {"type": "boolean"},
        },
    }
    media = {
        "type": "array",
        "items": {
            "type": "object",
            "properties": {
                "type": {"type": "string"},
                "content": {"type": "string"},
                "contentType": {"type": "string"},
                "fileName": {"type": "string"},
            },
        },
    }
    content = {
        "type": "object",
        "properties": {
            **{
                name: {"type": "string"}
                for name in [
                    "subject",
                    "text",
                    "html",
                    "ampHtml",
                    "templateId",
                    "defaultPlaceholders",
                    "landingPagePlaceholders",
                    "optoutLandingPageId",
                    "templateLanguageVersion",
                    "headers",
                ]
            },
            "attachments": media,
            "inlineImages": media,
        },
    }
    message = {
        "type": "object",
        "required": ["destinations", "content"],
        "properties": {
            "sender": {"type": "string"},
            "destinations": {"type": "array", "items": group},
            "content": content,
            "options": {"type": "object"},
            "webhooks": {"type": "object"},
            "ips": {"type": "object"},
        },
    }
    return {
        "summary": "Infobip email v4: messages to destinations (JSON)",
        "security": _IB_SECURITY,
        "parameters": [_IDEMPOTENCY_KEY],
        "requestBody": {
            "required": True,
            "content": {
                JSON: {
                    "schema": {
                        "type": "object",
                        "required": ["messages"],
                        "properties": {
                            "messages": {"type": "array", "items": message},
                            "options": {"type": "object"},
                        },
                    }
                }
            },
        },
        "responses": {
            "200": _json(
                {
                    "type": "object",
                    "required": ["bulkId", "messages"],
                    "properties": {
                        "bulkId": {"type": "string"},
                        "messages": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["messageId", "status", "destination"],
                                "properties": {
                                    "messageId": {"type": "string"},
                                    "status": _IB_STATUS,
                                    "destination": {"type": "string"},
                                },
                            },
                        },
                    },
                },
                "Accepted: the bulk and each destination's messageId, pending",
            ),
            **_ib_errors(_IB_API_ERROR),
        },
    }


def document() -> Schema:
    """The OpenAPI 3.1 document."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Postern",
            "version": "1",
            "description": (
                "Octeth's Email Gateway API as Postern serves it: the /api/v1 routes "
                "(a sender API key as Bearer) and the /api.php command interface. "
                "The manual is docs/api.md."
            ),
        },
        "paths": {
            "/api/v1/email": {
                "post": _v1(
                    "Send a message from the key's domain",
                    _json(
                        {
                            "type": "object",
                            "required": ["MessageID"],
                            "properties": {"MessageID": {"type": "string"}},
                        },
                        "Accepted: the message id",
                    ),
                    parameters=[_IDEMPOTENCY_KEY],
                    requestBody={
                        "required": True,
                        "content": {JSON: {"schema": _SEND_FIELDS, "examples": _SEND_EXAMPLES}},
                    },
                    responses={"409": _errors("The Idempotency-Key was used with another request")},
                )
            },
            "/api/v1/events": {
                "get": _v1(
                    "The key's domain's events, newest first",
                    _json(
                        {
                            "type": "object",
                            "required": ["TotalRecords", "Events"],
                            "properties": {
                                "TotalRecords": {"type": "integer", "minimum": 0},
                                "Events": {"type": "array", "items": _V1_EVENT},
                            },
                        },
                        "A page of events and their exact number",
                    ),
                    parameters=[
                        _query("StartFrom", {"type": "integer", "minimum": 0}),
                        _query("RetrieveCount", {"type": "integer", "minimum": 1, "maximum": 100}),
                        _query("StartDate", {"type": "string"}),
                        _query("EndDate", {"type": "string"}),
                        _query("Event", {"type": "string"}),
                        _query("MessageID", {"type": "string", "maxLength": 300}),
                    ],
                )
            },
            "/api/v1/templates": _templates_path(),
            "/v3/messaging/emails": {"post": _freshmail()},
            **{path: _postal(path) for path in _POSTAL_BODIES},
            "/v3/messaging/emails/": {"post": _freshmail()},
            "/email/2/send": {"post": _infobip_form(2)},
            "/email/3/send": {"post": _infobip_form(3)},
            "/email/4/messages": {"post": _infobip_json()},
            "/email/1/reports": {"get": _infobip_reports(1, logs=False)},
            "/email/4/reports": {"get": _infobip_reports(4, logs=False)},
            "/email/1/logs": {"get": _infobip_reports(1, logs=True)},
            "/email/4/logs": {"get": _infobip_reports(4, logs=True)},
            "/api/v1/webhooks": {
                "get": _v1(
                    "The key's domain's webhooks",
                    _json(
                        {
                            "type": "object",
                            "required": ["Webhooks"],
                            "properties": {"Webhooks": {"type": "array", "items": _V1_WEBHOOK}},
                        },
                        "The webhooks",
                    ),
                ),
                "post": _v1(
                    "Add a webhook to the key's domain",
                    _json(
                        {
                            "type": "object",
                            "required": ["NewWebhookID"],
                            "properties": {"NewWebhookID": {"type": "string"}},
                        },
                        "The new webhook's id",
                    ),
                    requestBody={
                        "required": True,
                        "content": {
                            JSON: {
                                "schema": {
                                    "type": "object",
                                    "required": ["Event", "WebhookURL"],
                                    "properties": {
                                        "Event": {
                                            "oneOf": [
                                                {"type": "string"},
                                                {"type": "array", "items": {"type": "string"}},
                                            ]
                                        },
                                        "WebhookURL": {"type": "string"},
                                        "Format": {
                                            "type": "string",
                                            "enum": ["postern", "postal"],
                                            "description": "The POSTs' body and signatures: "
                                            "Postern's own (default) or Postal's",
                                        },
                                    },
                                },
                                "examples": {
                                    "delivered": {
                                        "value": {
                                            "Event": "delivered,bounced",
                                            "WebhookURL": "https://hooks.example.com/postern",
                                        }
                                    }
                                },
                            }
                        },
                    },
                ),
                "delete": _v1(
                    "Delete one of the key's domain's webhooks",
                    _json(
                        {
                            "type": "object",
                            "required": ["Message"],
                            "properties": {"Message": {"type": "string"}},
                        },
                        "Deleted",
                    ),
                    requestBody={
                        "required": True,
                        "content": {
                            JSON: {
                                "schema": {
                                    "type": "object",
                                    "required": ["WebhookID"],
                                    "properties": {
                                        "WebhookID": {"type": ["string", "integer"]},
                                    },
                                }
                            }
                        },
                    },
                    responses={"404": _errors("No such webhook of this domain (code 4)")},
                ),
            },
            "/api.php": {
                "post": {
                    "summary": "Run an EmailGateway.* or User.* command",
                    "description": (
                        "Command names the command; the other properties are its parameters "
                        "(docs/api.md). Credentials (SessionID or APIKey) are parameters. "
                        "The body may also be a form or multipart; ResponseFormat=XML "
                        "answers the same envelope as XML. Sends honour Idempotency-Key."
                    ),
                    "security": [],
                    "parameters": [_IDEMPOTENCY_KEY],
                    "requestBody": {
                        "required": True,
                        "content": {
                            JSON: {
                                "schema": {
                                    "type": "object",
                                    "required": ["Command"],
                                    "properties": {
                                        "Command": {"type": "string", "enum": _command_names()},
                                        "SessionID": {"type": "string"},
                                        "APIKey": {"type": "string"},
                                    },
                                    "additionalProperties": True,
                                }
                            }
                        },
                    },
                    "responses": {
                        "200": _envelope("The command's answer, or its error (Success false)"),
                        "400": _envelope("An unknown command (100003) or unreadable body"),
                        "409": _envelope("The Idempotency-Key was used with another request"),
                        "413": _envelope("The body is larger than http.max_body_bytes"),
                        "429": _envelope("Past the caller's rate limit"),
                    },
                }
            },
            "/healthz": {
                "get": {
                    "summary": "Whether the process is up and its database answers",
                    "security": [],
                    "responses": {
                        "200": _json(_ref("Health"), "Up"),
                        "503": _json(_ref("Health"), "The database does not answer"),
                    },
                }
            },
            "/.well-known/jwks.json": {
                "get": {
                    "summary": "The public key that signs Postal-format webhooks, as a JWKS",
                    "security": [],
                    "responses": {"200": _json(_ref("JWKS"), "The key set (one RSA key)")},
                }
            },
            "/readyz": {
                "get": {
                    "summary": "Whether this instance can do its work: the database answers, "
                    "its schema is current, a delivery worker reported within a minute",
                    "security": [],
                    "responses": {
                        "200": _json(_ref("Readiness"), "Ready"),
                        "503": _json(_ref("Readiness"), "Not ready: Failed names the checks"),
                    },
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Metrics in Prometheus's text format (metrics.token: a bearer "
                    "token is asked for)",
                    "security": [],
                    "responses": {
                        "200": {
                            "description": "The metrics",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        },
                        "401": _json(_ref("Errors"), "metrics.token is set and was not given"),
                    },
                }
            },
            "/openapi.json": {
                "get": {
                    "summary": "This document",
                    "security": [],
                    "responses": {"200": _json({"type": "object"}, "OpenAPI 3.1")},
                }
            },
        },
        "components": {
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A sender API key (EmailGateway.AddAPI)",
                },
                "postalKey": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "X-Server-API-Key",
                    "description": "Postal's routes: a sender API key or a user API key",
                },
                "infobipAppKey": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "Authorization",
                    "description": "Infobip's 'App <key>': a sender API key or a user API key",
                },
                "basicAuth": {
                    "type": "http",
                    "scheme": "basic",
                    "description": "The user's username and password (Infobip's routes)",
                },
            },
            "schemas": {
                "JWKS": {
                    "type": "object",
                    "required": ["keys"],
                    "properties": {
                        "keys": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["kty", "n", "e", "use", "alg", "kid"],
                                "properties": {
                                    k: {"type": "string"}
                                    for k in ("kty", "n", "e", "use", "alg", "kid")
                                },
                            },
                        }
                    },
                },
                "Errors": {
                    "type": "object",
                    "required": ["Errors"],
                    "properties": {
                        "Errors": {
                            "type": "array",
                            "minItems": 1,
                            "items": {
                                "type": "object",
                                "required": ["Code", "Message"],
                                "properties": {
                                    "Code": {"type": "integer"},
                                    "Message": {"type": "string"},
                                },
                            },
                        },
                        "RequestID": {"type": "string"},
                    },
                },
                "Envelope": {
                    "type": "object",
                    "required": ["Success", "ErrorCode"],
                    "properties": {
                        "Success": {"type": "boolean"},
                        "ErrorCode": {
                            "oneOf": [
                                {"type": "integer"},
                                {"type": "array", "items": {"type": "integer"}},
                            ]
                        },
                        "ErrorText": {"type": "string"},
                        "ErrorMessage": {"type": "string"},
                    },
                    "additionalProperties": True,
                },
                "Readiness": {
                    "type": "object",
                    "required": ["Status", "Checks", "Failed"],
                    "properties": {
                        "Status": {"type": "string", "enum": ["ok", "error"]},
                        "Checks": {
                            "type": "object",
                            "description": "database, migrations, worker: ok or what is wrong",
                            "additionalProperties": {"type": "string"},
                        },
                        "Failed": {"type": "array", "items": {"type": "string"}},
                    },
                },
                "Health": {
                    "type": "object",
                    "required": ["Status", "Database"],
                    "properties": {
                        "Status": {"type": "string", "enum": ["ok", "error"]},
                        "Database": {"type": "string", "enum": ["ok", "unreachable"]},
                    },
                },
            },
        },
    }


def _command_names() -> list[str]:
    return sorted(c.name for c in all_commands() if c.transport == "api.php")


def _query(name: str, schema: Schema) -> Schema:
    return {"name": name, "in": "query", "required": False, "schema": schema}


def _envelope(description: str) -> Schema:
    return {
        "description": description,
        "content": {JSON: {"schema": _ref("Envelope")}, "text/xml": {"schema": {"type": "string"}}},
    }


_DOCUMENT: list[Schema] = []  # made once, at the first request (every command registered)


@bp.route("/openapi.json", methods=["GET"])
def openapi_json() -> Response:
    if not _DOCUMENT:
        _DOCUMENT.append(document())
    return jsonify(_DOCUMENT[0])
