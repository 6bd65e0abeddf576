"""Tests for erq.protocol.requests: request lines parsed without a
connection, and the reply each refusal becomes."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from erq.protocol import requests
from erq.protocol.requests import (
    KNOWN_LIMIT,
    BrokenRules,
    BrokenStream,
    ClientError,
    CommandError,
    GetRequest,
    RequestError,
    SetLine,
    TooLarge,
    block_length,
    check_block,
    check_set,
    get_request,
    known_get_request,
    known_lines,
    parse_set,
    queue_name,
    remember,
    split_line,
)


class ErrorTests(SynchronousTestCase):
    """Each refusal knows its reply word, its log note and whether the
    connection closes after it."""

    def test_client_error(self) -> None:
        error = ClientError("bad queue name")
        self.assertEqual(error.reply, b"CLIENT_ERROR bad queue name")
        self.assertFalse(error.fatal)
        self.assertFalse(error.noreply)
        self.assertIsNone(error.why)

    def test_command_error(self) -> None:
        error = CommandError("unknown command")
        self.assertEqual(error.reply, b"ERROR")
        self.assertEqual(error.why, "unknown command")
        self.assertFalse(error.fatal)

    def test_fatal_ones(self) -> None:
        self.assertEqual(
            BrokenStream("line too long").reply, b"CLIENT_ERROR line too long"
        )
        self.assertEqual(TooLarge().reply, b"SERVER_ERROR object too large")
        self.assertEqual(BrokenRules("open reads").reply, b"ERROR")
        for error in (BrokenStream("x"), TooLarge(), BrokenRules("x")):
            self.assertTrue(error.fatal, error)
            self.assertIsInstance(error, RequestError)

    def test_noreply(self) -> None:
        self.assertTrue(ClientError("bad flags", noreply=True).noreply)

    def test_reason_outside_ascii(self) -> None:
        self.assertEqual(ClientError("caf\xe9").reply, b"CLIENT_ERROR caf?")


class NameTests(SynchronousTestCase):
    def test_queue_name(self) -> None:
        self.assertEqual(queue_name(b"jobs"), "jobs")
        error = self.assertRaises(ClientError, queue_name, b"a/b")
        self.assertEqual(error.reply, b"CLIENT_ERROR bad queue name")


class GetRequestTests(SynchronousTestCase):
    def test_plain(self) -> None:
        request = GetRequest(b"q")
        self.assertEqual((request.key, request.name), (b"q", "q"))
        self.assertIsNone(request.timeout)
        self.assertTrue(request.simple)
        self.assertTrue(request.takes)

    def test_options(self) -> None:
        request = GetRequest(b"q/t=250/open")
        self.assertEqual(request.timeout, 0.25)
        self.assertTrue(request.open)
        self.assertFalse(request.simple)
        self.assertFalse(request.takes)

    def test_close_and_open(self) -> None:
        request = GetRequest(b"q/close/open")
        self.assertTrue(request.close and request.open)

    def test_peek_is_simple_but_does_not_take(self) -> None:
        request = GetRequest(b"q/peek")
        self.assertTrue(request.simple)
        self.assertFalse(request.takes)

    def test_unknown_option_ignored(self) -> None:
        self.assertTrue(GetRequest(b"q/whatever").takes)

    def test_bad_timeout(self) -> None:
        error = self.assertRaises(ClientError, GetRequest, b"q/t=soon")
        self.assertEqual(error.reply, b"CLIENT_ERROR bad timeout")

    def test_bad_combinations(self) -> None:
        for key in (b"q/peek/open", b"q/peek/close", b"q/abort/open", b"q/abort/close"):
            error = self.assertRaises(ClientError, GetRequest, key)
            self.assertEqual(error.reply, b"CLIENT_ERROR bad option combination")

    def test_parsed_once(self) -> None:
        first = get_request(b"once/t=5")
        self.assertIs(get_request(b"once/t=5"), first)
        self.assertIs(known_get_request(b"once/t=5"), first)
        self.assertIsNone(known_get_request(b"never/asked"))


class LineTests(SynchronousTestCase):
    def test_split(self) -> None:
        self.assertEqual(split_line(b"get q"), [b"get", b"q"])

    def test_extra_spaces(self) -> None:
        self.assertEqual(split_line(b"  get   q "), [b"get", b"q"])

    def test_tab_is_not_a_separator(self) -> None:
        self.assertEqual(split_line(b"get\tq"), [b"get\tq"])

    def test_empty(self) -> None:
        for line in (b"", b"   "):
            error = self.assertRaises(CommandError, split_line, line)
            self.assertEqual((error.reply, error.why), (b"ERROR", "empty line"))

    def test_remembered_lines_are_bounded(self) -> None:
        self.addCleanup(known_lines.clear)
        request = get_request(b"q")
        for number in range(KNOWN_LIMIT + 5):
            remember(b"get q%d" % number, request)
        self.assertLessEqual(len(known_lines), KNOWN_LIMIT)
        self.assertIs(known_lines[b"get q%d" % (KNOWN_LIMIT + 4)], request)


class StorageTests(SynchronousTestCase):
    def test_block_length(self) -> None:
        self.assertEqual(block_length([b"q", b"0", b"0", b"64"], 100), 64)

    def test_bad_length(self) -> None:
        for words in ([b"q", b"0", b"0"], [b"q", b"0", b"0", b"-1"]):
            error = self.assertRaises(BrokenStream, block_length, words, 100)
            self.assertEqual(error.reply, b"CLIENT_ERROR bad data chunk length")

    def test_too_large(self) -> None:
        self.assertRaises(TooLarge, block_length, [b"q", b"0", b"0", b"101"], 100)

    def test_check_block(self) -> None:
        self.assertEqual(check_block(b"data\r\n"), b"data")
        error = self.assertRaises(BrokenStream, check_block, b"data!!")
        self.assertEqual(error.reply, b"CLIENT_ERROR bad data chunk")

    def test_parse_set(self) -> None:
        self.assertEqual(
            parse_set([b"q", b"5", b"-1", b"3"]), ("q", 5, -1, False, None)
        )
        self.assertEqual(
            parse_set([b"q", b"5", b"0", b"3", b"noreply"]), ("q", 5, 0, True, None)
        )

    def test_set_errors(self) -> None:
        # The data block is still read, so the error is kept, not raised.
        cases = {
            (b"q", b"0", b"0", b"3", b"later"): b"bad command line format",
            (b"q", b"0", b"0", b"3", b"noreply", b"x"): b"bad command line format",
            (b".q", b"0", b"0", b"3"): b"bad queue name",
            (b"q", b"x", b"0", b"3"): b"bad flags",
            (b"q", b"4294967296", b"0", b"3"): b"bad flags",
            (b"q", b"0", b"soon", b"3"): b"bad exptime",
        }
        for words, reason in cases.items():
            self.assertEqual(check_set(list(words), words[-1] == b"noreply"), reason)
            storing = parse_set(list(words))
            self.assertEqual(storing[4], reason, words)

    def test_set_line(self) -> None:
        line = SetLine(("q", 0, 0, False, None), 64)
        self.assertEqual((line.storing[0], line.length), ("q", 64))

    def test_caches_are_module_state(self) -> None:
        # One cache per process, shared by every connection.
        self.assertIs(requests.known_lines, known_lines)
