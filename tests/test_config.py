"""The configuration file: defaults, values, inheritance, errors, overrides."""

from __future__ import annotations

import json
import os
from dataclasses import fields

from twisted.trial.unittest import SynchronousTestCase

from erq.config import (
    Config,
    ConfigError,
    MiB,
    QueueSettings,
    ServerSettings,
    load_config,
    parse_config,
)
from erq.status import ServerStatus
from tests.support import (
    toml,
)


class DefaultsTests(SynchronousTestCase):
    def test_server_defaults(self) -> None:
        server = ServerSettings()
        self.assertEqual(server.port, "22122")
        self.assertEqual(server.data_dir, "queues")
        self.assertIsNone(server.max_connections)
        self.assertEqual(server.expiry_sweep, 1.0)
        self.assertTrue(server.allow_shutdown)
        self.assertEqual(server.max_item_cap, 64 * MiB)

    def test_no_file(self) -> None:
        config = Config()
        self.assertEqual(config.server, ServerSettings())
        self.assertEqual(config.defaults, QueueSettings())
        self.assertEqual(config.queues, {})
        self.assertEqual(config.settings_for("anything"), QueueSettings())
        self.assertEqual(config.settings_for("a+b"), QueueSettings())

    def test_empty_file(self) -> None:
        self.assertEqual(parse_config(""), Config())
        self.assertEqual(parse_config("# nothing\n\n[server]\n[defaults]\n"), Config())

    def test_every_queue_key_is_read(self) -> None:
        """The file knows every field of QueueSettings: a new field cannot be
        forgotten here."""
        names = [field.name for field in fields(QueueSettings)]
        values = {
            "max_items": "1",
            "max_size": "1",
            "max_item_size": "1",
            "max_age": '"1s"',
            "discard_old_when_full": "true",
            "journal": "false",
            "sync_journal": '"never"',
            "max_memory_size": "1",
            "expire_to_queue": '"x"',
            "max_open_reads": "2",
            "open_timeout": '"1s"',
            "fanout_only": "true",
            "max_queue_age": '"1s"',
        }
        self.assertEqual(sorted(values), sorted(names))
        text = "[defaults]\n" + "".join(f"{k} = {v}\n" for k, v in values.items())
        defaults = parse_config(text).defaults
        for name in names:
            self.assertNotEqual(
                getattr(defaults, name), getattr(QueueSettings(), name), name
            )


