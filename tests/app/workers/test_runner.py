"""The workers' shared loop, with a batch source of the test's own (no database)."""

import logging
import threading

from app.workers.runner import Runner


class Source:
    """Items 0..n-1 claimed in batches; ``handle`` may fail on demand."""

    def __init__(self, n, fail_claims=0, fail_handles=0):
        self.queue = list(range(n))
        self.fail_claims, self.fail_handles = fail_claims, fail_handles
        self.committed = []
        self.claims = 0

    def claim(self, limit):
        self.claims += 1
        if self.fail_claims:
            self.fail_claims -= 1
            raise ConnectionError("database unreachable")
        taken, self.queue = self.queue[:limit], self.queue[limit:]
        return taken

    def handle(self, items):
        if self.fail_handles:
            self.fail_handles -= 1
            raise RuntimeError("the whole batch failed")
        return [(i, "ok") for i in items]

    def failed(self, item, error):
        return (item, f"failed: {type(error).__name__}")

    def commit(self, outcomes):
        self.committed.extend(outcomes)


def runner_for(source, **kw):
    return Runner(
        source,
        batch_size=kw.get("batch_size", 3),
        poll_interval=kw.get("poll_interval", 0.01),
        log=logging.getLogger("postern.test"),
        worker_id="test",
    )


def test_each_item_gets_an_outcome_even_when_its_batch_fails():
    source = Source(5, fail_handles=1)
    runner = runner_for(source)
    assert runner.run_once() == 3 and runner.run_once() == 2 and runner.run_once() == 0
    assert source.committed == [
        (0, "failed: RuntimeError"),
        (1, "failed: RuntimeError"),
        (2, "failed: RuntimeError"),
        (3, "ok"),
        (4, "ok"),
    ]


def test_a_loop_error_does_not_end_the_runner_and_stop_does():
    source = Source(7, fail_claims=2)
    runner = runner_for(source)
    thread = threading.Thread(target=runner.run)
    thread.start()
    try:
        for _ in range(500):
            if len(source.committed) == 7:
                break
            threading.Event().wait(0.01)
    finally:
        runner.stop()
        thread.join(10)
    assert not thread.is_alive()
    assert sorted(i for i, _ in source.committed) == list(range(7))
    assert {status for _, status in source.committed} == {"ok"}
