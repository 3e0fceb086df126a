"""The workers' one loop: claim a batch, handle each item on its own, commit the outcomes.

A worker (delivery, webhooks) gives the runner a ``Batches``: four methods, no loop of its
own. The runner

- claims up to ``batch_size`` items (``claim``); none: it waits ``poll_interval``;
- hands them to ``handle``, which returns one outcome per item and keeps one item's
  trouble to that item (an exception it lets out is the whole batch's: every item then
  gets ``failed(item, error)``, so nothing claimed is dropped);
- commits the outcomes (``commit``), in one transaction;
- claims again at once after a full batch (a backlog), else waits ``poll_interval`` first,
  so that work arriving meanwhile is handled together;
- never holds a claim it is not working on (it claims the next batch only once the last
  is committed), and goes on after any error of its own (a database hiccup: what it had
  claimed is taken up again when the claim runs out), until ``stop``.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Sequence
from typing import Generic, Protocol, TypeVar

from app import metrics

Item = TypeVar("Item")
Done = TypeVar("Done")


class Batches(Protocol[Item, Done]):
    """What a worker gives the runner."""

    def claim(self, limit: int) -> Sequence[Item]:
        """Claim up to ``limit`` due items (committed: they are this worker's now)."""
        ...

    def handle(self, items: Sequence[Item]) -> Sequence[Done]:
        """Work on each item; one outcome per item, whatever befell the others."""
        ...

    def failed(self, item: Item, error: BaseException) -> Done:
        """The outcome of an item whose batch ``handle`` could not finish."""
        ...

    def commit(self, outcomes: Sequence[Done]) -> None:
        """Record the outcomes (one transaction)."""
        ...


def new_worker_id() -> str:
    """What marks the claims of one worker process: host, process id and a random part."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class Runner(Generic[Item, Done]):
    """Runs a ``Batches`` until ``stop`` (see the module's docstring)."""

    def __init__(
        self,
        batches: Batches[Item, Done],
        *,
        batch_size: int,
        poll_interval: float,
        log: logging.Logger,
        worker_id: str,
        name: str = "delivery",
    ):
        self.batches = batches
        self.name = name  # the worker's label in the metrics
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.log = log
        self.worker_id = worker_id
        self._stop = threading.Event()

    def run_once(self) -> int:
        """Claim one batch and see it through; the number of items handled."""
        items = self.batches.claim(self.batch_size)
        if not items:
            return 0
        started = time.perf_counter()
        try:
            outcomes = self.batches.handle(items)
        except Exception as exc:  # noqa: BLE001 - nothing claimed may be dropped
            self.log.error(
                "batch failed; each of its items gets its failure outcome",
                extra={"worker": self.worker_id, "count": len(items)},
                exc_info=(type(exc), exc, exc.__traceback__),
            )
            outcomes = [self.batches.failed(item, exc) for item in items]
        self.batches.commit(outcomes)
        metrics.batch_done(self.name, time.perf_counter() - started)
        return len(items)

    def run(self) -> None:
        """Work until ``stop`` is called (the batch in hand is finished first)."""
        self.log.info("worker started", extra={"worker": self.worker_id})
        while not self._stop.is_set():
            try:
                handled = self.run_once()
            except Exception:  # noqa: BLE001 - a loop error must not end the worker
                self.log.exception("worker loop error", extra={"worker": self.worker_id})
                handled = 0
            if handled < self.batch_size:  # the queue is drained (or unreadable): wait
                self._stop.wait(self.poll_interval)
        self.log.info("worker stopped", extra={"worker": self.worker_id})

    def stop(self) -> None:
        self._stop.set()
