"""Tests for erq.protocol.login: the gate before a login, without a
transport (the protocol's own tests drive it over one)."""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from erq.auth import parse_credentials
from erq.protocol.login import MAX_LOGIN, LoginGate
from erq.protocol.requests import (
    BrokenStream,
    ClientError,
    TooLarge,
    block_length,
)
from erq.service import Counters


class Gate(LoginGate):
    """The gate with what a connection would give it, recorded."""

    def __init__(self, auth_file: bytes | None) -> None:
        credentials = (
            None if auth_file is None else parse_credentials(auth_file, "users")
        )
        service: Any = SimpleNamespace(config=SimpleNamespace(credentials=credentials))
        self.service = service
        self.counters = Counters()
        self.replies: list[bytes] = []
        self.closed = False
        self.block: Callable[[bytes], None] | None = None
        self.login_required(credentials is not None)

    def _reply(self, data: bytes) -> None:
        self.replies.append(data)

    def _close(self) -> None:
        self.closed = True

    def _read_block(
        self,
        words: list[bytes],
        reply_to: Callable[[bytes], None],
        cap: int | None = None,
    ) -> None:
        block_length(words, MAX_LOGIN if cap is None else cap)
        self.block = reply_to

    def send_block(self, block: bytes) -> None:
        assert self.block is not None
        block_to, self.block = self.block, None
        block_to(block)


class LoginGateTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.gate = Gate(b"alice:secret\n")

    def test_locked(self) -> None:
        self.assertTrue(self.gate._locked)
        error = self.assertRaises(ClientError, self.gate._before_login, b"get q")
        self.assertEqual(error.reply, b"CLIENT_ERROR unauthenticated")

    def test_login(self) -> None:
        self.gate._before_login(b"set any 0 0 12")
        self.gate.send_block(b"alice secret\r\n")
        self.assertFalse(self.gate._locked)
        self.assertEqual(self.gate.replies, [b"STORED"])
        self.assertEqual(self.gate.counters.auth_cmds, 1)
        self.assertEqual(self.gate.counters.auth_errors, 0)

    def test_wrong_password(self) -> None:
        self.gate._before_login(b"set any 0 0 11 noreply")
        error = self.assertRaises(ClientError, self.gate.send_block, b"alice wrong\r\n")
        self.assertEqual(error.reply, b"CLIENT_ERROR authentication failure")
        self.assertTrue(error.noreply)
        self.assertTrue(self.gate._locked)
        self.assertEqual(self.gate.counters.auth_errors, 1)

    def test_login_too_long_is_not_read(self) -> None:
        error = self.assertRaises(
            BrokenStream, self.gate._before_login, b"set any 0 0 %d" % (MAX_LOGIN + 1)
        )
        self.assertEqual(error.reply, b"CLIENT_ERROR authentication failure")
        self.assertIsNone(self.gate.block)
        self.assertEqual(self.gate.counters.auth_errors, 1)

    def test_bad_data_chunk(self) -> None:
        self.gate._before_login(b"set any 0 0 12")
        error = self.assertRaises(BrokenStream, self.gate.send_block, b"alice secret!!")
        self.assertEqual(error.reply, b"CLIENT_ERROR bad data chunk")
        self.assertEqual(self.gate.counters.auth_cmds, 0)

    def test_other_storage_block_dropped(self) -> None:
        self.gate._before_login(b"append q 0 0 3")
        error = self.assertRaises(ClientError, self.gate.send_block, b"abc\r\n")
        self.assertEqual(error.reply, b"CLIENT_ERROR unauthenticated")

    def test_other_storage_block_capped(self) -> None:
        self.assertRaises(
            TooLarge, self.gate._before_login, b"add q 0 0 %d" % (MAX_LOGIN + 1)
        )

    def test_quit(self) -> None:
        self.gate._before_login(b"  quit ")
        self.assertTrue(self.gate.closed)

    def test_logged_in_stays_so_on_reload(self) -> None:
        self.gate._before_login(b"set any 0 0 12")
        self.gate.send_block(b"alice secret\r\n")
        self.gate.login_required(True)
        self.assertFalse(self.gate._locked)

    def test_no_auth_file_any_more(self) -> None:
        self.gate.login_required(False)
        self.assertFalse(self.gate._locked)

    def test_open_server(self) -> None:
        self.assertFalse(Gate(None)._locked)