class ValueTests(SynchronousTestCase):
    def test_server(self) -> None:
        config = parse_config(
            toml(
                """
                [server]
                port = 11211
                data_dir = "/var/lib/erq"
                max_connections = 500
                expiry_sweep = "250ms"
                allow_shutdown = false
                max_item_cap = "1MiB"
                """
            )
        )
        self.assertEqual(
            config.server,
            ServerSettings(
                port="11211",
                data_dir="/var/lib/erq",
                max_connections=500,
                expiry_sweep=0.25,
                allow_shutdown=False,
                max_item_cap=MiB,
            ),
        )

    def test_allow_shutdown(self) -> None:
        for text, expected in [("true", True), ("false", False), ('"any"', "any")]:
            config = parse_config(f"[server]\nallow_shutdown = {text}\n")
            self.assertEqual(config.server.allow_shutdown, expected)
        self.assertEqual(
            Config().with_overrides(allow_shutdown="any").server.allow_shutdown, "any"
        )

    def test_port_endpoint_description(self) -> None:
        text = '[server]\nport = "tcp:22133:interface=0.0.0.0"\n'
        self.assertEqual(parse_config(text).server.port, "tcp:22133:interface=0.0.0.0")
        self.assertEqual(parse_config('[server]\nport = "22133"').server.port, "22133")

    def test_admin_port(self) -> None:
        """Off unless named; a number or an endpoint description, checked
        as ``port`` is; the command line wins."""
        self.assertIsNone(ServerSettings().admin_port)
        self.assertTrue(ServerSettings().admin_auth)
        for text, expected in [
            ('""', None),
            ("8080", "8080"),
            ('"8080"', "8080"),
            ('"tcp:8080:interface=0.0.0.0"', "tcp:8080:interface=0.0.0.0"),
            ('"unix:/run/erq-admin.sock"', "unix:/run/erq-admin.sock"),
        ]:
            config = parse_config(f"[server]\nadmin_port = {text}\n")
            self.assertEqual(config.server.admin_port, expected, text)
        config = parse_config("[server]\nadmin_port = 8080\nadmin_auth = false\n")
        self.assertFalse(config.server.admin_auth)
        self.assertEqual(
            config.with_overrides(admin_port=9090).server.admin_port, "9090"
        )
        with self.assertRaises(ConfigError) as caught:
            Config().with_overrides(admin_port="70000")
        self.assertIn(
            "admin_port: expected a port number up to 65535", str(caught.exception)
        )

    def test_queue(self) -> None:
        config = parse_config(
            toml(
                """
                [defaults]
                max_items = 1000
                max_size = "128MiB"
                max_item_size = "64KiB"
                max_age = "1h"
                discard_old_when_full = true
                journal = false
                sync_journal = "50ms"
                max_memory_size = "1GiB"
                expire_to_queue = "expired"
                max_open_reads = 10
                open_timeout = "90s"
                fanout_only = true
                max_queue_age = "5m"
                """
            )
        )
        self.assertEqual(
            config.defaults,
            QueueSettings(
                max_items=1000,
                max_size=128 * MiB,
                max_item_size=64 * 1024,
                max_age=3600.0,
                discard_old_when_full=True,
                journal=False,
                sync_journal=0.05,
                max_memory_size=1024 * MiB,
                expire_to_queue="expired",
                max_open_reads=10,
                open_timeout=90.0,
                fanout_only=True,
                max_queue_age=300.0,
            ),
        )

    def test_unlimited_and_none_written_out(self) -> None:
        """The defaults can be spelled, so a table can lift a limit."""
        config = parse_config(
            toml(
                """
                [defaults]
                max_items = 10
                max_size = 10
                max_item_size = 10
                max_age = "1s"
                max_queue_age = "1s"
                open_timeout = "1s"
                expire_to_queue = "dead"
                [queues.free]
                max_items = "unlimited"
                max_size = "unlimited"
                max_item_size = "unlimited"
                max_age = "none"
                max_queue_age = "none"
                open_timeout = "none"
                expire_to_queue = ""
                [server]
                max_connections = "unlimited"
                """
            )
        )
        self.assertEqual(config.settings_for("free"), QueueSettings())
        self.assertIsNone(config.server.max_connections)

    def test_quoted_queue_names(self) -> None:
        config = parse_config(
            toml(
                """
                [queues."orders+audit"]
                max_items = 1
                [queues.'a.b']
                max_items = 2
                """
            )
        )
        self.assertEqual(config.settings_for("orders+audit").max_items, 1)
        self.assertEqual(config.settings_for("a.b").max_items, 2)


class InheritanceTests(SynchronousTestCase):
    config = parse_config(
        toml(
            """
            [defaults]
            max_items = 100
            max_open_reads = 2

            [queues.orders]
            fanout_only = true
            max_items = 5
            max_age = "1h"

            [queues."orders+audit"]
            max_age = "1d"

            [queues."orders+audit+late"]
            max_open_reads = 7
            """
        )
    )

    def test_queue_takes_defaults(self) -> None:
        self.assertEqual(
            self.config.queues["orders"],
            QueueSettings(
                max_items=5, max_open_reads=2, max_age=3600.0, fanout_only=True
            ),
        )

    def test_queue_without_table(self) -> None:
        self.assertEqual(
            self.config.settings_for("other"),
            QueueSettings(max_items=100, max_open_reads=2),
        )
        self.assertNotIn("other", self.config.queues)

    def test_child_takes_parent(self) -> None:
        child = self.config.settings_for("orders+mail")
        self.assertEqual(child.max_items, 5)
        self.assertEqual(child.max_age, 3600.0)
        self.assertEqual(child.max_open_reads, 2)

    def test_fanout_only_not_inherited(self) -> None:
        self.assertTrue(self.config.settings_for("orders").fanout_only)
        self.assertFalse(self.config.settings_for("orders+mail").fanout_only)
        self.assertFalse(self.config.settings_for("orders+audit").fanout_only)

    def test_open_timeout_of_a_child(self) -> None:
        """A fanout child takes its parent's open_timeout, or its own."""
        config = parse_config(
            toml(
                """
                [defaults]
                open_timeout = "1m"
                [queues.jobs]
                open_timeout = "30s"
                [queues."jobs+slow"]
                open_timeout = "none"
                """
            )
        )
        self.assertEqual(config.settings_for("other").open_timeout, 60.0)
        self.assertEqual(config.settings_for("jobs").open_timeout, 30.0)
        self.assertEqual(config.settings_for("jobs+fast").open_timeout, 30.0)
        self.assertIsNone(config.settings_for("jobs+slow").open_timeout)

    def test_fanout_only_in_child_table(self) -> None:
        config = parse_config('[queues."a+b"]\nfanout_only = true\n')
        self.assertTrue(config.settings_for("a+b").fanout_only)
        self.assertFalse(config.settings_for("a").fanout_only)
        self.assertFalse(config.settings_for("a+b+c").fanout_only)

    def test_child_table_overrides(self) -> None:
        """The child's table wins for what it names; the rest is the
        parent's, resolved already in ``queues``."""
        self.assertEqual(
            self.config.queues["orders+audit"],
            QueueSettings(max_items=5, max_open_reads=2, max_age=86400.0),
        )
        self.assertEqual(
            self.config.settings_for("orders+audit"),
            self.config.queues["orders+audit"],
        )

    def test_grandchild(self) -> None:
        """``a+b+c`` is a child of ``a`` (a set to ``a`` feeds every
        ``a+<anything>``), not of ``a+b``."""
        self.assertEqual(
            self.config.settings_for("orders+audit+late"),
            QueueSettings(max_items=5, max_open_reads=7, max_age=3600.0),
        )
        self.assertEqual(self.config.settings_for("orders+audit+other").max_age, 3600.0)
        self.assertEqual(self.config.settings_for("orders+mail+other").max_age, 3600.0)

    def test_child_without_parent_table(self) -> None:
        self.assertEqual(
            self.config.settings_for("other+child"),
            self.config.settings_for("other"),
        )

    def test_child_of_fanout_only_defaults(self) -> None:
        config = parse_config("[defaults]\nfanout_only = true\n")
        self.assertTrue(config.settings_for("a").fanout_only)
        self.assertFalse(config.settings_for("a+b").fanout_only)

    def test_order_in_file_does_not_matter(self) -> None:
        config = parse_config(
            toml(
                """
                [queues."a+b"]
                max_size = 1
                [queues.a]
                max_items = 3
                [defaults]
                journal = false
                """
            )
        )
        self.assertEqual(
            config.queues["a+b"],
            QueueSettings(max_items=3, max_size=1, journal=False),
        )


