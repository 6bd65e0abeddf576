"""Tests for erq.durable: a durable add's Deferred, whose replies run
before its callbacks."""

from __future__ import annotations

from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from erq.durable import Durable


class DurableTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.durable = Durable()
        self.seen: list[str] = []
        self.durable.addCallbacks(
            lambda _: self.seen.append("callback"),
            lambda _: self.seen.append("errback"),
        )

    def test_first_runs_before_the_callbacks(self) -> None:
        self.durable.first.append(lambda: self.seen.append("reply"))
        self.durable.callback(None)
        self.assertEqual(self.seen, ["reply", "callback"])

    def test_first_runs_as_soon_as_it_is_durable_and_once(self) -> None:
        self.durable.first.append(lambda: self.seen.append("reply"))
        self.durable.durable()
        self.assertEqual(self.seen, ["reply"])
        self.durable.durable()
        self.durable.callback(None)
        self.assertEqual(self.seen, ["reply", "callback"])

    def test_a_reply_that_fails_is_logged_and_the_rest_run(self) -> None:
        def broken() -> None:
            raise ValueError("broken reply")

        self.durable.first.append(broken)
        self.durable.first.append(lambda: self.seen.append("reply"))
        self.durable.callback(None)
        self.assertEqual(self.seen, ["reply", "callback"])
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)

    def test_not_on_failure(self) -> None:
        self.durable.first.append(lambda: self.seen.append("reply"))
        self.durable.errback(Failure(OSError("disk full")))
        self.assertEqual(self.seen, ["errback"])
