"""Tests for erq.protocol.commands: the table of handlers.  What each
command does is tested over a connection in tests/test_protocol.py."""

from __future__ import annotations

import re
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from erq.protocol import QueueProtocol
from erq.protocol.commands import COMMANDS

DOCS = Path(__file__).parent.parent / "docs" / "protocol.md"


class CommandTableTests(SynchronousTestCase):
    def test_every_documented_command_has_a_handler(self) -> None:
        text = DOCS.read_text()
        section = text.split("## Commands", 1)[1].split("\n## ", 1)[0]
        documented = {
            word.encode()
            for row in re.findall(r"^\| (.+?) \|", section, re.MULTILINE)
            for word in re.findall(r"`([a-z_]+)", row)
        }
        self.assertIn(b"flush_all_expired", documented)
        self.assertEqual(documented, set(COMMANDS))

    def test_handlers_are_the_protocols_methods(self) -> None:
        # A handler redefined in the protocol would be bypassed by the table.
        self.assertIs(QueueProtocol._commands, COMMANDS)
        for word, handler in COMMANDS.items():
            self.assertIs(getattr(QueueProtocol, handler.__name__), handler, word)
