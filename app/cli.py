"""The postern command: serve, api, db upgrade, user create/enable/disable."""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from typing import TYPE_CHECKING, NoReturn

import click

from core.settings import Config, ConfigError, load_config, resolve_secret_key

if TYPE_CHECKING:  # imported where used: each command loads only what it runs
    from models import Database


class Obj:
    def __init__(self, config_path: str | None) -> None:
        self.config_path = config_path
        self._config: Config | None = None

    @property
    def config(self) -> Config:
        if self._config is None:
            self._config = load_config(self.config_path)
        return self._config


def fail(message: str, code: int = 2) -> NoReturn:
    click.echo(f"postern: {message}", err=True)
    sys.exit(code)


def open_database(config: Config, *, upgrade_embedded: bool = True) -> Database:
    """The database, upgraded when it is the embedded SQLite default, else checked current."""
    from models import Database
    from models.migrate import current_revision, head_revision, upgrade

    resolve_secret_key(config)  # generated now on a first start, so no worker races for it
    db = Database(config.database.url, pool_size=config.database.pool_size)
    if config.is_sqlite and upgrade_embedded:
        upgrade(db.engine)
    else:
        current = current_revision(db.engine)
        if current != head_revision():
            fail(
                f"database.url: the database schema is at {current or 'nothing'}, "
                f"not {head_revision()}: run 'postern db upgrade' first"
            )
    return db


METRICS_ENV = "PROMETHEUS_MULTIPROC_DIR"


def share_metrics(config: Config, *, make: bool) -> str | None:
    """Point this process and the ones it starts at the instance's metrics directory
    (``PROMETHEUS_MULTIPROC_DIR``, else ``metrics.multiproc_dir``), before app/metrics.py is
    imported. Neither given: with ``make``, a temporary directory of this instance's own,
    returned for the caller to delete when it stops; without, none (this process's
    metrics are its own)."""
    path = os.environ.get(METRICS_ENV) or config.metrics.multiproc_dir
    if path:
        os.makedirs(path, exist_ok=True)
        os.environ[METRICS_ENV] = path
        return None
    if not make:
        return None
    made = tempfile.mkdtemp(prefix="postern-metrics-")
    os.environ[METRICS_ENV] = made
    return made


@click.group()
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    envvar="POSTERN_CONFIG",
    help="TOML settings file (POSTERN_<SECTION>_<KEY> variables override it).",
)
@click.pass_context
def cli(ctx: click.Context, config_path: str | None) -> None:
    """Postern, a self-hosted transactional email gateway."""
    ctx.obj = Obj(config_path)


@cli.command()
@click.pass_obj
def serve(obj: Obj) -> None:
    """Run everything on one machine: the API and the delivery worker.

    Upgrades the embedded database first.
    """
    config = obj.config
    open_database(config).dispose()
    made = share_metrics(config, make=True)  # the API's, the worker's and the relay's
    from app.http.server import GunicornServer

    click.echo(f"postern: serving http://{config.http.host}:{config.http.port}/api.php", err=True)
    companion = [sys.executable, "-m", "app"]
    if obj.config_path:
        companion += ["--config", obj.config_path]
    try:
        GunicornServer(config, companions=[[*companion, "worker"], [*companion, "smtp"]]).run()
    finally:
        if made:
            shutil.rmtree(made, ignore_errors=True)


@cli.command()
@click.pass_obj
def smtp(obj: Obj) -> None:
    """Run the SMTP relay on smtp.ports (SIGTERM stops it)."""
    share_metrics(obj.config, make=False)  # before the metrics are imported
    import signal
    import threading

    from app.logs import configure_logging
    from app.smtp.relay import Relay
    from commands import Gateway

    config = obj.config
    configure_logging(config.log.level, config.log.format)
    database = open_database(config, upgrade_embedded=False)
    relay = Relay(Gateway(config, database))
    stopped = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopped.set())
    relay.start()
    try:
        stopped.wait()
    finally:
        relay.stop()
        database.dispose()


