"""Tests for erq.protocol.flow: reading paused and resumed for its reasons,
without a connection."""

from __future__ import annotations

from collections.abc import Callable

from twisted.trial.unittest import SynchronousTestCase

from erq.protocol.flow import MAX_BACKLOG, FlowControl


class Transport:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def pauseProducing(self) -> None:
        self.calls.append("pause")

    def resumeProducing(self) -> None:
        self.calls.append("resume")


class Writer:
    def __init__(self, backlog: int) -> None:
        self.backlog = backlog
        self.max_backlog = 100
        self.drained: list[Callable[[], None]] = []

    def when_drained(self, callback: Callable[[], None]) -> None:
        self.drained.append(callback)


class FlowControlTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.runs = 0
        self.transport = Transport()
        self.flow = FlowControl(self.go_on)
        self.flow.attach(self.transport)

    def go_on(self) -> None:
        self.runs += 1

    def test_transport_paused_once_resumed_after_last(self) -> None:
        self.flow.pause("output")
        self.flow.pause("held")
        self.assertEqual(self.transport.calls, ["pause"])
        self.flow.resume("output")
        self.assertEqual(self.transport.calls, ["pause"])
        self.flow.resume("held")
        self.assertEqual(self.transport.calls, ["pause", "resume"])
        self.assertFalse(self.flow.reasons)

    def test_resume_of_a_reason_not_held(self) -> None:
        self.flow.pause("output")
        self.flow.resume("journal")
        self.assertEqual(self.flow.reasons, {"output"})
        self.assertEqual(self.transport.calls, ["pause"])

    def test_gone_resumes_nothing(self) -> None:
        self.flow.pause("output")
        self.flow.gone = True
        self.flow.resume("output")
        self.assertEqual(self.transport.calls, ["pause"])

    def test_before_a_transport(self) -> None:
        flow = FlowControl(self.go_on)
        flow.pause("output")
        self.assertEqual(flow.reasons, {"output"})

    def test_backlog_behind_a_wait(self) -> None:
        self.flow.input_waits(MAX_BACKLOG)
        self.assertFalse(self.flow.reasons)
        self.flow.input_waits(MAX_BACKLOG + 1)
        self.assertEqual(self.flow.reasons, {"backlog"})
        self.flow.wait_ended()
        self.assertFalse(self.flow.reasons)
        self.assertEqual(self.transport.calls, ["pause", "resume"])
        self.assertEqual(self.runs, 1)

    def test_journal_backlog(self) -> None:
        writer = Writer(backlog=101)
        self.flow.check_journal(writer)
        self.flow.check_journal(writer)
        self.assertEqual(self.flow.reasons, {"journal"})
        self.assertEqual(len(writer.drained), 1)
        writer.drained[0]()
        self.assertFalse(self.flow.reasons)
        self.assertEqual(self.runs, 1)

    def test_journal_within_its_backlog(self) -> None:
        self.flow.check_journal(Writer(backlog=100))
        self.flow.check_journal(None)
        self.assertFalse(self.flow.reasons)

    def test_journal_drained_after_the_connection_went(self) -> None:
        writer = Writer(backlog=101)
        self.flow.check_journal(writer)
        self.flow.gone = True
        writer.drained[0]()
        self.assertEqual(self.runs, 0)
        self.assertEqual(self.transport.calls, ["pause"])
