"""Suppression.Browse, Check, Add, Delete."""


def test_add_check_browse_delete(api, user, add_domain, clock):
    domain_id = add_domain()
    k = user.api_key
    assert (
        api("Suppression.Add", APIKey=k, EmailAddress="A@Example.org", Reason="asked us")["Added"]
        is True
    )
    assert api("Suppression.Add", APIKey=k, EmailAddress="a@example.org")["Added"] is False
    clock.advance(seconds=5)
    api("Suppression.Add", APIKey=k, EmailAddress="b@example.net", DomainID=domain_id)
    check = api("Suppression.Check", APIKey=k, EmailAddress="a@EXAMPLE.org")
    assert check["Suppressed"] is True
    assert check["Entries"][0]["SuppressionSource"] == "Manual"
    assert check["Entries"][0]["Reason"] == "asked us"
    assert api("Suppression.Check", APIKey=k, EmailAddress="c@x.example")["Suppressed"] is False

    page = api("Suppression.Browse", APIKey=k)
    assert page["TotalRecords"] == 2
    assert [e["EmailAddress"] for e in page["SuppressedEmails"]] == [
        "b@example.net",
        "a@example.org",
    ]
    assert page["SuppressedEmails"][0]["DomainID"] == str(domain_id)
    assert api("Suppression.Browse", APIKey=k, SearchPattern="*.org")["TotalRecords"] == 1
    assert api("Suppression.Browse", APIKey=k, SearchPattern="example")["TotalRecords"] == 2
    assert api("Suppression.Browse", APIKey=k, SearchPattern="a%")["TotalRecords"] == 0
    paged = api("Suppression.Browse", APIKey=k, StartFrom=1, RetrieveCount=1)
    assert paged["TotalRecords"] == 2 and len(paged["SuppressedEmails"]) == 1
    assert api("Suppression.Browse", APIKey=k, Source="bounce")["TotalRecords"] == 0

    assert api("Suppression.Delete", APIKey=k, EmailAddress="A@example.org")["Deleted"] == 1
    assert api("Suppression.Check", APIKey=k, EmailAddress="a@example.org")["Suppressed"] is False
    body = api("Suppression.Delete", APIKey=k, EmailAddress="a@example.org")
    assert body["ErrorCode"] == 2


def test_errors(api, user):
    k = user.api_key
    assert api("Suppression.Add", APIKey=k)["ErrorCode"] == 1
    assert api("Suppression.Add", APIKey=k, EmailAddress="nope")["ErrorCode"] == 2
    assert (
        api("Suppression.Add", APIKey=k, EmailAddress="a@b.example", DomainID=777)["ErrorCode"] == 3
    )
    assert api("Suppression.Check", APIKey=k)["ErrorCode"] == 1
    assert api("Suppression.Delete", APIKey=k)["ErrorCode"] == 1
    assert api("Suppression.Browse", APIKey=k, Source="x")["ErrorCode"] == 1
    assert api("Suppression.Browse", APIKey=k, DomainID=777)["ErrorCode"] == 2
    assert api("Suppression.Browse", APIKey=k, StartFrom=-1)["ErrorCode"] == 3
    assert api("Suppression.Browse", APIKey=k, RetrieveCount=5000)["ErrorCode"] == 4


def test_each_user_has_their_own_list(api, user, make_user, add_domain):
    other = make_user("mallory")
    theirs = add_domain("theirs.example", key=other.api_key)
    api("Suppression.Add", APIKey=other.api_key, EmailAddress="x@y.example")
    assert api("Suppression.Browse", APIKey=user.api_key)["TotalRecords"] == 0
    assert (
        api("Suppression.Check", APIKey=user.api_key, EmailAddress="x@y.example")["Suppressed"]
        is False
    )
    assert (
        api("Suppression.Delete", APIKey=user.api_key, EmailAddress="x@y.example")["ErrorCode"] == 2
    )
    assert (
        api("Suppression.Add", APIKey=user.api_key, EmailAddress="z@y.example", DomainID=theirs)[
            "ErrorCode"
        ]
        == 3
    )
    assert (
        api("Suppression.Check", APIKey=other.api_key, EmailAddress="x@y.example")["Suppressed"]
        is True
    )
