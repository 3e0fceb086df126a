"""Settings: one table of every key, loaded from TOML and POSTERN_<SECTION>_<KEY> variables."""

from __future__ import annotations

import base64
import os
import secrets
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Generic, Self, TypeVar

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

ENV_PREFIX = "POSTERN_"


class ConfigError(Exception):
    """A setting is missing or invalid; the message names the key."""


T = TypeVar("T")


@dataclass(frozen=True)
class Setting(Generic[T]):
    """One key: its section, its type (``int``, ``list[int]``...), default and check."""

    section: str
    key: str
    kind: type[T]
    default: T
    check: Callable[[T], str | None] | None = None

    @property
    def name(self) -> str:
        return f"{self.section}.{self.key}"

    @property
    def env(self) -> str:
        return f"{ENV_PREFIX}{self.section.upper()}_{self.key.upper()}"


def _port(v: int) -> str | None:
    return None if 1 <= v <= 65535 else "must be a port number from 1 to 65535"


def _positive(v: int | float) -> str | None:
    return None if v > 0 else "must be greater than zero"


def _not_negative(v: int) -> str | None:
    return None if v >= 0 else "must be zero or more"


def _one_of(*choices: str) -> Callable[[str], str | None]:
    def check(v: str) -> str | None:
        return None if v in choices else "must be one of " + ", ".join(choices)

    return check


def _one_of_int(*choices: int) -> Callable[[int], str | None]:
    def check(v: int) -> str | None:
        return None if v in choices else "must be one of " + ", ".join(map(str, choices))

    return check


def _database_url(v: str) -> str | None:
    try:
        url = make_url(v)
    except ArgumentError:
        return (
            "is not a database URL (sqlite:///FILE, postgresql+psycopg://..., mysql+pymysql://...)"
        )
    if url.get_backend_name() not in ("sqlite", "postgresql", "mysql", "mariadb"):
        return "must be an SQLite, PostgreSQL or MariaDB/MySQL URL"
    return None


def _port_list(v: Sequence[object]) -> str | None:
    return (
        None
        if all(isinstance(p, int) and 1 <= p <= 65535 for p in v)
        else ("must be a list of port numbers")
    )


def _positive_list(v: Sequence[object]) -> str | None:
    return (
        None
        if v and all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in v)
        else "must be a list of whole numbers greater than zero"
    )


def _http_url(v: str) -> str | None:
    from urllib.parse import urlsplit

    parts = urlsplit(v)
    return (
        None
        if parts.scheme in ("http", "https") and parts.hostname
        else ("must be an http:// or https:// URL")
    )


