"""Sender API keys: AddAPI, GetAPIs, DeleteAPI; stored as digest plus ciphertext."""

from sqlalchemy import select

from core.crypto import token_digest
from models import SenderAPIKey


def test_add_get_delete(api, user, add_domain, client):
    domain_id = add_domain()
    body = api(
        "EmailGateway.AddAPI",
        APIKey=user.api_key,
        DomainID=str(domain_id),
        Description="My new API key",
        ListID="7",
    )
    assert body["Success"] is True and body["ErrorCode"] == 0
    new_id = body["NewAPIKeyID"]
    assert isinstance(new_id, str)
    key = body["APIKey"]
    assert set(key) == {"Key", "Permissions", "DomainID", "Description"}
    assert key["DomainID"] == str(domain_id) and key["Description"] == "My new API key"
    assert key["Key"].startswith("ps_") and len(key["Key"]) == 3 + 48  # 192 random bits

    listed = api("EmailGateway.GetAPIs", APIKey=user.api_key, DomainID=domain_id)["APIKeys"]
    assert len(listed) == 1
    assert set(listed[0]) >= {
        "KeyID",
        "DomainID",
        "UserID",
        "Key",
        "Permissions",
        "CreationDate",
        "LastUsedDate",
    }
    assert (listed[0]["KeyID"], listed[0]["Key"]) == (new_id, key["Key"])
    assert listed[0]["UserID"] == str(user.id) and listed[0]["LastUsedDate"] is None

    assert (
        client.get(
            "/api/v1/webhooks", headers={"Authorization": f"Bearer {key['Key']}"}
        ).status_code
        == 200
    )
    listed = api("EmailGateway.GetAPIs", APIKey=user.api_key, DomainID=domain_id)["APIKeys"]
    assert listed[0]["LastUsedDate"] is not None

    assert api("EmailGateway.DeleteAPI", APIKey=user.api_key, ApiKeyId=new_id)["Success"]
    assert api("EmailGateway.GetAPIs", APIKey=user.api_key, DomainID=domain_id)["APIKeys"] == []
    resp = client.get("/api/v1/webhooks", headers={"Authorization": f"Bearer {key['Key']}"})
    assert resp.status_code == 401 and resp.get_json()["Errors"][0]["Code"] == 13


def test_key_is_stored_as_digest_and_ciphertext(api, user, add_domain, database):
    domain_id = add_domain()
    plain = api("EmailGateway.AddAPI", APIKey=user.api_key, DomainID=domain_id, Description="d")[
        "APIKey"
    ]["Key"]
    with database.transaction(readonly=True) as s:
        row = s.scalar(select(SenderAPIKey))
    assert row.key_digest == token_digest(plain)
    assert plain not in row.key_encrypted


def test_add_api_errors(api, user, add_domain):
    domain_id = add_domain()
    cases = [
        ({"DomainID": domain_id}, 1, "Missing or invalid 'Description' parameter"),
        (
            {"DomainID": domain_id, "Description": "x" * 256},
            1,
            "Missing or invalid 'Description' parameter",
        ),
        ({"Description": "d"}, 2, "Missing or invalid 'DomainID' parameter"),
        ({"Description": "d", "DomainID": "abc"}, 2, "Missing or invalid 'DomainID' parameter"),
        (
            {"Description": "d", "DomainID": 99999},
            3,
            "Unable to retrieve sender domain with provided 'DomainID'",
        ),
    ]
    for params, code, text in cases:
        body = api("EmailGateway.AddAPI", APIKey=user.api_key, **params)
        assert (body["ErrorCode"], body["ErrorText"]) == (code, text), params


def test_get_and_delete_errors(api, user):
    assert api("EmailGateway.GetAPIs", APIKey=user.api_key)["ErrorCode"] == 1
    assert api("EmailGateway.GetAPIs", APIKey=user.api_key, DomainID=5)["ErrorCode"] == 2
    body = api("EmailGateway.DeleteAPI", APIKey=user.api_key)
    assert (body["ErrorCode"], body["ErrorText"]) == (1, "Missing required parameter: ApiKeyId")
    body = api("EmailGateway.DeleteAPI", APIKey=user.api_key, ApiKeyId=77)
    assert (body["ErrorCode"], body["ErrorText"]) == (2, "Invalid API key or API key not found")
