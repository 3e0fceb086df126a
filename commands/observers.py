"""What the gateway tells the running application about its work (for its metrics).

The application registers listeners (app/metrics.py); the gateway calls them once the
transaction that did the work has committed, so nothing rolled back is ever told.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from models.database import UnitOfWork


@dataclass(frozen=True)
class Accepted:
    """One message accepted: the transport it came by (``Message.source``: "api",
    "api.php", "smtp", "freshmail", ...), its recipients queued and those suppressed."""

    source: str
    queued: int
    suppressed: int


_accepted: list[Callable[[Accepted], None]] = []


def on_accepted(listener: Callable[[Accepted], None]) -> None:
    """Call ``listener`` with every message accepted from now on (in this process)."""
    if listener not in _accepted:
        _accepted.append(listener)


def accepted(work: UnitOfWork, source: str, queued: int, suppressed: int) -> None:
    """Tell the listeners of a message accepted in ``work``, once it has committed."""
    if not _accepted:
        return
    told = Accepted(source, queued, suppressed)

    def tell() -> None:
        for listener in _accepted:
            listener(told)

    work.after_commit(tell)
