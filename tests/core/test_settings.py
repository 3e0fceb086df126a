"""Settings: defaults, the TOML file, environment overrides, errors and the secret key."""

import dataclasses
import os
import stat
import subprocess
import sys
import tomllib
import typing
from pathlib import Path

import pytest

from core.settings import SETTINGS, ConfigError, Section, load_config, resolve_secret_key

ROOT = Path(__file__).resolve().parents[2]


def test_defaults():
    c = load_config(environ={})
    assert c.database.url == "sqlite:///postern.db"
    assert c.http.port == 8080 and c.security.session_idle_timeout == 86400
    assert c.is_sqlite


def test_api_worker_processes_default_to_one_per_core_on_sqlite_two_on_a_server():
    from app.http.server import worker_count

    cores = os.cpu_count() or 1
    assert worker_count(load_config(environ={})) == cores
    server = {"POSTERN_DATABASE_URL": "postgresql+psycopg://postern@db/postern"}
    assert worker_count(load_config(environ=server)) == 2 * cores
    mariadb = {"POSTERN_DATABASE_URL": "mysql+pymysql://postern@db/postern"}
    assert worker_count(load_config(environ=mariadb)) == 2 * cores
    assert worker_count(load_config(environ={"POSTERN_HTTP_WORKERS": "3"})) == 3
    assert worker_count(load_config(environ={**server, "POSTERN_HTTP_WORKERS": "5"})) == 5


def test_example_file_documents_every_setting_with_its_default():
    example = tomllib.loads((ROOT / "config.example.toml").read_text())
    documented = {(sec, key): v for sec, table in example.items() for key, v in table.items()}
    assert set(documented) == {(s.section, s.key) for s in SETTINGS}
    for s in SETTINGS:
        assert documented[(s.section, s.key)] == s.default, s.name
    assert load_config(ROOT / "config.example.toml", environ={}).http.port == 8080


def test_each_section_is_a_dataclass_naming_the_tables_keys_with_their_types():
    sections = {cls.section: cls for cls in Section.__subclasses__()}
    assert set(sections) == {s.section for s in SETTINGS}
    typed = {
        (name, field.name): typing.get_type_hints(cls)[field.name]
        for name, cls in sections.items()
        for field in dataclasses.fields(cls)
    }
    assert typed == {(s.section, s.key): s.kind for s in SETTINGS}
    for s in SETTINGS:
        kind = typing.get_origin(s.kind) or s.kind
        assert isinstance(s.default, kind), s.name
        items = typing.get_args(s.kind)
        assert all(isinstance(i, items[0]) for i in s.default) if items else True, s.name
        assert s.check is None or s.check(s.default) is None, s.name


def test_sections_hold_values_of_their_types_and_are_frozen():
    c = load_config(
        environ={"POSTERN_DNS_NAMESERVERS": "127.0.0.1, 127.0.0.2", "POSTERN_SMTP_PORTS": "25"}
    )
    for name in {s.section for s in SETTINGS}:
        section = getattr(c, name)
        assert isinstance(section, Section) and section.section == name
        for field in dataclasses.fields(section):
            hint = typing.get_type_hints(type(section))[field.name]
            value = getattr(section, field.name)
            assert isinstance(value, typing.get_origin(hint) or hint), f"{name}.{field.name}"
    assert c.dns.nameservers == ["127.0.0.1", "127.0.0.2"] and c.smtp.ports == [25]
    assert c.replace(delivery__batch_size="7").delivery.batch_size == 7
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.delivery.batch_size = 1


def test_file_then_environment(tmp_path):
    f = tmp_path / "p.toml"
    f.write_text('[http]\nport = 9000\nhost = "0.0.0.0"\n[log]\nformat = "text"\n')
    c = load_config(
        f,
        environ={
            "POSTERN_HTTP_PORT": "9100",
            "POSTERN_DATABASE_ECHO": "yes",
            "POSTERN_TEST_WHATEVER": "ignored",
            "HOME": "/root",
        },
    )
    assert c.http.port == 9100 and c.http.host == "0.0.0.0"
    assert c.database.echo is True and c.log.format == "text"


@pytest.mark.parametrize(
    "env, message",
    [
        (
            {"POSTERN_HTTP_PORT": "abc"},
            "http.port: must be a whole number, got 'abc' (from POSTERN_HTTP_PORT)",
        ),
        ({"POSTERN_HTTP_PORT": "70000"}, "http.port: must be a port number"),
        ({"POSTERN_HTTP_THREADS": "0"}, "http.threads: must be greater than zero"),
        ({"POSTERN_DATABASE_ECHO": "maybe"}, "database.echo: must be true or false"),
        ({"POSTERN_LOG_LEVEL": "LOUD"}, "log.level: must be one of DEBUG, INFO, WARNING, ERROR"),
        ({"POSTERN_DATABASE_URL": "oracle://x"}, "database.url: must be an SQLite, PostgreSQL"),
        ({"POSTERN_DATABASE_URL": "not a url"}, "database.url: is not a database URL"),
        ({"POSTERN_HTTP_PROT": "1"}, "POSTERN_HTTP_PROT: no such setting"),
    ],
)
def test_invalid_environment_values_name_the_key(env, message):
    with pytest.raises(ConfigError) as err:
        load_config(environ=env)
    assert message in str(err.value)


@pytest.mark.parametrize(
    "body, message",
    [
        ("[http]\nprot = 1\n", "http.prot: unknown setting"),
        ("[htp]\nport = 1\n", "htp: unknown section"),
        ("[http]\nport = true\n", "http.port: must be a whole number"),
        ("[http]\nport = \n", "is not valid TOML"),
        ("http = 3\n", "http: must be a table"),
    ],
)
def test_invalid_file_names_the_key(tmp_path, body, message):
    f = tmp_path / "bad.toml"
    f.write_text(body)
    with pytest.raises(ConfigError) as err:
        load_config(f, environ={})
    assert message in str(err.value)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "nope.toml", environ={})


def test_secret_key_is_generated_once_beside_the_sqlite_database(tmp_path):
    c = load_config(environ={"POSTERN_DATABASE_URL": f"sqlite:///{tmp_path}/data/p.db"})
    key = resolve_secret_key(c)
    key_file = tmp_path / "data" / "p.key"
    assert key_file.exists() and len(key) >= 32
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert resolve_secret_key(c) == key
    assert [p.name for p in key_file.parent.iterdir()] == ["p.key"]


def test_secret_key_from_configuration(tmp_path):
    c = load_config(
        environ={
            "POSTERN_SECURITY_SECRET_KEY": "k" * 40,
            "POSTERN_DATABASE_URL": f"sqlite:///{tmp_path}/p.db",
        }
    )
    assert resolve_secret_key(c) == b"k" * 40
    assert not (tmp_path / "p.key").exists()
    with pytest.raises(ConfigError, match="security.secret_key: must be at least 32"):
        resolve_secret_key(c.replace(security__secret_key="short"))


def test_server_database_needs_a_configured_secret_key():
    c = load_config(environ={"POSTERN_DATABASE_URL": "postgresql+psycopg://u@127.0.0.1/x"})
    with pytest.raises(ConfigError, match="security.secret_key: must be set"):
        resolve_secret_key(c)


def test_cli_stops_with_one_line_naming_the_key(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("POSTERN_")}
    env["POSTERN_HTTP_PORT"] = "eighty"
    proc = subprocess.run(
        [sys.executable, "-m", "app", "serve"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "postern: configuration error: http.port: must be a whole number, got 'eighty' "
        "(from POSTERN_HTTP_PORT)"
    ]
    assert not (tmp_path / "postern.db").exists()
