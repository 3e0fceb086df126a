"""End to end, as a new user would: postern serve / postern api as real processes over HTTP."""

import json
import xml.etree.ElementTree as ET

import httpx

from tests.conftest import SECRET_KEY
from tests.livesrv import clean_env, postern, running


def test_embedded_default_round_trip(tmp_path):
    env = clean_env()
    created = postern(
        "user",
        "create",
        "alice",
        "--password",
        "correct horse",
        "--email",
        "alice@example.com",
        cwd=tmp_path,
        env=env,
    )
    assert created.returncode == 0, created.stderr
    out = json.loads(created.stdout)
    assert set(out) == {"UserID", "APIKey"} and out["APIKey"].startswith("pu_")
    assert (tmp_path / "postern.db").exists() and (tmp_path / "postern.key").exists()

    with running("serve", tmp_path, env) as (base, log_path), httpx.Client(base_url=base) as http:
        api = f"{base}/api.php"
        # JSON, as curl -d sends it (labelled as a form).
        login = http.post(
            api,
            content=json.dumps(
                {"Command": "User.Login", "Username": "alice", "Password": "correct horse"}
            ),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        ).json()
        assert login["Success"] is True
        sid = login["SessionID"]
        # An authenticated command as JSON, as a form, and as XML.
        listed = http.post(api, json={"Command": "User.APIKey.List", "SessionID": sid}).json()
        assert listed["APIKeys"][0]["Key"] == out["APIKey"]
        form = http.post(api, data={"command": "user.apikey.list", "apikey": out["APIKey"]})
        assert form.json()["Success"] is True
        xml = http.get(
            api, params={"Command": "User.APIKey.List", "SessionID": sid, "ResponseFormat": "XML"}
        )
        assert ET.fromstring(xml.text).findtext("APIKeys/item/Key") == out["APIKey"]
        # The documented failures.
        wrong = http.post(
            api, json={"Command": "User.Login", "Username": "alice", "Password": "wrong"}
        ).json()
        assert wrong["ErrorCode"] == 3
        bad = http.post(api, json={"Command": "User.APIKey.List", "SessionID": "bad"}).json()
        assert bad["ErrorCode"] == 99998
        unknown = http.post(api, json={"Command": "Nope.Nothing", "SessionID": sid})
        assert unknown.status_code == 400 and unknown.json()["ErrorCode"] == 100003
        assert http.get("/healthz").json() == {"Status": "ok", "Database": "ok"}

    lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")]
    requests = [r for r in lines if r.get("msg") == "request"]
    assert len(requests) >= 7
    assert all(
        {"method", "path", "status", "duration_ms", "request_id"} <= set(r) for r in requests
    )
    text = log_path.read_text()
    for secret in (sid, out["APIKey"], "correct horse"):
        assert secret not in text


def test_api_role_on_the_configured_database(tmp_path, make_user, base_config):
    user = make_user("carol")
    env = clean_env(
        POSTERN_DATABASE_URL=base_config.database.url, POSTERN_SECURITY_SECRET_KEY=SECRET_KEY
    )
    with running("api", tmp_path, env) as (base, _log):
        api = f"{base}/api.php"
        login = httpx.post(
            api, data={"Command": "User.Login", "Username": "carol", "Password": user.password}
        ).json()
        assert login["Success"] is True
        # Several workers share the database: every call sees the same session.
        for _ in range(10):
            body = httpx.post(
                api, json={"Command": "User.APIKey.List", "SessionID": login["SessionID"]}
            ).json()
            assert body["APIKeys"][0]["Key"] == user.api_key


def test_api_role_refuses_an_old_schema(tmp_path):
    env = clean_env()
    proc = postern("api", cwd=tmp_path, env=env)
    assert proc.returncode == 2
    assert "run 'postern db upgrade' first" in proc.stderr
    upgraded = postern("db", "upgrade", cwd=tmp_path, env=env)
    assert upgraded.returncode == 0 and "revision" in upgraded.stdout