class ErrorTests(SynchronousTestCase):
    def assertConfigError(
        self, text: str, line: int | None, key: str | None, reason: str
    ) -> ConfigError:
        error = self.assertRaises(ConfigError, parse_config, text, "erq.toml")
        self.assertEqual((error.line, error.key), (line, key), str(error))
        self.assertIn(reason, error.reason)
        where = "erq.toml" if line is None else f"erq.toml line {line}"
        prefix = where if key is None else f"{where}: {key}"
        self.assertTrue(str(error).startswith(prefix + ": "), str(error))
        self.assertNotIn("\n", str(error))
        return error

    def test_message(self) -> None:
        error = self.assertConfigError(
            toml(
                """
                [defaults]
                max_items = 3

                # thumbnails
                [queues.thumbs]
                journal = false
                max_items = -5
                """
            ),
            7,
            "queues.thumbs.max_items",
            "expected a non-negative integer, got -5",
        )
        self.assertEqual(
            str(error),
            "erq.toml line 7: queues.thumbs.max_items: "
            "expected a non-negative integer, got -5",
        )

    def test_unknown_key(self) -> None:
        error = self.assertConfigError(
            "[server]\nport = 1\n\n[defaults]\nmax_itmes = 3\n",
            5,
            "defaults.max_itmes",
            "unknown key",
        )
        self.assertIn("max_items", error.reason)
        self.assertConfigError(
            "[server]\nport = 1\nsync_journal = 'never'\n",
            3,
            "server.sync_journal",
            "unknown key",
        )
        self.assertConfigError(
            "[queues.a]\n[queues.b]\n  colour = 'red'\n",
            3,
            "queues.b.colour",
            "unknown key",
        )

    def test_unknown_top_level_key(self) -> None:
        error = self.assertConfigError("\nport = 1\n", 2, "port", "unknown key")
        self.assertIn("[server]", error.reason)

    def test_unknown_table(self) -> None:
        error = self.assertConfigError(
            "[server]\n[srever]\nport = 1\n", 2, "srever", "unknown table"
        )
        self.assertIn("server", error.reason)
        self.assertConfigError(
            "[defaults]\n[defaults.extra]\n", 2, "defaults.extra", "unknown table"
        )

    def test_dotted_queue_name_unquoted(self) -> None:
        error = self.assertConfigError(
            "[queues.a.b]\nmax_items = 1\n", 1, "queues.a.b", "unknown table"
        )
        self.assertIn('[queues."a.b"]', error.reason)

    def test_wrong_types(self) -> None:
        cases = [
            ("max_items", '"5"', "expected a non-negative integer"),
            ("max_items", "true", "expected a non-negative integer"),
            ("max_items", "1.5", "expected a non-negative integer"),
            ("max_size", "[1]", "got an array"),
            ("journal", '"yes"', "expected true or false"),
            ("journal", "1", "expected true or false"),
            ("max_age", "30", 'write "30s"'),
            ("sync_journal", "true", '"always", "never" or a duration'),
            ("expire_to_queue", "3", "expected a queue name"),
            ("max_open_reads", "{ a = 1 }", "got a table"),
        ]
        for key, value, reason in cases:
            self.assertConfigError(
                f"[queues.q]\n\n{key} = {value}\n", 3, f"queues.q.{key}", reason
            )

    def test_bad_values(self) -> None:
        cases = [
            ("max_items", "-1", "non-negative"),
            ("max_size", "-1", "non-negative"),
            ("max_size", '"-1KiB"', "non-negative"),
            ("max_size", '"12MB"', "ambiguous unit MB"),
            ("max_item_size", '"3 furlongs"', "unknown size unit"),
            ("max_memory_size", '"unlimited"', "expected a size"),
            ("max_age", '"30x"', "unknown duration unit"),
            ("max_age", '"0s"', "positive duration"),
            ("max_queue_age", '"-5m"', "positive duration"),
            ("open_timeout", '"0ms"', "positive duration"),
            ("open_timeout", "30", 'write "30s" for seconds'),
            ("open_timeout", '"never"', 'such as "30s" or "none"'),
            ("sync_journal", '"sometimes"', '"always", "never" or a duration'),
            ("sync_journal", '"0ms"', "positive duration"),
            ("max_open_reads", "0", "expected a positive integer, got 0"),
            ("expire_to_queue", '"a/b"', "expected a queue name"),
            ("expire_to_queue", '".hidden"', "expected a queue name"),
        ]
        for key, value, reason in cases:
            self.assertConfigError(
                f"[defaults]\n{key} = {value}\n", 2, f"defaults.{key}", reason
            )

    def test_bad_server_values(self) -> None:
        cases = [
            ("port", "65536", "up to 65535"),
            ("port", "-1", "expected a port number"),
            ("port", '"localhost"', "expected a port number"),
            ("port", '""', "expected a port number"),
            ("data_dir", '""', "expected a directory"),
            ("max_connections", "0", "positive integer"),
            ("expiry_sweep", "1", 'write "1s"'),
            ("allow_shutdown", '"no"', 'expected true, false or "any", got "no"'),
            ("allow_shutdown", "1", 'expected true, false or "any", got 1'),
            ("max_item_cap", "0", "positive size"),
            ("admin_port", "65536", "up to 65535"),
            ("admin_port", '"localhost"', "expected a port number"),
            ("admin_port", "false", "expected a port number"),
            ("admin_auth", '"no"', "expected true or false"),
        ]
        for key, value, reason in cases:
            self.assertConfigError(
                f"# erq\n[server]\n{key} = {value}\n", 3, f"server.{key}", reason
            )

    def test_expire_to_itself(self) -> None:
        self.assertConfigError(
            '[queues.a]\nexpire_to_queue = "a"\n',
            2,
            "queues.a.expire_to_queue",
            "itself",
        )

    def test_bad_queue_name(self) -> None:
        self.assertConfigError(
            '[queues.ok]\n\n[queues."has space"]\nmax_items = 1\n',
            3,
            'queues."has space"',
            "bad queue name",
        )
        self.assertConfigError(
            "[queues.ok]\n[queues.'.hidden']\n",
            2,
            'queues.".hidden"',
            "bad queue name",
        )
        self.assertConfigError(
            "[queues]\nok = {}\n'a/b' = { max_items = 1 }\n",
            3,
            'queues."a/b"',
            "bad queue name",
        )

    def test_queue_not_a_table(self) -> None:
        error = self.assertConfigError(
            "[queues]\nmax_items = 5\n",
            2,
            "queues.max_items",
            "expected a table",
        )
        self.assertIn("[defaults]", error.reason)
        self.assertConfigError("queues = 5\n", 1, "queues", "expected tables")
        self.assertConfigError("server = 5\n", 1, "server", "expected a table")

    def test_line_of_quoted_table(self) -> None:
        self.assertConfigError(
            toml(
                """
                [queues.orders]
                max_items = 5

                [ queues . "orders+audit" ]   # the audit trail
                max_age = "1d"
                max_items = -5
                """
            ),
            6,
            'queues."orders+audit".max_items',
            "non-negative",
        )

    def test_line_of_inline_table(self) -> None:
        self.assertConfigError(
            toml(
                """
                [queues]
                a = { max_items = 1 }
                b = { max_items = 2, max_age = "1h", journal = "no" }
                """
            ),
            3,
            "queues.b.journal",
            "expected true or false",
        )
        self.assertConfigError(
            "queues = {a = {}}\n\ndefaults = {max_items = 1, max_age = 9}\n",
            3,
            "defaults.max_age",
            "duration",
        )

    def test_line_of_dotted_key(self) -> None:
        self.assertConfigError(
            toml(
                """
                queues.a.max_items = 1

                queues.b.max_open_reads = 0
                """
            ),
            3,
            "queues.b.max_open_reads",
            "positive integer",
        )

    def test_line_not_fooled_by_strings_or_comments(self) -> None:
        """Text that looks like the key, inside a string or a comment, is
        not the key."""
        text = toml(
            '''
            [server]
            data_dir = """
            [queues.x] \\"""
            max_items = -1
            """"
            # [queues.x]
            # max_items = -1
            port = "unix:/tmp/\\" [queues.x] \\"max_items = -1\\"#"
            max_connections = 10 # [queues.x]

            [queues.y]
            max_items = 1
            [queues.x]
            journal = true
            max_items = -1
            '''
        )
        self.assertConfigError(text, 15, "queues.x.max_items", "non-negative")

    def test_line_with_literal_strings_and_arrays(self) -> None:
        text = toml(
            """
            [server]
            data_dir = '''
            max_items = -1'''
            [queues.b]
            journal = [
              "max_items = -1",
              { max_items = -1 },
            ]
            max_items = -1
            """
        )
        self.assertConfigError(text, 5, "queues.b.journal", "expected true or false")
        text = text.replace("journal = [", "max_size = [")
        self.assertConfigError(text, 5, "queues.b.max_size", "got an array")

    def test_line_with_crlf(self) -> None:
        self.assertConfigError(
            "[defaults]\r\n\r\nmax_items = -1\r\n",
            3,
            "defaults.max_items",
            "non-negative",
        )

    def test_syntax_error(self) -> None:
        error = self.assertRaises(
            ConfigError,
            parse_config,
            "[server]\nport = 1\n\nmax_items = = 3\n",
            "erq.toml",
        )
        self.assertEqual(error.line, 4)
        self.assertIsNone(error.key)
        self.assertTrue(str(error).startswith("erq.toml line 4: "), str(error))
        self.assertIn("(at line 4, column", str(error))

    def test_syntax_error_at_end(self) -> None:
        error = self.assertRaises(ConfigError, parse_config, '\n\nport = "22122')
        self.assertEqual(error.line, 3)
        self.assertIn("end of document", str(error))

    def test_duplicate_key_is_a_syntax_error(self) -> None:
        error = self.assertRaises(
            ConfigError, parse_config, "[defaults]\njournal = true\njournal = false"
        )
        self.assertEqual(error.line, 3)

    def test_is_a_value_error(self) -> None:
        """Callers (and twisted.python.usage) catching ValueError see it."""
        self.assertRaises(ValueError, parse_config, "[nope]")


