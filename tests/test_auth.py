"""Tests for erq.auth: the auth file and checking a login."""

from __future__ import annotations

import os

from twisted.trial.unittest import SynchronousTestCase

from erq.auth import load_credentials, parse_credentials
from erq.config import ConfigError


class ParseTests(SynchronousTestCase):
    def test_lines_comments_and_blanks(self) -> None:
        credentials = parse_credentials(
            b"# users of erq\r\n\r\nalice:s3cret\r\n  \t\n  # indented comment\n"
            b"bob:with:colons and spaces\nc:#not a comment",
            "users",
        )
        self.assertEqual(len(credentials), 3)
        self.assertTrue(credentials.check(b"alice", b"s3cret"))
        self.assertTrue(credentials.check(b"bob", b"with:colons and spaces"))
        self.assertTrue(credentials.check(b"c", b"#not a comment"))

    def test_wrong_logins(self) -> None:
        credentials = parse_credentials(b"alice:s3cret\nbob:hunter2\n", "users")
        for user, password in [
            (b"alice", b"hunter2"),
            (b"bob", b"s3cret"),
            (b"alice", b"s3cre"),
            (b"alice", b"s3cret "),
            (b"Alice", b"s3cret"),
            (b"carol", b"s3cret"),
            (b"", b""),
            (b"alice:s3cret", b""),
        ]:
            self.assertFalse(credentials.check(user, password), (user, password))

    def test_malformed_lines_are_named_not_shown(self) -> None:
        cases = [
            (b"alice\n", "expected user:password"),
            (b":hunter2\n", "empty user name"),
            (b"al ice:hunter2\n", "a user name cannot hold a space or tab"),
            (b"alice:\n", "empty password"),
            (b"alice: hunter2\n", "cannot begin or end with a space"),
            (b"alice:hunter2 \r\n", "cannot begin or end with a space"),
            (
                b"alice:x\nbob:y\nalice:hunter2\n",
                "a second line for the user of line 2",
            ),
        ]
        for data, reason in cases:
            with self.assertRaises(ConfigError) as caught:
                parse_credentials(b"# users\n" + data, "/etc/erq/users")
            error = caught.exception
            self.assertEqual(error.source, "/etc/erq/users")
            self.assertEqual(error.line, data.count(b"\n") + 1)
            self.assertIn(reason, error.reason)
            self.assertTrue(str(error).startswith("/etc/erq/users line "), str(error))
            self.assertNotIn("hunter2", str(error))
            self.assertNotIn("\n", str(error))

    def test_no_user(self) -> None:
        for data in [b"", b"# nobody yet\n\n"]:
            with self.assertRaises(ConfigError) as caught:
                parse_credentials(data, "users")
            self.assertEqual(str(caught.exception), "users: no user:password line")

    def test_repr_shows_no_secret(self) -> None:
        credentials = parse_credentials(b"alice:hunter2\n", "users")
        self.assertEqual(repr(credentials), "<Credentials of 1 users from 'users'>")


class LoadTests(SynchronousTestCase):
    def test_load(self) -> None:
        path = self.mktemp()
        with open(path, "wb") as file:
            file.write(b"alice:s3cret\n")
        credentials = load_credentials(path)
        self.assertEqual(credentials.path, path)
        self.assertTrue(credentials.check(b"alice", b"s3cret"))

    def test_missing_file(self) -> None:
        path = self.mktemp()
        with self.assertRaises(ConfigError) as caught:
            load_credentials(path)
        self.assertEqual(
            str(caught.exception), f"{path}: cannot read: No such file or directory"
        )

    def test_unreadable_file(self) -> None:
        path = self.mktemp()
        os.mkdir(path)
        with self.assertRaises(ConfigError) as caught:
            load_credentials(path)
        self.assertEqual(str(caught.exception), f"{path}: cannot read: Is a directory")
