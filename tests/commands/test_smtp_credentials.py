"""SMTP credentials: AddSMTP, GetSMTPs, DeleteSMTP, ResetSMTPPassword."""

from sqlalchemy import select

from core.crypto import token_digest
from models import SMTPCredential


def test_add_smtp_shows_the_password_once(api, user, add_domain, database):
    domain_id = add_domain()
    body = api(
        "EmailGateway.AddSMTP",
        APIKey=user.api_key,
        DomainID=domain_id,
        FromEmail="news@example.com",
        FromName="News",
    )
    assert body["Success"] is True
    smtp = body["SMTP"]
    assert body["NewSMTPID"] == smtp["SMTPID"]
    assert smtp["SMTPHost"] == "mx.postern.test"
    assert smtp["SMTPPorts"] == ["2525", "2587", "2465"]
    assert smtp["Username"].endswith("@example.com")
    assert len(smtp["Password"]) >= 32 and smtp["OtherSMTPInfo"]
    with database.transaction(readonly=True) as s:
        row = s.scalar(select(SMTPCredential))
    assert row.password_digest == token_digest(smtp["Password"])
    assert smtp["Password"] not in (row.password_digest, row.username)

    listed = api("EmailGateway.GetSMTPs", APIKey=user.api_key, DomainID=domain_id)["SMTPs"]
    assert len(listed) == 1
    entry = listed[0]
    assert set(entry) >= {
        "SMTPID",
        "SMTPHost",
        "SMTPPorts",
        "Username",
        "Password",
        "FromEmail",
        "FromName",
        "ReplyToEmail",
        "ReplyToName",
        "IsActive",
    }
    assert entry["Password"] != smtp["Password"] and entry["Password"] == "********"
    assert (entry["FromEmail"], entry["FromName"], entry["IsActive"]) == (
        "news@example.com",
        "News",
        True,
    )


def test_ports_come_from_the_configuration(make_app, user, add_domain):
    domain_id = add_domain()
    call = make_app(smtp__ports=[25, 587, 465], smtp__hostname="smtp.example.net")
    body = call("EmailGateway.AddSMTP", APIKey=user.api_key, DomainID=domain_id)
    assert body["SMTP"]["SMTPPorts"] == ["25", "587", "465"]
    assert body["SMTP"]["SMTPHost"] == "smtp.example.net"
    reset = call("EmailGateway.ResetSMTPPassword", APIKey=user.api_key, smtpid=body["NewSMTPID"])
    assert reset["SMTP"]["Port"] == 587 and reset["SMTP"]["Server"] == "smtp.example.net"


def test_reset_password(api, user, add_domain, database):
    domain_id = add_domain()
    first = api("EmailGateway.AddSMTP", APIKey=user.api_key, DomainID=domain_id)["SMTP"]
    body = api("EmailGateway.ResetSMTPPassword", APIKey=user.api_key, SMTPID=first["SMTPID"])
    assert body["Success"] is True
    smtp = body["SMTP"]
    assert set(smtp) == {"SMTPID", "Server", "Port", "Username", "Password"}
    assert smtp["Username"] == first["Username"] and smtp["Password"] != first["Password"]
    assert smtp["Port"] == 2587
    with database.transaction(readonly=True) as s:
        assert s.scalar(select(SMTPCredential.password_digest)) == token_digest(smtp["Password"])


def test_delete_smtp(api, user, add_domain):
    domain_id = add_domain()
    smtp_id = api("EmailGateway.AddSMTP", APIKey=user.api_key, DomainID=domain_id)["NewSMTPID"]
    assert api("EmailGateway.DeleteSMTP", APIKey=user.api_key, smtpid=smtp_id)["Success"]
    assert api("EmailGateway.GetSMTPs", APIKey=user.api_key, DomainID=domain_id)["SMTPs"] == []
    assert api("EmailGateway.DeleteSMTP", APIKey=user.api_key, smtpid=smtp_id)["ErrorCode"] == 2


def test_errors(api, user, add_domain):
    domain_id = add_domain()
    cases = [
        ("EmailGateway.AddSMTP", {}, 1, "Required field 'DomainID' is missing."),
        ("EmailGateway.AddSMTP", {"DomainID": 404}, 2, "Unable to retrieve the sender domain."),
        (
            "EmailGateway.AddSMTP",
            {"DomainID": domain_id, "FromEmail": "nope"},
            3,
            "Invalid FromEmail",
        ),
        ("EmailGateway.GetSMTPs", {}, 1, "Missing required parameter 'DomainID'."),
        (
            "EmailGateway.GetSMTPs",
            {"DomainID": 404},
            2,
            "Unable to retrieve sender domain details.",
        ),
        ("EmailGateway.DeleteSMTP", {}, 1, "Required field is missing"),
        (
            "EmailGateway.DeleteSMTP",
            {"smtpid": 404},
            2,
            "SMTP configuration not found or user does not have permission",
        ),
        ("EmailGateway.ResetSMTPPassword", {}, 1, "Missing required parameter 'smtpid'"),
        (
            "EmailGateway.ResetSMTPPassword",
            {"smtpid": "x"},
            2,
            "SMTP configuration not found or access denied",
        ),
    ]
    for command, params, code, text in cases:
        body = api(command, APIKey=user.api_key, **params)
        assert (body["ErrorCode"], body["ErrorText"]) == (code, text), (command, params)


def test_generated_passwords_are_letters_and_digits():
    from commands.keys.smtp_credentials import new_password

    passwords = {new_password() for _ in range(200)}
    assert len(passwords) == 200
    # A leading "-" would be read as an option by mail programs' command lines (swaks).
    assert all(len(p) == 32 and p.isascii() and p.isalnum() for p in passwords)