class AliasTests(SynchronousTestCase):
    def assertConfigError(
        self, text: str, line: int, key: str, reason: str
    ) -> ConfigError:
        error = self.assertRaises(ConfigError, parse_config, text, "erq.toml")
        self.assertEqual((error.line, error.key), (line, key), str(error))
        self.assertIn(reason, error.reason)
        return error

    def test_none_by_default(self) -> None:
        self.assertEqual(Config().aliases, {})
        self.assertEqual(parse_config("[queues.a]\n").aliases, {})

    def test_destinations_in_order(self) -> None:
        config = parse_config(
            toml(
                """
                [aliases.events]
                destinations = ["log", "mail", "orders+audit"]

                [aliases."a+b"]
                destinations = ["c"]

                [queues.log]
                max_items = 5
                """
            )
        )
        self.assertEqual(
            config.aliases,
            {"events": ("log", "mail", "orders+audit"), "a+b": ("c",)},
        )
        # An alias is no queue: it has no settings of its own.
        self.assertNotIn("events", config.queues)
        self.assertEqual(config.queues["log"].max_items, 5)

    def test_differ_means_not_equal(self) -> None:
        one = parse_config('[aliases.e]\ndestinations = ["a"]\n')
        two = parse_config('[aliases.e]\ndestinations = ["b"]\n')
        self.assertNotEqual(one, two)
        self.assertEqual(one, parse_config('[aliases.e]\ndestinations = ["a"]\n'))

    def test_kept_by_overrides(self) -> None:
        config = parse_config('[aliases.e]\ndestinations = ["a"]\n')
        self.assertEqual(config.with_overrides(port=1).aliases, {"e": ("a",)})
        self.assertEqual(
            config.with_overrides(sync_journal="never").aliases, {"e": ("a",)}
        )

    def test_also_a_queue(self) -> None:
        self.assertConfigError(
            toml(
                """
                [queues.events]
                max_items = 1

                [aliases.events]
                destinations = ["log"]
                """
            ),
            4,
            "aliases.events",
            "also a queue",
        )

    def test_alias_as_destination(self) -> None:
        """Rejected: an alias fans out one step, to queues."""
        self.assertConfigError(
            toml(
                """
                [aliases.a]
                destinations = ["q"]
                [aliases.b]
                destinations = ["q", "a"]
                """
            ),
            4,
            "aliases.b.destinations",
            '"a" is an alias',
        )
        self.assertConfigError(
            '[aliases.a]\ndestinations = ["a"]\n',
            2,
            "aliases.a.destinations",
            '"a" is an alias',
        )

    def test_bad_destinations(self) -> None:
        cases = [
            ("[]", "at least one queue name"),
            ('"q"', "expected an array of queue names"),
            ("{ q = 1 }", "expected an array of queue names"),
            ('["q", 3]', "expected a queue name, got 3"),
            ('["a/b"]', 'expected a queue name, got "a/b"'),
            ('[".hidden"]', "expected a queue name"),
            ('["q", "r", "q"]', '"q" is named twice'),
        ]
        for value, reason in cases:
            self.assertConfigError(
                f"[aliases.e]\n\ndestinations = {value}\n",
                3,
                "aliases.e.destinations",
                reason,
            )

    def test_no_destinations(self) -> None:
        self.assertConfigError(
            "[queues.q]\n[aliases.e]\n", 2, "aliases.e", "no destinations"
        )

    def test_unknown_key(self) -> None:
        error = self.assertConfigError(
            '[aliases.e]\ndestinations = ["q"]\nmax_items = 3\n',
            3,
            "aliases.e.max_items",
            "unknown key",
        )
        self.assertIn("destinations", error.reason)

    def test_bad_name(self) -> None:
        self.assertConfigError(
            '[aliases."a b"]\ndestinations = ["q"]\n',
            1,
            'aliases."a b"',
            "bad alias name",
        )

    def test_not_tables(self) -> None:
        self.assertConfigError("aliases = 5\n", 1, "aliases", "expected tables")
        self.assertConfigError(
            '[aliases]\ne = ["q"]\n', 2, "aliases.e", "expected a table"
        )

    def test_unknown_table_names_aliases(self) -> None:
        error = self.assertConfigError("[alias.e]\n", 1, "alias", "unknown table")
        self.assertIn("aliases", error.reason)
        error = self.assertConfigError("[ailases.e]\n", 1, "ailases", "unknown table")
        self.assertIn("aliases", error.reason)