def test_domain_round_trip_through_a_running_server(tmp_path):
    """Add a domain, publish its records in DNS, verify it, then use a sender key on /api/v1."""
    from tests.dnsserver import DNSServer

    env = clean_env()
    key = json.loads(
        postern(
            "user", "create", "dana", "--password", "correct horse", cwd=tmp_path, env=env
        ).stdout
    )["APIKey"]
    with (
        DNSServer() as dns,
        running(
            "serve",
            tmp_path,
            {
                **env,
                "POSTERN_DNS_NAMESERVERS": dns.host,
                "POSTERN_DNS_PORT": str(dns.port),
                "POSTERN_DNS_TIMEOUT": "2",
                "POSTERN_WEBHOOKS_ALLOW_PRIVATE": "true",
                "POSTERN_DELIVERY_ALLOW_PRIVATE_MX": "true",
                "POSTERN_SMTP_HOSTNAME": "mx.postern.test",
            },
        ) as (base, _log),
        httpx.Client(base_url=base) as http,
    ):

        def call(command, **params):
            return http.post("/api.php", json={"Command": command, "APIKey": key, **params}).json()

        added = call("EmailGateway.AddDomain", DomainName="shop.example")
        domain_id = added["NewSenderDomainID"]
        assert added["Domain"]["VerificationStatus"] == "Pending"
        pending = call("EmailGateway.VerifyDomain", DomainID=domain_id)
        assert pending["Domain"]["Status"] == "Pending"
        for record in added["Domain"]["DNSRecords"]:
            dns.add(record["Host"], record["Type"], record["Value"])
        verified = call("EmailGateway.VerifyDomain", DomainID=domain_id)
        assert verified["Domain"]["Status"] == "Enabled"
        assert all(r["Verified"] for r in verified["DNSVerificationResults"])
        assert call("EmailGateway.GetDomains")["Domains"][0]["Active"] is True

        sender = call("EmailGateway.AddAPI", DomainID=domain_id, Description="shop")["APIKey"][
            "Key"
        ]
        auth = {"Authorization": f"Bearer {sender}"}
        made = http.post(
            "/api/v1/webhooks",
            headers=auth,
            json={"Event": "delivered", "WebhookURL": "http://127.0.0.1:9/h"},
        )
        assert made.status_code == 200
        listed = http.get("/api/v1/webhooks", headers=auth).json()["Webhooks"]
        assert [w["Event"] for w in listed] == ["delivered"]
        smtp = call("EmailGateway.AddSMTP", DomainID=domain_id)["SMTP"]
        assert smtp["SMTPHost"] == "mx.postern.test" and smtp["Password"]
        assert call(
            "EmailGateway.DeleteAPI",
            ApiKeyId=call("EmailGateway.GetAPIs", DomainID=domain_id)["APIKeys"][0]["KeyID"],
        )["Success"]
        gone = http.get("/api/v1/webhooks", headers=auth)
        assert gone.status_code == 401 and gone.json()["Errors"][0]["Code"] == 13


def test_single_threaded_workers_close_and_threaded_workers_keep_connections(
    tmp_path, make_user, base_config
):
    """http.threads = 1 runs gunicorn's sync workers (each connection closed after its
    answer); more threads run gthread workers, which keep connections alive."""
    user = make_user("dave")
    for threads, connection in (("1", "close"), ("4", "keep-alive")):
        env = clean_env(
            POSTERN_DATABASE_URL=base_config.database.url,
            POSTERN_SECURITY_SECRET_KEY=SECRET_KEY,
            POSTERN_HTTP_THREADS=threads,
        )
        with running("api", tmp_path, env) as (base, _log), httpx.Client(base_url=base) as http:
            for _ in range(3):
                resp = http.post(
                    "/api.php", json={"Command": "User.APIKey.List", "APIKey": user.api_key}
                )
                assert resp.json()["APIKeys"][0]["Key"] == user.api_key
                assert resp.headers.get("Connection") == connection


def test_two_instances_on_one_host_keep_to_their_own_control_socket(tmp_path):
    """gunicorn's default control socket is one path per user (~/.gunicorn/gunicorn.ctl, or
    $XDG_RUNTIME_DIR/gunicorn.ctl): two instances must not share it. By default there is
    none; http.control_socket gives an instance one of its own."""
    import socket

    home, runtime = tmp_path / "home", tmp_path / "run"
    home.mkdir()
    runtime.mkdir()
    first, second = tmp_path / "first", tmp_path / "second"
    own_socket = second / "gunicorn.ctl"
    envs = []
    for where in (first, second):
        where.mkdir()
        env = clean_env(HOME=str(home), XDG_RUNTIME_DIR=str(runtime))
        created = postern(
            "user", "create", "alice", "--password", "correct horse", cwd=where, env=env
        )
        assert created.returncode == 0, created.stderr
        envs.append(env)
    envs[1] = {**envs[1], "POSTERN_HTTP_CONTROL_SOCKET": str(own_socket)}

    def works(base):
        body = httpx.post(
            f"{base}/api.php",
            json={"Command": "User.Login", "Username": "alice", "Password": "correct horse"},
        ).json()
        return body["Success"] is True and httpx.get(f"{base}/healthz").status_code == 200

    with running("api", first, envs[0]) as (one, _), running("api", second, envs[1]) as (two, _):
        assert works(one) and works(two)
        # Neither made gunicorn's shared default; the second made its own, and it answers.
        assert not (home / ".gunicorn").exists()
        assert not (runtime / "gunicorn.ctl").exists()
        assert own_socket.is_socket()
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(own_socket))
        assert works(one) and works(two)
