"""The HTTP client for webhooks: no redirects, no proxies, only addresses the settings allow."""

from __future__ import annotations

import asyncio
import ipaddress
import os
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import httpcore
import httpx

from commands.domains.dns_records import make_resolver
from commands.webhooks.handlers import address_problem, host_problem
from commands.webhooks.payload import USER_AGENT
from core.settings import Config
from mta import mx

_SNIPPET = 200  # bytes of a refusing answer's body kept in its error


class Refused(Exception):
    """The webhook's host may not be contacted (webhooks.allow_private is off)."""


class CheckedBackend(httpcore.AsyncNetworkBackend):
    """Opens connections only to addresses the webhook settings allow.

    The host is resolved with Postern's resolver and every address checked right before
    the connection is made, so a name cannot be pointed elsewhere between a check and
    its use; TLS still verifies the certificate for the host name.
    """

    def __init__(self, config: Config):
        self._config = config
        self._resolver = make_resolver(config)
        self._inner = httpcore.AnyIOBackend()

    async def address(self, host: str) -> str:
        problem = host_problem(host, self._config)
        if problem:
            raise Refused(f"{host}: {problem}")
        try:
            addresses = await asyncio.to_thread(mx.resolve_addresses, host, self._resolver)
        except mx.RouteError as exc:
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc.message}") from None
        for address in addresses:
            problem = address_problem(ipaddress.ip_address(address), self._config)
            if problem:  # the address is not told: the receiver's owner may read the error
                raise Refused(f"{host} resolves to an address that is not allowed: {problem}")
        return addresses[0]

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> httpcore.AsyncNetworkStream:
        address = await self.address(host)
        try:
            return await self._inner.connect_tcp(
                address,
                port,
                timeout=timeout,
                local_address=local_address,
                socket_options=socket_options,
            )
        except httpcore.ConnectError as exc:
            # Its text names the address connected to: the error told names the host only.
            raise httpcore.ConnectError(
                f"cannot connect to {host}:{port}: {_reason(exc)}"
            ) from None

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Any = None
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("webhooks are not posted to Unix sockets")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def _reason(exc: BaseException) -> str:
    """Why a connection failed, without the address: the system's text for its errno."""
    seen: BaseException | None = exc
    while seen is not None:
        errno = getattr(seen, "errno", None)
        if isinstance(errno, int) and errno:
            return os.strerror(errno)
        for inner in getattr(seen, "exceptions", ()):  # anyio's group of attempts
            if getattr(inner, "errno", None):
                return os.strerror(inner.errno)
        seen = seen.__cause__ or seen.__context__
    return "connection failed"


@contextmanager
def _httpx_errors() -> Iterator[None]:
    """httpcore's exceptions as the httpx ones of the same name (httpx.TransportError else)."""
    try:
        yield
    except httpcore.TimeoutException as exc:
        raise getattr(httpx, type(exc).__name__, httpx.TimeoutException)(str(exc)) from exc
    except (httpcore.NetworkError, httpcore.ProtocolError, httpcore.UnsupportedProtocol) as exc:
        raise getattr(httpx, type(exc).__name__, httpx.TransportError)(str(exc)) from exc


class _ResponseStream(httpx.AsyncByteStream):
    def __init__(self, inner: Any):
        self._inner = inner

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _httpx_errors():
            async for part in self._inner:
                yield part

    async def aclose(self) -> None:
        await self._inner.aclose()


class CheckedTransport(httpx.AsyncBaseTransport):
    """An httpx transport over an httpcore connection pool that connects through
    ``CheckedBackend`` (httpx's own transport takes no network backend)."""

    def __init__(self, config: Config):
        c = config.webhooks
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(trust_env=False),
            max_connections=c.concurrency,
            max_keepalive_connections=c.concurrency,
            keepalive_expiry=30.0,
            network_backend=CheckedBackend(config),
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        core = httpcore.Request(
            method=request.method,
            url=httpcore.URL(
                scheme=request.url.raw_scheme,
                host=request.url.raw_host,
                port=request.url.port,
                target=request.url.raw_path,
            ),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        with _httpx_errors():
            resp = await self._pool.handle_async_request(core)
        return httpx.Response(
            status_code=resp.status,
            headers=resp.headers,
            stream=_ResponseStream(resp.stream),
            extensions=resp.extensions,
        )

    async def aclose(self) -> None:
        await self._pool.aclose()


def webhook_client(config: Config) -> httpx.AsyncClient:
    """An httpx client that follows no redirects, ignores proxy variables, and connects
    through ``CheckedBackend``."""
    return httpx.AsyncClient(
        transport=CheckedTransport(config),
        timeout=config.webhooks.timeout,
        follow_redirects=False,
        trust_env=False,
        headers={"User-Agent": USER_AGENT},
    )


async def response_snippet(resp: httpx.Response) -> str:
    """The start of an answer's body, for the error of a failed attempt."""
    data = b""
    async for chunk in resp.aiter_bytes():
        data += chunk
        if len(data) >= _SNIPPET:
            break
    text = data[:_SNIPPET].decode("utf-8", "replace").strip()
    return f": {text}" if text else ""