class LoadTests(SynchronousTestCase):
    def test_load(self) -> None:
        path = self.mktemp()
        with open(path, "w") as file:
            file.write('[server]\nport = 1234\n[queues."a+b"]\nmax_items = 1\n')
        config = load_config(path)
        self.assertEqual(config.server.port, "1234")
        self.assertEqual(config.settings_for("a+b").max_items, 1)

    def test_error_names_file(self) -> None:
        path = self.mktemp()
        with open(path, "w") as file:
            file.write("[defaults]\nmax_open_reads = 0\n")
        error = self.assertRaises(ConfigError, load_config, path)
        self.assertTrue(str(error).startswith(f"{path} line 2: "), str(error))

    def test_missing_file(self) -> None:
        path = self.mktemp()
        error = self.assertRaises(ConfigError, load_config, path)
        self.assertEqual(error.source, path)
        self.assertIn("cannot read", str(error))

    def test_not_utf8(self) -> None:
        path = self.mktemp()
        with open(path, "wb") as file:
            file.write(b"[server]\n# caf\xe9\n")
        error = self.assertRaises(ConfigError, load_config, path)
        self.assertEqual(error.line, 2)


class OverrideTests(SynchronousTestCase):
    config = parse_config(
        toml(
            """
            [server]
            port = 1234
            data_dir = "/srv/erq"

            [defaults]
            max_items = 10

            [queues.plain]
            max_size = 100

            [queues.careless]
            sync_journal = "never"

            [queues."careless+child"]
            max_items = 1

            [queues."plain+child"]
            max_items = 2
            """
        )
    )

    def test_nothing_given(self) -> None:
        self.assertEqual(self.config.with_overrides(), self.config)

    def test_server(self) -> None:
        config = self.config.with_overrides(
            port="tcp:0:interface=127.0.0.1",
            max_connections=5,
            expiry_sweep=0.5,
            allow_shutdown=False,
            max_item_cap=1024,
        )
        self.assertEqual(
            config.server,
            ServerSettings(
                port="tcp:0:interface=127.0.0.1",
                data_dir="/srv/erq",
                max_connections=5,
                expiry_sweep=0.5,
                allow_shutdown=False,
                max_item_cap=1024,
            ),
        )
        self.assertEqual(config.queues, self.config.queues)
        self.assertEqual(self.config.server.port, "1234")

    def test_port_number(self) -> None:
        self.assertEqual(self.config.with_overrides(port=80).server.port, "80")
        config = self.config.with_overrides(data_dir="elsewhere")
        self.assertEqual(config.server.data_dir, "elsewhere")
        self.assertEqual(config.server.port, "1234")

    def test_sync_journal(self) -> None:
        """It goes into the defaults, and so into every queue that does not
        set its own, through inheritance too."""
        config = self.config.with_overrides(sync_journal=0.05)
        self.assertEqual(config.defaults.sync_journal, 0.05)
        self.assertEqual(config.defaults.max_items, 10)
        self.assertEqual(config.settings_for("unnamed").sync_journal, 0.05)
        self.assertEqual(
            config.queues["plain"],
            QueueSettings(max_items=10, max_size=100, sync_journal=0.05),
        )
        self.assertEqual(config.settings_for("plain+child").sync_journal, 0.05)
        self.assertEqual(config.settings_for("plain+child").max_items, 2)
        self.assertEqual(config.settings_for("careless").sync_journal, "never")
        self.assertEqual(config.settings_for("careless+child").sync_journal, "never")
        self.assertEqual(config.settings_for("careless+other").sync_journal, "never")
        self.assertEqual(list(config.queues), list(self.config.queues))
        self.assertEqual(self.config.defaults.sync_journal, "always")

    def test_sync_journal_hand_made(self) -> None:
        """Settings given to Config directly, not from a table, are kept as
        they are."""
        own = QueueSettings(max_items=1)
        config = Config(queues={"a": own}).with_overrides(sync_journal="never")
        self.assertEqual(config.queues, {"a": own})
        self.assertEqual(config.settings_for("b").sync_journal, "never")

    def test_sync_journal_then_again(self) -> None:
        config = self.config.with_overrides(sync_journal="never")
        config = config.with_overrides(sync_journal="always")
        self.assertEqual(config, self.config)

    def test_impossible_values(self) -> None:
        cases: list[tuple[str, object]] = [
            ("port", ""),
            ("port", 70000),
            ("data_dir", ""),
            ("max_connections", 0),
            ("expiry_sweep", 0.0),
            ("max_item_cap", -1),
            ("sync_journal", -1.0),
            ("sync_journal", "sometimes"),
        ]
        for key, value in cases:
            error = self.assertRaises(
                ConfigError, self.config.with_overrides, **{key: value}
            )
            self.assertEqual(error.key, key)
            self.assertTrue(str(error).startswith(f"command line: {key}: "))


