"""Tests for erq.tomllines: the line of each key of a TOML document."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from erq.tomllines import dotted, key_lines


class KeyLinesTests(SynchronousTestCase):
    def test_tables_and_their_keys(self) -> None:
        self.assertEqual(
            key_lines("# note\n[server]\nport = 1\n\n[defaults]\njournal = true\n"),
            {
                ("server",): 2,
                ("server", "port"): 3,
                ("defaults",): 5,
                ("defaults", "journal"): 6,
            },
        )

    def test_quoted_and_dotted_keys(self) -> None:
        """Quoted keys are unquoted as TOML reads them; a dotted key implies
        each of its prefixes on its own line."""
        self.assertEqual(
            key_lines('a . b = 1\n"a\\"b" = 2\n\'lit key\'.x = 3\n'),
            {
                ("a",): 1,
                ("a", "b"): 1,
                ('a"b',): 2,
                ("lit key",): 3,
                ("lit key", "x"): 3,
            },
        )

    def test_a_table_spelled_out_later_keeps_its_own_line(self) -> None:
        self.assertEqual(
            key_lines("[a.b.c]\n[a]\nx=1\n"),
            {("a",): 2, ("a", "b"): 1, ("a", "b", "c"): 1, ("a", "x"): 3},
        )

    def test_inline_tables_and_arrays(self) -> None:
        self.assertEqual(
            key_lines("a = { b = { c = 1 }, d = [\n { e = 1 } ] }\nf = 2\n"),
            {
                ("a",): 1,
                ("a", "b"): 1,
                ("a", "b", "c"): 1,
                ("a", "d"): 1,
                ("a", "d", "e"): 2,
                ("f",): 3,
            },
        )

    def test_arrays_of_tables_keep_the_first_line(self) -> None:
        self.assertEqual(
            key_lines("[[x]]\ny = 1\n[[x]]\ny = 2\n[x.z]\nw=1\n"),
            {("x",): 1, ("x", "y"): 2, ("x", "z"): 5, ("x", "z", "w"): 6},
        )

    def test_not_fooled_by_strings(self) -> None:
        """What looks like a key inside a multi-line string is none."""
        self.assertEqual(
            key_lines('s = """\nx = 1\n\\"""\n"""\nt = 1\n'), {("s",): 1, ("t",): 5}
        )
        self.assertEqual(
            key_lines("s = '''\n[a]\n'''''\nt = 1\n"), {("s",): 1, ("t",): 4}
        )

    def test_crlf_and_non_ascii(self) -> None:
        self.assertEqual(
            key_lines('"é" = 1\r\n\r\n[ "ü" . x ]\r\ny = 2\r\n'),
            {("é",): 1, ("ü",): 3, ("ü", "x"): 3, ("ü", "x", "y"): 4},
        )

    def test_empty(self) -> None:
        self.assertEqual(key_lines(""), {})


class DottedTests(SynchronousTestCase):
    def test_quotes_only_what_needs_it(self) -> None:
        self.assertEqual(
            dotted(("queues", "orders+audit", "max_items")),
            'queues."orders+audit".max_items',
        )
        self.assertEqual(dotted(("queues", "a.b")), 'queues."a.b"')
