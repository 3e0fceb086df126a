"""Templates: EmailGateway.*Template* and /api/v1/templates; checked when saved."""

import pytest

HTML = "<p>Hi {{ name|default('friend') }}</p>{% if vip %}<b>VIP</b>{% endif %}"


def test_create_get_update_delete(api, user):
    k = user.api_key
    made = api(
        "EmailGateway.CreateTemplate",
        APIKey=k,
        Name="Welcome",
        Subject="Hello $$name$$",
        HTMLContent=HTML,
        PlainContent="Hi {{ name }}",
    )
    assert made["Success"] is True, made
    tid = made["TemplateID"]
    assert isinstance(tid, int)
    assert len(made["TemplateHash"]) >= 16
    got = api("EmailGateway.GetTemplate", APIKey=k, TemplateID=tid)["Template"]
    assert got["Name"] == "Welcome"
    assert got["Subject"] == "Hello $$name$$"
    assert got["HTMLContent"] == HTML
    assert got["TemplateHash"] == made["TemplateHash"]
    listed = api("EmailGateway.GetTemplates", APIKey=k)["Templates"]
    assert [t["TemplateID"] for t in listed] == [tid]
    changed = api("EmailGateway.UpdateTemplate", APIKey=k, TemplateID=tid, Subject="New")
    assert changed["Template"]["Subject"] == "New"
    assert changed["Template"]["HTMLContent"] == HTML  # kept
    assert api("EmailGateway.DeleteTemplate", APIKey=k, TemplateID=tid)["Success"] is True
    gone = api("EmailGateway.GetTemplate", APIKey=k, TemplateID=tid)
    assert (gone["ErrorCode"], gone["ErrorText"]) == (2, "Template not found")


@pytest.mark.parametrize(
    "params, code, words",
    [
        ({"HTMLContent": "x"}, 3, "Name"),
        ({"Name": "n", "Subject": "a\nb", "HTMLContent": "x"}, 4, "Subject"),
        ({"Name": "n", "Subject": "s"}, 5, "HTMLContent or PlainContent"),
        ({"Name": "n", "HTMLContent": "a\nb\n{% for x in y %}{% endfor %}"}, 6, "line 3"),
        ({"Name": "n", "HTMLContent": "{{ ''.__class__ }}"}, 6, "attribute"),
        ({"Name": "n", "PlainContent": "{{ 'a' * 100000000 }}"}, 6, "arithmetic"),
        ({"Name": "n", "PlainContent": "ok\n{% if x %}"}, 6, "PlainContent at line 2"),
        ({"Name": "n", "Subject": "{{ x|upper }}", "PlainContent": "x"}, 6, "filter 'upper'"),
        # Seen (schemathesis, PostgreSQL): a NUL in a part was a 500; nor can a lone
        # surrogate be stored anywhere.
        ({"Name": "n", "PlainContent": "\x00a"}, 6, "NUL"),
        ({"Name": "n", "HTMLContent": "a\udb6a"}, 6, "must be text"),
        ({"Name": "n\x00", "PlainContent": "x"}, 3, "Name"),
        ({"Name": "n", "Subject": "\ud800", "PlainContent": "x"}, 4, "Subject"),
    ],
)
def test_a_template_that_is_not_right_is_refused_and_not_stored(api, user, params, code, words):
    body = api("EmailGateway.CreateTemplate", APIKey=user.api_key, **params)
    assert body["Success"] is False
    assert body["ErrorCode"] == code
    assert words in body["ErrorText"]
    assert api("EmailGateway.GetTemplates", APIKey=user.api_key)["Templates"] == []


def test_an_update_with_a_syntax_error_changes_nothing(api, user):
    k = user.api_key
    tid = api("EmailGateway.CreateTemplate", APIKey=k, Name="n", PlainContent="a")["TemplateID"]
    body = api("EmailGateway.UpdateTemplate", APIKey=k, TemplateID=tid, PlainContent="{% set x %}")
    assert body["ErrorCode"] == 6
    assert (
        api("EmailGateway.GetTemplate", APIKey=k, TemplateID=tid)["Template"]["PlainContent"] == "a"
    )


def test_missing_template_id(api, user):
    for name in ("GetTemplate", "UpdateTemplate", "DeleteTemplate"):
        body = api(f"EmailGateway.{name}", APIKey=user.api_key)
        assert (body["ErrorCode"], body["ErrorText"]) == (1, "Missing TemplateID")


def test_v1_templates_belong_to_the_keys_user(client, active_domain, api, user, make_user):
    domain = active_domain()
    auth = {"Authorization": f"Bearer {domain.key}"}
    resp = client.post("/api/v1/templates", headers=auth, json={"Name": "a", "PlainContent": "x"})
    assert resp.status_code == 200, resp.get_json()
    tid = resp.get_json()["TemplateID"]
    # The key's user owns it: the user's own commands see it.
    assert api("EmailGateway.GetTemplate", APIKey=user.api_key, TemplateID=tid)["Success"]
    listed = client.get("/api/v1/templates", headers=auth).get_json()["Templates"]
    assert [t["TemplateID"] for t in listed] == [tid]
    one = client.get(f"/api/v1/templates?TemplateID={tid}", headers=auth).get_json()
    assert one["Template"]["PlainContent"] == "x"
    resp = client.put("/api/v1/templates", headers=auth, json={"TemplateID": tid, "Name": "b"})
    assert resp.get_json()["Template"]["Name"] == "b"
    bad = client.post("/api/v1/templates", headers=auth, json={"Name": "a", "PlainContent": "{{"})
    assert bad.status_code == 400
    assert bad.get_json()["Errors"][0]["Code"] == 6
    # Another user's template: as a missing one (404).
    other = make_user("other")
    theirs = api("EmailGateway.CreateTemplate", APIKey=other.api_key, Name="t", PlainContent="x")
    for method in ("put", "delete"):
        a = getattr(client, method)(
            "/api/v1/templates", headers=auth, json={"TemplateID": theirs["TemplateID"]}
        )
        b = getattr(client, method)("/api/v1/templates", headers=auth, json={"TemplateID": 987654})
        assert (
            (a.status_code, a.get_json())
            == (b.status_code, b.get_json())
            == (
                404,
                {"Errors": [{"Code": 2, "Message": "Template not found"}]},
            )
        )
    resp = client.delete("/api/v1/templates", headers=auth, json={"TemplateID": tid})
    assert resp.status_code == 200
    assert client.get("/api/v1/templates", headers=auth).get_json() == {"Templates": []}


def test_v1_template_with_a_nul_is_refused(client, active_domain):
    """Seen: schemathesis on PostgreSQL, POST /api/v1/templates with a NUL: HTTP 500."""
    domain = active_domain()
    resp = client.post(
        "/api/v1/templates",
        headers={"Authorization": f"Bearer {domain.key}"},
        json={"Name": "\u008d\u00f5hy", "Subject": "", "PlainContent": "\u0000\u00be\u0007"},
    )
    assert resp.status_code == 400, resp.get_data(as_text=True)
    assert resp.get_json()["Errors"][0]["Code"] == 6