class AuthFileTests(SynchronousTestCase):
    def users(self, text: bytes = b"alice:s3cret\n") -> str:
        path = self.mktemp()
        with open(path, "wb") as file:
            file.write(text)
        return path

    def test_none_by_default(self) -> None:
        self.assertIsNone(ServerSettings().auth_file)
        self.assertIsNone(Config().credentials)
        config = parse_config('[server]\nauth_file = ""\n')
        self.assertIsNone(config.server.auth_file)
        self.assertIsNone(config.credentials)

    def test_read_with_the_configuration(self) -> None:
        path = self.users()
        config = parse_config(f"[server]\nauth_file = {json.dumps(path)}\n")
        self.assertEqual(config.server.auth_file, os.path.abspath(path))
        assert config.credentials is not None
        self.assertTrue(config.credentials.check(b"alice", b"s3cret"))
        self.assertNotIn("s3cret", repr(config))
        # The users do not make two configurations differ.
        self.assertEqual(
            config, Config(ServerSettings(auth_file=config.server.auth_file))
        )

    def test_relative_to_the_working_directory(self) -> None:
        path = self.users()
        relative = os.path.relpath(path)
        self.assertFalse(os.path.isabs(relative))
        config = parse_config(f"[server]\nauth_file = {json.dumps(relative)}\n")
        self.assertEqual(config.server.auth_file, os.path.abspath(path))
        overridden = Config().with_overrides(auth_file=relative)
        self.assertEqual(overridden.server.auth_file, os.path.abspath(path))
        assert overridden.credentials is not None
        self.assertEqual(len(overridden.credentials), 1)

    def test_a_missing_file_is_named_with_its_key(self) -> None:
        path = os.path.abspath(self.mktemp())
        error = self.assertRaises(
            ConfigError,
            parse_config,
            f"# erq\n[server]\nauth_file = {json.dumps(path)}\n",
            "erq.toml",
        )
        self.assertEqual(
            str(error),
            f"erq.toml line 3: server.auth_file: {path}: cannot read:"
            " No such file or directory",
        )
        error = self.assertRaises(ConfigError, Config().with_overrides, auth_file=path)
        self.assertEqual(str(error), f"{path}: cannot read: No such file or directory")

    def test_a_malformed_line_is_named_not_shown(self) -> None:
        path = os.path.abspath(self.users(b"alice:s3cret\n\nbob\n"))
        error = self.assertRaises(
            ConfigError,
            parse_config,
            f"[server]\nauth_file = {json.dumps(path)}\n",
            "erq.toml",
        )
        self.assertEqual(str(error), f"{path} line 3: expected user:password")

    def test_bad_value(self) -> None:
        for value in ["1", "true", '"a\\u0000b"']:
            error = self.assertRaises(
                ConfigError, parse_config, f"[server]\nauth_file = {value}\n"
            )
            self.assertIn('expected a file path or "" for none', str(error))

    def test_overrides_keep_the_users_read(self) -> None:
        path = self.users()
        config = Config().with_overrides(auth_file=path)
        credentials = config.credentials
        self.assertIs(config.with_overrides(max_connections=3).credentials, credentials)
        self.assertIs(
            config.with_overrides(sync_journal="never").credentials, credentials
        )
        with open(path, "wb") as file:
            file.write(b"bob:other\n")
        again = config.with_credentials_read_again()
        assert again.credentials is not None
        self.assertTrue(again.credentials.check(b"bob", b"other"))
        self.assertFalse(again.credentials.check(b"alice", b"s3cret"))


