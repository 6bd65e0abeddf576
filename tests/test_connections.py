"""Tests for erq.connections: the service's view of its connections."""

from __future__ import annotations

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.interfaces import IAddress
from twisted.internet.task import Clock
from twisted.logger import Logger
from twisted.trial.unittest import SynchronousTestCase

from erq.connections import (
    LOG_INTERVAL,
    SHUTDOWN_GRACE,
    Connections,
    LogLimit,
    describe_peer,
    is_local,
)


class FakeConnection:
    """Records what the service tells it."""

    def __init__(self) -> None:
        self.peer: IAddress = IPv4Address("TCP", "127.0.0.1", 40000)
        self.told: list[str] = []

    def disconnect(self) -> None:
        self.told.append("disconnect")

    def abort(self) -> None:
        self.told.append("abort")

    def login_required(self, required: bool) -> None:
        self.told.append(f"login {required}")

    def stop_waiting(self) -> None:
        self.told.append("stop waiting")


class ConnectionsTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.connections = Connections(self.clock, Logger())
        self.a, self.b = FakeConnection(), FakeConnection()
        self.connections.add(self.a)
        self.connections.add(self.b)

    def test_stop_waits_until_every_connection_closed(self) -> None:
        told = self.connections.disconnect_all()
        self.assertEqual((self.a.told, self.b.told), (["disconnect"], ["disconnect"]))
        closed: list[None] = []
        self.connections.closed(told).addCallback(closed.append)
        self.connections.lost(self.a)
        self.assertEqual(closed, [])
        self.connections.lost(self.b)
        self.assertEqual(closed, [None])
        self.assertEqual(len(self.connections), 0)
        # Nothing is cut off later.
        self.clock.advance(SHUTDOWN_GRACE)
        self.assertEqual(self.a.told, ["disconnect"])

    def test_late_connections_are_cut_off(self) -> None:
        closed: list[None] = []
        told = self.connections.disconnect_all()
        self.connections.closed(told).addCallback(closed.append)
        self.connections.lost(self.a)
        self.clock.advance(SHUTDOWN_GRACE)
        self.assertEqual(self.b.told, ["disconnect", "abort"])
        self.assertEqual(closed, [None])
        self.assertNotIn(self.b, self.connections)

    def test_nothing_to_wait_for(self) -> None:
        closed: list[None] = []
        self.connections.closed(set()).addCallback(closed.append)
        self.assertEqual(closed, [None])


class LogLimitTests(SynchronousTestCase):
    def test_one_line_of_a_kind_an_interval(self) -> None:
        clock = Clock()
        limit = LogLimit(clock)
        self.assertEqual(limit.admit("bad"), 0)
        self.assertIsNone(limit.admit("bad"))
        self.assertIsNone(limit.admit("bad"))
        self.assertEqual(limit.admit("other"), 0)
        clock.advance(LOG_INTERVAL)
        self.assertEqual(limit.admit("bad"), 2)
        self.assertIsNone(limit.admit("bad"))


class PeerTests(SynchronousTestCase):
    def test_local(self) -> None:
        for peer in (
            IPv4Address("TCP", "127.0.0.1", 1),
            IPv4Address("TCP", "127.9.8.7", 1),
            IPv6Address("TCP", "::1", 1),
            IPv6Address("TCP", "::ffff:127.0.0.1", 1),
            UNIXAddress(b"/run/erq.sock"),
        ):
            self.assertTrue(is_local(peer), peer)
        for peer in (
            IPv4Address("TCP", "10.0.0.1", 1),
            IPv6Address("TCP", "2001:db8::1", 1),
            IPv6Address("TCP", "::ffff:10.0.0.1", 1),
        ):
            self.assertFalse(is_local(peer), peer)

    def test_described(self) -> None:
        self.assertEqual(
            describe_peer(IPv4Address("TCP", "127.0.0.1", 5)), "127.0.0.1:5"
        )
        self.assertEqual(describe_peer(IPv6Address("TCP", "::1", 5)), "[::1]:5")
        self.assertEqual(describe_peer(UNIXAddress(None)), "a Unix socket")
