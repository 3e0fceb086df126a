"""Schemathesis over /openapi.json against a running `postern api` on loopback.

Every operation of the document gets examples generated from its schema (valid ones, and
ones that break it), sent with a valid sender key (Bearer) so that the routes are exercised
past authentication. Every answer must be no 5xx, have a documented status code and content
type, and match its schema. POSTERN_SCHEMATHESIS_EXAMPLES sets the examples per operation
and mode (default 100: about 30 s on a 2-core machine)."""

import contextlib
import json
import os
from collections import Counter

import httpx
import hypothesis
import schemathesis
from hypothesis import HealthCheck, Phase, given
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from models import Domain
from models.domains import ENABLED
from tests.conftest import SECRET_KEY
from tests.livesrv import clean_env, postern, running

EXAMPLES = int(os.environ.get("POSTERN_SCHEMATHESIS_EXAMPLES", "100"))
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


def test_every_answer_matches_the_document(tmp_path, database, base_config, dns_server):
    env = clean_env(
        POSTERN_DATABASE_URL=base_config.database.url,
        POSTERN_SECURITY_SECRET_KEY=SECRET_KEY,
        POSTERN_DNS_NAMESERVERS=dns_server.host,
        POSTERN_DNS_PORT=str(dns_server.port),
        POSTERN_DNS_TIMEOUT="1",
        POSTERN_WEBHOOKS_ALLOW_PRIVATE="true",
        POSTERN_RATELIMIT_REQUESTS="1000000",  # the limit is not what is tested here
        POSTERN_LOG_LEVEL="INFO",
        POSTERN_LOG_FORMAT="json",
    )
    created = postern(
        "user", "create", "alice", "--password", "correct horse", cwd=tmp_path, env=env
    )
    assert created.returncode == 0, created.stderr
    user_key = json.loads(created.stdout)["APIKey"]

    with running("api", tmp_path, env) as (base, log), httpx.Client(base_url=base) as http:

        def call(command, **params):
            body = http.post("/api.php", json={"Command": command, "APIKey": user_key, **params})
            assert body.json()["Success"] is True, body.text
            return body.json()

        domain_id = call("EmailGateway.AddDomain", DomainName="example.com")["NewSenderDomainID"]
        with database.transaction() as s:
            s.get(Domain, int(domain_id)).status = ENABLED
        key = call("EmailGateway.AddAPI", DomainID=domain_id, Description="fuzz")["APIKey"]["Key"]
        headers = {"Authorization": f"Bearer {key}"}

        schema = schemathesis.openapi.from_url(f"{base}/openapi.json")
        schema.validate()
        tried = {"requests": 0}
        operations = [op.ok() for op in schema.get_all_operations()]
        assert len(operations) >= 7
        # /api.php last: its commands run as the user (an APIKey added to each JSON object
        # body), with what they do to the domain and keys.
        operations.sort(key=lambda op: op.path == "/api.php")
        for operation in operations:
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

                @given(case=operation.as_strategy(generation_mode=mode))
                @hypothesis.settings(
                    max_examples=EXAMPLES,
                    deadline=None,
                    database=None,
                    derandomize=True,
                    phases=[Phase.explicit, Phase.generate],
                    suppress_health_check=list(HealthCheck),
                )
                def exercise(case):
                    tried["requests"] += 1
                    if case.path == "/api.php" and isinstance(case.body, dict):
                        case.body.setdefault("APIKey", user_key)
                    sent = headers
                    if case.path.startswith(("/api/v1/send/", "/api/v1/messages/")):
                        sent = {"X-Server-API-Key": key}  # Postal's routes
                    # /readyz answers its documented 503: no delivery worker runs here.
                    checks = CHECKS[1:] if case.path == "/readyz" else CHECKS
                    case.call_and_validate(base_url=base, headers=sent, checks=checks)

                # A negative mode may find nothing to break in an operation without parameters.
                with contextlib.suppress(hypothesis.errors.Unsatisfiable):
                    exercise()
        print(f"\nschemathesis: {tried['requests']} requests over {len(operations)} operations")
        lines = log.read_text().splitlines()
        assert not [line for line in lines if "Traceback" in line or '"ERROR"' in line]
        answers = Counter(
            (entry["method"], entry["path"], entry["status"])
            for entry in map(json.loads, (line for line in lines if line.startswith("{")))
            if entry.get("msg") == "request"
        )
        print("\n".join(f"{n:5} {m} {p} {s}" for (m, p, s), n in sorted(answers.items())))
        # Each route was exercised past authentication and got at least one 200.
        for path in ("/api/v1/email", "/api/v1/events", "/api/v1/webhooks", "/api.php"):
            assert any(p == path and s == 200 for (_, p, s) in answers), path
    assert tried["requests"] >= len(operations) * 2
