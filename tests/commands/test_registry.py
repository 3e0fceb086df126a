"""The command registry: every command has a schema and an auth rule; names are unique."""

import pytest
from marshmallow import Schema

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


def test_a_schema_of_fields_as_given_loads_as_marshmallow_would():
    """load_params skips marshmallow for schemas that only normalise names (the send
    fields): the answer must be the same."""
    from marshmallow import fields

    from commands.schema import load_params
    from commands.sending.handlers import SendEmailSchema, SendSchema

    plain = [cmd.schema() for cmd in all_commands() if cmd.schema().as_given]
    assert any(isinstance(schema, SendSchema) for schema in plain)
    assert not SendEmailSchema().as_given  # DomainID is a row id, validated by marshmallow

    class Hooked(CommandSchema):
        Body = fields.Raw()

        @commands.schema.pre_load
        def _other(self, data, **_kw):
            return data

    class Validated(CommandSchema):
        Body = fields.Raw(validate=lambda v: v != "x")

    class Required(CommandSchema):
        Body = fields.Raw(required=True)

    class Keyed(CommandSchema):
        Body = fields.Raw(data_key="b")

    class Plain(CommandSchema):
        Body = fields.Raw()

    assert Plain().as_given
    for schema in (Hooked(), Validated(), Required(), Keyed()):
        assert not schema.as_given, type(schema).__name__

    inputs = [
        {},
        {"subject": " Hi ", "to": None, "Unknown": 1, "TRACKLINKS": "true", "From": ""},
        {"Subject": "", "HTMLContent": "<p>x</p>", "To": [{"email": "a@b.example"}]},
        {"Tags": ["a", "b"], "Headers": {"X-A": "1"}, "SendAt": 0, "BCC": []},
    ]
    for schema in plain:
        for params in inputs:
            assert load_params(schema, params) == schema.load(params)
