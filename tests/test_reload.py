"""Tests for erq.reload: the configuration read again on a running server."""

from __future__ import annotations

import os

from twisted.internet.task import Clock
from twisted.logger import Logger
from twisted.trial.unittest import SynchronousTestCase

from erq.config import Config, ConfigError, ServerSettings, load_config
from erq.reload import NoConfigurationFile, read_again
from erq.service import QueueService


class ReadAgainTests(SynchronousTestCase):
    def write(self, text: str) -> str:
        path = os.path.abspath(self.mktemp())
        with open(path, "w") as file:
            file.write(text)
        return path

    def test_settings_change_but_port_and_data_dir_wait(self) -> None:
        path = self.write("[server]\nport = 22122\n[defaults]\nmax_items = 5\n")
        running = load_config(path)
        # The file changes under the running server.
        with open(path, "w") as file:
            file.write(
                '[server]\nport = 9999\ndata_dir = "elsewhere"\n'
                "[defaults]\nmax_items = 7\n"
            )
        config = read_again(running, path, {}, Logger())
        self.assertEqual(config.settings_for("q").max_items, 7)
        self.assertEqual(
            (config.server.port, config.server.data_dir),
            (running.server.port, running.server.data_dir),
        )

    def test_overrides_apply_again(self) -> None:
        path = self.write("[defaults]\nmax_items = 5\n")
        config = read_again(
            load_config(path), path, {"max_memory_size": 1024}, Logger()
        )
        self.assertEqual(config.settings_for("q").max_memory_size, 1024)

    def test_nothing_to_read(self) -> None:
        self.assertRaises(NoConfigurationFile, read_again, Config(), None, {}, Logger())
        self.assertTrue(issubclass(NoConfigurationFile, ConfigError))

    def test_a_bad_file_raises(self) -> None:
        path = self.write("[defaults]\nmax_items = 5\n")
        running = load_config(path)
        with open(path, "w") as file:
            file.write("[defaults]\nmax_items = -1\n")
        self.assertRaises(ConfigError, read_again, running, path, {}, Logger())

    def test_only_an_auth_file(self) -> None:
        users = self.write("alice:s3cret\n")
        running = Config(ServerSettings(auth_file=users))
        with open(users, "w") as file:
            file.write("bob:hunter22\n")
        config = read_again(running, None, {}, Logger())
        self.assertIsNotNone(config.credentials)
        self.assertNotEqual(config.credentials, running.credentials)


class LiveConfigTests(SynchronousTestCase):
    """A configuration applied to a running service reaches its live
    queues; one that cannot be read changes nothing."""

    def setUp(self) -> None:
        self.path = os.path.abspath(self.mktemp())
        self.write("[defaults]\nmax_items = 5\n")
        self.service = QueueService(
            load_config(self.path),
            reactor=Clock(),
            config_path=self.path,
            overrides={"max_item_cap": 1000},
        )
        self.live = self.service.live_config

    def write(self, text: str) -> None:
        with open(self.path, "w") as file:
            file.write(text)

    def test_a_live_queue_gets_the_new_settings(self) -> None:
        queue = self.service.create_queue("q")
        self.assertEqual(queue.settings.max_items, 5)
        self.write('[defaults]\nmax_items = 7\n[queues.q]\nexpire_to_queue = "dead"\n')
        self.live.reload()
        self.assertEqual(queue.settings.max_items, 7)
        self.assertIsNotNone(queue.expiry.sink)
        # The command line's settings stay on top of the file's.
        self.assertEqual(self.service.max_item_cap, 1000)

    def test_configured_children_exist_once_running(self) -> None:
        config = Config()
        self.write('[queues."p+child"]\nmax_items = 3\n')
        self.live.reload()
        self.assertIsNone(self.service.queue("p+child"))
        self.service.startService()
        self.addCleanup(self.service.stopService)
        child = self.service.queue("p+child")
        assert child is not None
        self.assertEqual(child.settings.max_items, 3)
        # A child no longer configured stays, with the settings it inherits.
        self.live.apply(config)
        self.assertIs(self.service.queue("p+child"), child)
        self.assertEqual(child.settings.max_items, config.settings_for("p").max_items)

    def test_a_bad_file_changes_nothing(self) -> None:
        config = self.service.config
        self.write("[defaults]\nmax_items = -5\n")
        self.live.reload_logged("the test")
        self.assertIs(self.service.config, config)
        self.assertRaises(
            ConfigError, self.live.reload_logged, "the test", reraise=True
        )
        self.assertIs(self.service.config, config)