def _subdomain_label(v: str) -> str | None:
    import re

    return (
        None
        if re.fullmatch(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?", v)
        else ("must be one DNS label (a-z, 0-9, -)")
    )


def _ratelimit_storage(v: str) -> str | None:
    return (
        None
        if v == "database" or v.startswith(("redis://", "rediss://"))
        else ('must be "database" or a redis:// URL')
    )


# Every setting Postern reads. config.example.toml documents each one, and each section's
# dataclass below has a field of the same type for each of its keys (tests keep all three in
# step). The rows hold values of different types, hence Setting[Any].
SETTINGS: tuple[Setting[Any], ...] = (
    Setting("database", "url", str, "sqlite:///postern.db", _database_url),
    Setting("database", "pool_size", int, 5, _positive),
    Setting("database", "echo", bool, False),
    Setting("http", "host", str, "127.0.0.1"),
    Setting("http", "port", int, 8080, _port),
    Setting("http", "workers", int, 0, _not_negative),
    Setting("http", "threads", int, 1, _positive),
    Setting("http", "timeout", int, 30, _positive),
    Setting("http", "max_body_bytes", int, 26_214_400, _positive),
    Setting("http", "public_url", str, "http://127.0.0.1:8080", _http_url),
    Setting("http", "proxy_hops", int, 0, _not_negative),
    Setting("http", "control_socket", str, ""),
    Setting("security", "secret_key", str, ""),
    Setting("security", "session_idle_timeout", int, 86_400, _positive),
    Setting("security", "login_failures_per_user", int, 5, _positive),
    Setting("security", "login_failures_per_address", int, 20, _positive),
    Setting("security", "login_lockout", int, 900, _positive),
    Setting("security", "session_max_age", int, 604_800, _positive),
    Setting("domains", "max_per_user", int, 50, _positive),
    Setting("domains", "require_verification", bool, True),
    Setting("domains", "subdomain", str, "sl", _subdomain_label),
    Setting("domains", "dkim_selector", str, "key1", _subdomain_label),
    Setting("domains", "dkim_rsa_bits", int, 2048, _one_of_int(1024, 2048, 3072, 4096)),
    Setting("domains", "dkim_ed25519", bool, False),
    Setting("domains", "dkim_ed25519_selector", str, "key2", _subdomain_label),
    Setting("domains", "dkim_retire_after_days", int, 7, _not_negative),
    Setting("domains", "dkim_rotate_days", int, 0, _not_negative),
    Setting("domains", "spf_value", str, "v=spf1 a:{hostname} ~all"),
    Setting("dns", "nameservers", list[str], [], None),
    Setting("dns", "port", int, 53, _port),
    Setting("dns", "timeout", float, 5.0, _positive),
    Setting("dns", "verify_budget", float, 10.0, _positive),
    Setting("smtp", "hostname", str, "localhost"),
    Setting("smtp", "ports", list[int], [2525, 2587, 2465], _port_list),
    Setting("smtp", "listen_host", str, "127.0.0.1"),
    Setting("smtp", "tls_cert", str, ""),
    Setting("smtp", "tls_key", str, ""),
    Setting("smtp", "allow_plain_auth", bool, False),
    Setting("smtp", "auth_max_failures", int, 5, _positive),
    Setting("smtp", "auth_lockout", int, 900, _positive),
    Setting("sending", "quota", int, 0, _not_negative),
    Setting("sending", "quota_period", int, 86_400, _positive),
    Setting("sending", "max_recipients", int, 50, _positive),
    Setting("sending", "max_bcc", int, 50, _not_negative),
    Setting("sending", "max_reply_to", int, 5, _not_negative),
    Setting("sending", "max_message_bytes", int, 10_485_760, _positive),
    Setting("sending", "max_schedule_seconds", int, 2_592_000, _positive),
    Setting("delivery", "mx_port", int, 25, _port),
    Setting("delivery", "tls", str, "opportunistic", _one_of("opportunistic", "required", "none")),
    Setting("delivery", "smarthost", str, ""),
    Setting("delivery", "smarthost_port", int, 587, _port),
    Setting("delivery", "smarthost_username", str, ""),
    Setting("delivery", "smarthost_password", str, ""),
    Setting("delivery", "smarthost_tls", str, "starttls", _one_of("starttls", "implicit", "none")),
    Setting("delivery", "smarthost_verify", bool, True),
    Setting("delivery", "smarthost_ca_file", str, ""),
    Setting("delivery", "allow_private_mx", bool, False),
    Setting("delivery", "concurrency_per_host", int, 4, _positive),
    Setting("delivery", "batch_size", int, 200, _positive),
    Setting("delivery", "build_processes", int, 0, _not_negative),
    Setting("delivery", "claim_timeout", int, 600, _positive),
    Setting("delivery", "max_age", int, 259_200, _positive),
    Setting("delivery", "retry_base", int, 60, _positive),
    Setting("delivery", "retry_max", int, 21_600, _positive),
    Setting("delivery", "soft_bounce_limit", int, 3, _positive),
    Setting("delivery", "soft_bounce_days", int, 3, _not_negative),
    Setting("delivery", "timeout", float, 60.0, _positive),
    Setting("delivery", "poll_interval", float, 1.0, _positive),
    Setting("webhooks", "allow_private", bool, False),
    Setting("webhooks", "timeout", float, 10.0, _positive),
    Setting(
        "webhooks",
        "retry_schedule",
        list[int],
        [60, 300, 1800, 7200, 21_600, 86_400],
        _positive_list,
    ),
    Setting("webhooks", "concurrency", int, 10, _positive),
    Setting("webhooks", "batch_size", int, 500, _positive),
    Setting("webhooks", "gap_expiry", int, 300, _positive),
    Setting("webhooks", "poll_interval", float, 1.0, _positive),
    Setting("webhooks", "keep_days", int, 30, _not_negative),
    Setting("webhooks", "concurrency_per_webhook", int, 2, _positive),
    Setting("webhooks", "concurrency_per_user", int, 5, _positive),
    Setting("webhooks", "max_per_domain", int, 10, _positive),
    Setting("webhooks", "disable_after_days", int, 3, _not_negative),
    Setting("webhooks", "postal_key_file", str, ""),
    Setting("tracking", "base_url", str, "", lambda v: _http_url(v) if v else None),
    Setting("tracking", "repeat_window", int, 60, _not_negative),
    Setting("ratelimit", "storage", str, "database", _ratelimit_storage),
    Setting("ratelimit", "requests", int, 100, _positive),
    Setting("ratelimit", "period", int, 60, _positive),
    Setting("ratelimit", "user_requests", int, 600, _positive),
    Setting("ratelimit", "user_period", int, 60, _positive),
    Setting("log", "level", str, "INFO", _one_of("DEBUG", "INFO", "WARNING", "ERROR")),
    Setting("log", "format", str, "json", _one_of("json", "text")),
    Setting("metrics", "token", str, ""),
    Setting("metrics", "multiproc_dir", str, ""),
)

_BY_NAME = {s.name: s for s in SETTINGS}
_SECTIONS = {s.section for s in SETTINGS}

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _coerce(setting: Setting[Any], raw: object, origin: str) -> object:
    """Turn a raw TOML or environment value into the setting's type, or raise ConfigError."""
    where = f" (from {origin})" if origin else ""
    kind = setting.kind
    value: object
    if kind is bool:
        if isinstance(raw, bool):
            value = raw
        elif isinstance(raw, str) and raw.strip().lower() in _TRUE | _FALSE:
            value = raw.strip().lower() in _TRUE
        else:
            raise ConfigError(f"{setting.name}: must be true or false, got {raw!r}{where}")
    elif kind is int:
        if isinstance(raw, bool) or not isinstance(raw, str | int | float):
            raise ConfigError(f"{setting.name}: must be a whole number, got {raw!r}{where}")
        try:
            value = int(raw)
        except ValueError:
            raise ConfigError(
                f"{setting.name}: must be a whole number, got {raw!r}{where}"
            ) from None
    elif kind is float:
        if isinstance(raw, bool) or not isinstance(raw, str | int | float):
            raise ConfigError(f"{setting.name}: must be a number, got {raw!r}{where}")
        try:
            value = float(raw)
        except ValueError:
            raise ConfigError(f"{setting.name}: must be a number, got {raw!r}{where}") from None
    elif kind == list[int] or kind == list[str]:
        # A TOML array, or a comma-separated string (environment variables).
        items: list[object]
        if isinstance(raw, str):
            items = [p.strip() for p in raw.split(",") if p.strip()]
        elif isinstance(raw, list):
            items = raw
        else:
            raise ConfigError(f"{setting.name}: must be a list, got {raw!r}{where}")
        # Whole numbers given as text become numbers (the checks then refuse what is not).
        value = [_list_item(i) for i in items] if kind == list[int] else [str(i) for i in items]
    elif kind is str:
        if not isinstance(raw, str):
            raise ConfigError(f"{setting.name}: must be a string, got {raw!r}{where}")
        value = raw.strip()
    else:  # pragma: no cover - the table above only uses the kinds handled here
        raise ConfigError(f"{setting.name}: unsupported kind {kind!r}")
    if setting.check is not None:
        problem = setting.check(value)
        if problem:
            raise ConfigError(f"{setting.name}: {problem}, got {raw!r}{where}")
    return value


def _list_item(item: object) -> object:
    if isinstance(item, str) and item.isdigit():
        return int(item)
    return item


class Section:
    """A section of the settings: subclasses are frozen dataclasses, one field per key."""

    section: ClassVar[str]

    @classmethod
    def of(cls, values: Mapping[str, object]) -> Self:
        """The section's keys taken from resolved values keyed ``section.key``."""
        return cls(**{s.key: values[s.name] for s in SETTINGS if s.section == cls.section})


@dataclass(frozen=True)
class DatabaseSettings(Section):
    """[database]: where Postern keeps its data."""

    section: ClassVar[str] = "database"
    url: str
    pool_size: int
    echo: bool


@dataclass(frozen=True)
class HTTPSettings(Section):
    """[http]: the API's listener and its gunicorn processes."""

    section: ClassVar[str] = "http"
    host: str
    port: int
    workers: int
    threads: int
    timeout: int
    max_body_bytes: int
    public_url: str
    proxy_hops: int
    control_socket: str


@dataclass(frozen=True)
class SecuritySettings(Section):
    """[security]: the secret key and sessions."""

    section: ClassVar[str] = "security"
    secret_key: str
    session_idle_timeout: int
    login_failures_per_user: int
    login_failures_per_address: int
    login_lockout: int
    session_max_age: int


@dataclass(frozen=True)
class DomainsSettings(Section):
    """[domains]: sending domains, their DKIM keys and DNS records."""

    section: ClassVar[str] = "domains"
    max_per_user: int
    require_verification: bool
    subdomain: str
    dkim_selector: str
    dkim_rsa_bits: int
    dkim_ed25519: bool
    dkim_ed25519_selector: str
    dkim_retire_after_days: int
    dkim_rotate_days: int
    spf_value: str


@dataclass(frozen=True)
class DNSSettings(Section):
    """[dns]: the resolver used for verification and MX lookups."""

    section: ClassVar[str] = "dns"
    nameservers: list[str]
    port: int
    timeout: float
    verify_budget: float


@dataclass(frozen=True)
class SMTPSettings(Section):
    """[smtp]: the relay's listeners and authentication."""

    section: ClassVar[str] = "smtp"
    hostname: str
    ports: list[int]
    listen_host: str
    tls_cert: str
    tls_key: str
    allow_plain_auth: bool
    auth_max_failures: int
    auth_lockout: int


@dataclass(frozen=True)
class SendingSettings(Section):
    """[sending]: quotas and limits on what one send may hold."""

    section: ClassVar[str] = "sending"
    quota: int
    quota_period: int
    max_recipients: int
    max_bcc: int
    max_reply_to: int
    max_message_bytes: int
    max_schedule_seconds: int


@dataclass(frozen=True)
class DeliverySettings(Section):
    """[delivery]: the delivery worker, its SMTP client and retries."""

    section: ClassVar[str] = "delivery"
    mx_port: int
    tls: str
    smarthost: str
    smarthost_port: int
    smarthost_username: str
    smarthost_password: str
    smarthost_tls: str
    smarthost_verify: bool
    smarthost_ca_file: str
    allow_private_mx: bool
    concurrency_per_host: int
    batch_size: int
    build_processes: int
    claim_timeout: int
    max_age: int
    retry_base: int
    retry_max: int
    soft_bounce_limit: int
    soft_bounce_days: int
    timeout: float
    poll_interval: float


@dataclass(frozen=True)
class WebhooksSettings(Section):
    """[webhooks]: the webhook sender."""

    section: ClassVar[str] = "webhooks"
    allow_private: bool
    timeout: float
    retry_schedule: list[int]
    concurrency: int
    batch_size: int
    gap_expiry: int
    poll_interval: float
    keep_days: int
    concurrency_per_webhook: int
    concurrency_per_user: int
    max_per_domain: int
    disable_after_days: int
    postal_key_file: str


@dataclass(frozen=True)
class TrackingSettings(Section):
    """[tracking]: where tracking URLs point."""

    section: ClassVar[str] = "tracking"
    base_url: str
    repeat_window: int


@dataclass(frozen=True)
class RateLimitSettings(Section):
    """[ratelimit]: the API's request limit and where its counters live."""

    section: ClassVar[str] = "ratelimit"
    storage: str
    requests: int
    period: int
    user_requests: int
    user_period: int


@dataclass(frozen=True)
class LogSettings(Section):
    """[log]: log level and line format."""

    section: ClassVar[str] = "log"
    level: str
    format: str


@dataclass(frozen=True)
class MetricsSettings(Section):
    """[metrics]: who may read /metrics, and where the processes of one host keep them."""

    section: ClassVar[str] = "metrics"
    token: str
    multiproc_dir: str


class Config:
    """Resolved settings, read as ``config.http.port``: one typed section per table."""

    def __init__(self, values: Mapping[str, object], source: str | None = None) -> None:
        self._values = dict(values)
        self.source = source
        self.database = DatabaseSettings.of(self._values)
        self.http = HTTPSettings.of(self._values)
        self.security = SecuritySettings.of(self._values)
        self.domains = DomainsSettings.of(self._values)
        self.dns = DNSSettings.of(self._values)
        self.smtp = SMTPSettings.of(self._values)
        self.sending = SendingSettings.of(self._values)
        self.delivery = DeliverySettings.of(self._values)
        self.webhooks = WebhooksSettings.of(self._values)
        self.tracking = TrackingSettings.of(self._values)
        self.ratelimit = RateLimitSettings.of(self._values)
        self.log = LogSettings.of(self._values)
        self.metrics = MetricsSettings.of(self._values)

    def get(self, name: str) -> object:
        return self._values[name]

    def replace(self, **changes: object) -> Config:
        """A copy with some settings changed, keyed as ``section__key``."""
        values = dict(self._values)
        for k, v in changes.items():
            name = k.replace("__", ".", 1)
            if name not in _BY_NAME:
                raise ConfigError(f"unknown setting {name}")
            values[name] = _coerce(_BY_NAME[name], v, "")
        return Config(values, self.source)

    @property
    def is_sqlite(self) -> bool:
        return make_url(self.database.url).get_backend_name() == "sqlite"


def load_config(
    path: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None
) -> Config:
    """Read defaults, then the TOML file, then environment overrides."""
    environ = os.environ if environ is None else environ
    values = {s.name: s.default for s in SETTINGS}
    if path is not None:
        try:
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError(f"--config: file not found: {path}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"--config: {path} is not valid TOML: {exc}") from None
        for section, table in data.items():
            if section not in _SECTIONS:
                raise ConfigError(f"{section}: unknown section in {path}")
            if not isinstance(table, dict):
                raise ConfigError(f"{section}: must be a table in {path}")
            for key, raw in table.items():
                name = f"{section}.{key}"
                if name not in _BY_NAME:
                    raise ConfigError(f"{name}: unknown setting in {path}")
                values[name] = _coerce(_BY_NAME[name], raw, str(path))
    by_env = {s.env: s for s in SETTINGS}
    for var, raw in environ.items():
        if not var.startswith(ENV_PREFIX):
            continue
        setting = by_env.get(var)
        if setting is None:
            section = var[len(ENV_PREFIX) :].split("_", 1)[0].lower()
            if section in _SECTIONS:
                raise ConfigError(f"{var}: no such setting")
            continue
        values[setting.name] = _coerce(setting, raw, var)
    return Config(values, str(path) if path else None)


def sqlite_in_memory(url: str) -> bool:
    """Whether a SQLite URL names an in-memory database rather than a file."""
    parsed = make_url(url)
    return parsed.database in (None, "", ":memory:") or parsed.query.get("mode") == "memory"


def sqlite_path(config: Config) -> Path | None:
    """The SQLite database file, or None for in-memory and server databases."""
    url = make_url(config.database.url)
    if (
        url.get_backend_name() != "sqlite"
        or url.database is None
        or sqlite_in_memory(config.database.url)
    ):
        return None
    return Path(url.database)


def resolve_secret_key(config: Config) -> bytes:
    """The key that encrypts secrets at rest.

    Taken from ``security.secret_key`` when set; otherwise, on the embedded SQLite
    default, generated once into a file beside the database (mode 0600) and read from
    there on every later start.
    """
    configured = config.security.secret_key
    if configured:
        if len(configured) < 32:
            raise ConfigError("security.secret_key: must be at least 32 characters long")
        return configured.encode()
    db_file = sqlite_path(config)
    if db_file is None:
        raise ConfigError(
            "security.secret_key: must be set when the database is not an SQLite file "
            "(generate one with: python3 -c 'import secrets; print(secrets.token_urlsafe(32))')"
        )
    key_file = db_file.with_suffix(".key")
    try:
        return _read_key_file(key_file)
    except FileNotFoundError:
        pass
    key_file.parent.mkdir(parents=True, exist_ok=True)
    fresh = base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=")
    # Written whole to a private temporary file, then linked into place: a process that
    # starts at the same moment either links first or reads the complete key.
    tmp = key_file.with_name(f".{key_file.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(fresh + b"\n")
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, key_file)
        except FileExistsError:
            return _read_key_file(key_file)
    finally:
        tmp.unlink(missing_ok=True)
    return fresh


def _read_key_file(key_file: Path) -> bytes:
    key = key_file.read_bytes().strip()
    if len(key) < 32:
        raise ConfigError(f"security.secret_key: the key file {key_file} is damaged (too short)")
    return key
