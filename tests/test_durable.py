"""Tests for erq.durable: a durable add's Deferred, whose replies and
listeners run before its callbacks."""

from __future__ import annotations

from twisted.internet.defer import AlreadyCalledError, CancelledError
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


class ListenerTests(SynchronousTestCase):
    """``then``: listeners that run in order before the Deferred's own
    callbacks and pass the result on as callbacks do."""

    def setUp(self) -> None:
        self.durable = Durable()
        self.seen: list[tuple[str, object]] = []

    def listen(self, name: str, stored: object = None, failed: object = None) -> None:
        """A listener that notes what it was given and returns ``stored``
        (or, on failure, ``failed``)."""

        def on_stored(result: object, tag: str) -> object:
            self.seen.append((f"{tag} stored", result))
            return stored

        def on_failed(failure: Failure, tag: str) -> object:
            self.seen.append((f"{tag} failed", failure.type))
            return failure if failed is None else failed

        self.durable.then(on_stored, on_failed, name)

    def chain(self) -> None:
        self.durable.addCallbacks(
            lambda result: self.seen.append(("chain stored", result)),
            lambda failure: self.seen.append(("chain failed", failure.type)),
        )

    def test_listeners_run_in_order_before_callbacks_added_earlier(self) -> None:
        self.chain()
        self.listen("queue", stored="placed")
        self.listen("reply", stored="answered")
        self.durable.first.append(lambda: self.seen.append(("first", None)))
        self.durable.callback(None)
        self.assertEqual(
            self.seen,
            [
                ("first", None),
                ("queue stored", None),
                ("reply stored", "placed"),
                ("chain stored", "answered"),
            ],
        )

    def test_a_failure_passes_through_until_a_listener_handles_it(self) -> None:
        self.listen("queue")
        self.listen("reply", failed="handled")
        self.chain()
        self.durable.first.append(lambda: self.seen.append(("first", None)))
        self.durable.errback(OSError("disk full"))
        self.assertEqual(
            self.seen,
            [
                ("queue failed", OSError),
                ("reply failed", OSError),
                ("chain stored", "handled"),
            ],
        )

    def test_a_failure_no_listener_handles_reaches_the_callbacks(self) -> None:
        self.listen("queue")
        self.chain()
        self.durable.errback(Failure(OSError("disk full")))
        self.assertEqual(
            self.seen, [("queue failed", OSError), ("chain failed", OSError)]
        )

    def test_a_listener_that_raises_hands_the_next_a_failure(self) -> None:
        def broken(result: object) -> object:
            raise ValueError("broken listener")

        self.durable.then(broken, broken)
        self.listen("reply", failed="handled")
        self.chain()
        self.durable.callback(None)
        self.assertEqual(
            self.seen, [("reply failed", ValueError), ("chain stored", "handled")]
        )

    def test_an_unhandled_failure_is_the_deferreds(self) -> None:
        self.listen("queue")
        self.durable.errback(OSError("disk full"))
        self.failureResultOf(self.durable, OSError)

    def test_a_listener_added_once_fired_runs_at_once(self) -> None:
        self.listen("queue", stored="placed")
        self.durable.callback(None)
        self.listen("late")
        self.assertEqual(self.seen, [("queue stored", None), ("late stored", "placed")])
        self.assertIsNone(self.successResultOf(self.durable))

    def test_cancelled_it_fails_its_listeners(self) -> None:
        self.listen("queue")
        self.durable.cancel()
        self.assertEqual(self.seen, [("queue failed", CancelledError)])
        self.failureResultOf(self.durable, CancelledError)

    def test_listeners_run_once(self) -> None:
        self.listen("queue")
        self.durable.callback(None)
        self.assertRaises(AlreadyCalledError, self.durable.callback, None)
        self.assertEqual(self.seen, [("queue stored", None)])
