"""/openapi.json: valid OpenAPI 3.1, served without credentials, and describing every
/api/v1 route (and method) Flask serves, so that a new route without a description fails."""

import schemathesis

from app.http.openapi import document


def routes(flask_app, prefix):
    out = set()
    for rule in flask_app.url_map.iter_rules():
        if rule.rule.startswith(prefix):
            for method in rule.methods - {"HEAD", "OPTIONS"}:
                out.add((rule.rule, method.lower()))
    return out


def test_the_document_is_served_without_credentials_and_is_valid_openapi_3_1(client):
    resp = client.get("/openapi.json")
    assert resp.status_code == 200 and resp.mimetype == "application/json"
    raw = resp.get_json()
    assert raw["openapi"].startswith("3.1")
    schema = schemathesis.openapi.from_dict(raw)
    schema.validate()  # against the OpenAPI 3.1 meta-schema
    assert {op.ok().label for op in schema.get_all_operations()} >= {
        "POST /api/v1/email",
        "GET /api/v1/events",
        "POST /api.php",
    }
    assert raw["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "A sender API key (EmailGateway.AddAPI)",
    }


def test_every_api_v1_route_is_described(flask_app):
    described = {
        (path, method)
        for path, item in document()["paths"].items()
        for method in item
        if path.startswith("/api/v1")
    }
    served = routes(flask_app, "/api/v1")
    assert served, "no /api/v1 routes found"
    assert served == described, {"served, not described": served - described}


def test_every_other_api_route_is_described(flask_app):
    paths = document()["paths"]
    served = routes(flask_app, "/api.php") | routes(flask_app, "/healthz")
    served |= routes(flask_app, "/readyz") | routes(flask_app, "/metrics")
    served |= routes(flask_app, "/v3/") | routes(flask_app, "/email/")
    assert ("/email/3/send", "post") in served
    for path, method in served:
        if method == "get" and path == "/api.php":
            continue  # the same operation as POST, its parameters in the query string
        assert method in paths[path], (path, method)
