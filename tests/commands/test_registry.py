"""The command registry: every command has a schema and an auth rule; names are unique."""

import pytest
from marshmallow import Schema, fields

import commands
from commands.registry import Auth, DuplicateCommand, all_commands, command, find
from commands.schema import CommandSchema


def test_every_command_has_a_schema_and_an_auth_rule():
    found = all_commands()
    assert {c.name for c in found} >= {
        "User.Login",
        "User.Logout",
        "User.APIKey.Create",
        "User.APIKey.List",
        "User.APIKey.Delete",
        "User.Create",
    }
    for cmd in found:
        assert issubclass(cmd.schema, Schema), cmd.name
        assert isinstance(cmd.auth, Auth), cmd.name
        assert callable(cmd.handler), cmd.name


def test_every_required_parameter_has_an_error_code():
    for cmd in all_commands():
        for name, field in cmd.schema().fields.items():
            if field.required:
                assert field.metadata.get("missing"), f"{cmd.name}.{name}"


def test_names_match_case_insensitively():
    assert find("user.login") is find("USER.LOGIN") is find("User.Login")
    assert find("No.Such") is None
    assert find(None) is None


def test_a_duplicate_name_fails_at_registration():
    with pytest.raises(DuplicateCommand):
        command("user.LOGIN", schema=CommandSchema, auth=Auth.PUBLIC)(lambda ctx: {})


def test_a_command_needs_a_schema_and_an_auth_rule():
    with pytest.raises(TypeError):
        command("Test.NoAuth", schema=CommandSchema, auth="user")
    with pytest.raises(TypeError):
        command("Test.NoSchema", schema=dict, auth=Auth.USER)
    assert commands.find("Test.NoAuth") is None


def test_a_schema_of_raw_fields_loads_as_marshmallow_would():
    """load_params skips marshmallow for RawFieldsSchema schemas (the send fields): the
    answer must be what marshmallow's own load gives."""
    from commands.schema import RawFieldsSchema, load_params
    from commands.sending.handlers import SendEmailSchema, SendSchema

    plain = [cmd.schema() for cmd in all_commands() if issubclass(cmd.schema, RawFieldsSchema)]
    assert any(isinstance(schema, SendSchema) for schema in plain)
    assert all(schema.as_given for schema in plain)
    assert not issubclass(SendEmailSchema, RawFieldsSchema)  # DomainID is validated

    class Plain(RawFieldsSchema):
        Body = fields.Raw()
        Other = fields.Raw()

    plain.append(Plain())
    inputs = [
        {},
        {"subject": " Hi ", "to": None, "Unknown": 1, "TRACKLINKS": "true", "From": ""},
        {"Subject": "", "HTMLContent": "<p>x</p>", "To": [{"email": "a@b.example"}]},
        {"Tags": ["a", "b"], "Headers": {"X-A": "1"}, "SendAt": 0, "BCC": []},
        {"body": "  as sent\n", "OTHER": {"a": None}, "other": "second", 5: "x"},
        {"Subject": "\ud800", "HTMLContent": "   ", "CC": False, "BCC": 0},
    ]
    for schema in plain:
        for params in inputs:
            assert load_params(schema, params) == schema.load(params), (schema, params)
    # An instance made with options of its own is loaded by marshmallow, not as given.
    partial = Plain(only=("Body",))
    assert not partial.as_given
    assert load_params(partial, {"Body": 1, "Other": 2}) == {"Body": 1}


def test_a_raw_fields_schema_that_would_load_otherwise_fails_when_made():
    """Each refused declaration differs from the control in one thing."""
    from marshmallow import RAISE, post_load, pre_load

    from commands.schema import RawFieldsSchema

    class Control(RawFieldsSchema):
        Body = fields.Raw()

    assert Control().as_given

    def refused(why: str):
        return pytest.raises(TypeError, match=f"^Declared is a RawFieldsSchema: {why}")

    with refused("Body is a String"):

        class Declared(RawFieldsSchema):
            Body = fields.String()

    for options in (
        dict(required=True),
        dict(validate=lambda v: v != "x"),
        dict(load_default="x"),
        dict(data_key="b"),
        dict(attribute="b"),
        dict(dump_only=True),
    ):
        with refused("Body must be an optional fields.Raw"):

            class Declared(RawFieldsSchema):  # noqa: F811 - one declaration per case
                Body = fields.Raw(**options)

    with refused("Declared.other: such a schema holds fields only"):

        class Declared(RawFieldsSchema):  # noqa: F811
            Body = fields.Raw()

            @pre_load
            def other(self, data, **_kw):
                return data

    with refused("Declared.other: such a schema holds fields only"):

        class Declared(RawFieldsSchema):  # noqa: F811
            Body = fields.Raw()

            @post_load
            def other(self, data, **_kw):
                return data

    with refused("Declared sets Meta options"):

        class Declared(RawFieldsSchema):  # noqa: F811
            Body = fields.Raw()

            class Meta:
                unknown = RAISE


def test_a_subclass_of_a_raw_fields_schema_is_checked_too():
    from marshmallow import fields

    from commands.schema import RawFieldsSchema
    from commands.sending.handlers import SendSchema

    class More(SendSchema):
        Extra = fields.Raw()

    assert More().as_given and "Extra" in More().fields
    with pytest.raises(TypeError, match="DomainID is a Integer"):

        class WithID(SendSchema):
            DomainID = fields.Integer()

    assert issubclass(More, RawFieldsSchema)


def test_every_field_of_every_command_has_an_error_code():
    """load_params answers a field's failure with its code: a field without one would be a
    500 (a send's Raw fields are checked by the send checks instead)."""
    from marshmallow import fields as mfields

    from commands.gateway import schema_of
    from commands.registry import all_commands

    for cmd in all_commands():
        for name, field in schema_of(cmd).fields.items():
            if type(field) is mfields.Raw:
                continue
            assert field.metadata.get("missing") or field.metadata.get("invalid"), (
                f"{cmd.name}: {name} has no error code"
            )