@cli.command()
@click.pass_obj
def worker(obj: Obj) -> None:
    """Run the delivery worker and the webhook sender (any number on PostgreSQL or MariaDB)."""
    share_metrics(obj.config, make=False)  # before the metrics are imported
    import signal

    from app.logs import configure_logging
    from app.workers.delivery import Worker
    from app.workers.webhooks import WebhookSender
    from core.crypto import SecretBox

    config = obj.config
    configure_logging(config.log.level, config.log.format)
    database = open_database(config, upgrade_embedded=False)
    box = SecretBox(resolve_secret_key(config))
    runner = Worker(config, database, box)
    webhooks = WebhookSender(config, database, box, worker_id=runner.worker_id)

    def stop(*_: object) -> None:
        runner.stop()
        webhooks.stop()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, stop)
    webhooks.start()
    try:
        runner.run()  # finishes the batch in hand, then returns
    finally:
        webhooks.stop()
        webhooks.join()  # finishes and records the POSTs in hand
        database.dispose()


@cli.command()
@click.pass_obj
def api(obj: Obj) -> None:
    """Run the HTTP API alone (the schema must be current)."""
    config = obj.config
    open_database(config, upgrade_embedded=False).dispose()
    made = share_metrics(config, make=True)
    from app.http.server import GunicornServer

    try:
        GunicornServer(config).run()
    finally:
        if made:
            shutil.rmtree(made, ignore_errors=True)


@cli.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
@click.pass_obj
def db_upgrade(obj: Obj) -> None:
    """Apply every migration up to the newest."""
    from models import Database
    from models.migrate import current_revision, upgrade

    config = obj.config
    database = Database(config.database.url)
    try:
        upgrade(database.engine)
        click.echo(f"postern: database at revision {current_revision(database.engine)}")
    finally:
        database.dispose()


@cli.group()
def user() -> None:
    """User accounts."""


@user.command("create")
@click.argument("username")
@click.option(
    "--password",
    prompt=True,
    hide_input=True,
    confirmation_prompt=True,
    help="At least 8 characters; asked for when not given.",
)
@click.option("--email", default="", help="The user's email address.")
@click.option("--admin", is_flag=True, help="May run administrator commands (User.Create).")
@click.pass_obj
def user_create(obj: Obj, username: str, password: str, email: str, admin: bool) -> None:
    """Add a user and print its UserID and first user API key as JSON."""
    from commands.users import UserInputError, create_api_key, create_user
    from core.crypto import SecretBox

    config = obj.config
    database = open_database(config)
    box = SecretBox(resolve_secret_key(config))
    try:
        with database.transaction() as s:
            new = create_user(s, username, password, email, is_admin=admin)
            _, key = create_api_key(s, box, new, "created with the user")
            out = {"UserID": new.id, "APIKey": key}
    except UserInputError as exc:
        fail(str(exc), 1)
    finally:
        database.dispose()
    click.echo(json.dumps(out))


def _set_enabled(obj: Obj, username: str, enabled: bool) -> None:
    from commands.users import set_enabled
    from core.clock import utcnow

    database = open_database(obj.config)
    try:
        with database.transaction() as s:
            found = set_enabled(s, username, enabled, utcnow())
    finally:
        database.dispose()
    if found is None:
        fail(f"no user named {username}", 1)
    click.echo(
        json.dumps({"UserID": found.id, "AccountStatus": "Enabled" if enabled else "Disabled"})
    )


@user.command("disable")
@click.argument("username")
@click.pass_obj
def user_disable(obj: Obj, username: str) -> None:
    """Refuse the user's logins, sessions and API keys (ends every session)."""
    _set_enabled(obj, username, False)


@user.command("quota")
@click.argument("username")
@click.argument("recipients")
@click.pass_obj
def user_quota(obj: Obj, username: str, recipients: str) -> None:
    """Set the user's sending quota (recipients per sending.quota_period), or "default"."""
    from sqlalchemy import select

    from models import User

    if recipients != "default" and not recipients.isdigit():
        fail('the quota is a whole number of recipients (0: none), or "default"', 1)
    database = open_database(obj.config)
    try:
        with database.transaction() as s:
            found = s.scalar(select(User).where(User.username_key == username.strip().lower()))
            if found is not None:
                found.send_quota = None if recipients == "default" else int(recipients)
                out = {"UserID": found.id, "SendQuota": found.send_quota}
    finally:
        database.dispose()
    if found is None:
        fail(f"no user named {username}", 1)
    click.echo(json.dumps(out))


@user.command("enable")
@click.argument("username")
@click.pass_obj
def user_enable(obj: Obj, username: str) -> None:
    """Let a disabled user in again."""
    _set_enabled(obj, username, True)


def main() -> None:
    try:
        cli.main(standalone_mode=True)
    except ConfigError as exc:
        fail(f"configuration error: {exc}")