class QueueSettingsTests(SynchronousTestCase):
    def test_over_limits(self) -> None:
        settings = QueueSettings(max_items=2, max_size=100)
        self.assertFalse(settings.over_limits(2, 100))
        self.assertTrue(settings.over_limits(3, 0))
        self.assertTrue(settings.over_limits(0, 101))
        self.assertFalse(QueueSettings().over_limits(10**9, 10**12))

    def test_item_expiry_capped_by_max_age(self) -> None:
        self.assertIsNone(QueueSettings().item_expiry(None, 100.0))
        self.assertEqual(QueueSettings().item_expiry(150.0, 100.0), 150.0)
        aged = QueueSettings(max_age=30.0)
        self.assertEqual(aged.item_expiry(None, 100.0), 130.0)
        self.assertEqual(aged.item_expiry(110.0, 100.0), 110.0)
        self.assertEqual(aged.item_expiry(150.0, 100.0), 130.0)


class StatusSettingTests(SynchronousTestCase):
    def test_default_and_any_case(self) -> None:
        self.assertIs(Config().server.status, ServerStatus.UP)
        config = parse_config('[server]\nstatus = "Quiescent"\n')
        self.assertIs(config.server.status, ServerStatus.QUIESCENT)

    def test_a_bad_value_names_the_line(self) -> None:
        error = self.assertRaises(
            ConfigError, parse_config, '[server]\nport = 1\nstatus = "down"\n'
        )
        self.assertEqual(
            str(error),
            '<string> line 3: server.status: expected "up", "readonly" or'
            ' "quiescent", got "down"',
        )

    def test_the_command_line_wins(self) -> None:
        config = parse_config('[server]\nstatus = "quiescent"\n')
        self.assertIs(
            config.with_overrides(status=ServerStatus.UP).server.status,
            ServerStatus.UP,
        )
        self.assertIs(config.with_overrides().server.status, ServerStatus.QUIESCENT)
