"""Tests for erq.journal.tool: the erq-journal command."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from typing import TextIO

from twisted.trial.unittest import SynchronousTestCase

from erq.datadir import DataDirectoryInUse, lock_data_dir
from erq.journal import (
    Journal,
    JournalWriter,
    main,
    queue_dir,
    summaries,
)
from erq.journal import tool as tool_module
from erq.queue import Item
from tests.support import FakeReactor, SyncPool


class ToolTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.data_dir = self.mktemp()
        writer = JournalWriter(FakeReactor(), SyncPool())  # type: ignore[arg-type]
        jobs = Journal(queue_dir(self.data_dir, "jobs"), writer, "never", name="jobs")
        items = [Item(i, b"job %d" % i, i, None, 100.0 + i) for i in range(1, 6)]
        for item in items:
            jobs.add(item)
        jobs.remove(items[0])
        jobs.open(items[1])
        jobs.close()
        other = Journal(queue_dir(self.data_dir, "Other"), writer, "never")
        other.add(Item(1, b"o", 0, 1e9, 5.0))
        other.flush()
        other.close()

    def run_main(self, *argv: str) -> tuple[int, str]:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = main(list(argv))
        return code, out.getvalue()

    def test_dump(self) -> None:
        code, out = self.run_main("dump", self.data_dir, "jobs")
        self.assertEqual(code, 0)
        lines = out.splitlines()
        self.assertEqual(
            lines[0], f"queue 'jobs' in {queue_dir(self.data_dir, 'jobs')}"
        )
        self.assertEqual(len(lines), 1 + 5 + 2)
        self.assertEqual(
            lines[1],
            "00000001.seg 8 ADD id=1 flags=1 expiry=- added=101.0 bytes=5"
            " data=b'job 1'",
        )
        self.assertIn("REMOVE id=1 bytes=5", lines[6])
        self.assertIn("OPEN id=2", lines[7])
        code, out = self.run_main("dump", self.data_dir)
        self.assertIn("queue 'Other'", out)
        self.assertIn("ADD id=1 flags=0 expiry=1000000000.0", out)
        self.assertIn(" FLUSH", out)

    def test_stats(self) -> None:
        code, out = self.run_main("stats", self.data_dir)
        self.assertEqual(code, 0)
        jobs, other = sorted(out.splitlines(), key=lambda line: "jobs" not in line)
        self.assertIn("queue 'jobs': items=3 bytes=15 open=1 segments=1", jobs)
        self.assertIn("queue 'Other': items=0 bytes=0 open=0", other)

    def test_check(self) -> None:
        code, out = self.run_main("check", self.data_dir)
        self.assertEqual(code, 0)
        self.assertIn("queue 'jobs': ok, 1 segments, 7 records", out)
        path = os.path.join(queue_dir(self.data_dir, "jobs"), "00000001.seg")
        size = os.path.getsize(path)
        with open(path, "r+b") as f:
            f.seek(30)
            f.write(b"\xff")
        before = open(path, "rb").read()
        code, out = self.run_main("check", self.data_dir, "jobs")
        self.assertEqual(code, 1)
        self.assertIn("queue 'jobs': damaged", out)
        self.assertIn(
            f"00000001.seg: corrupt record (checksum mismatch) at offset 8,"
            f" {size - 8} bytes would be cut",
            out,
        )
        # Read-only: the tools change nothing.
        self.run_main("stats", self.data_dir, "jobs")
        self.run_main("dump", self.data_dir, "jobs")
        self.assertEqual(open(path, "rb").read(), before)

    def test_summaries(self) -> None:
        """``stats`` takes closed segments from their summaries, as start
        does; ``check`` says when a summary disagrees with its segment."""
        writer = JournalWriter(FakeReactor(), SyncPool())  # type: ignore[arg-type]
        directory = queue_dir(self.data_dir, "deep")
        deep = Journal(directory, writer, "never", segment_size=200, name="deep")
        for i in range(1, 31):
            deep.add(Item(i, b"d %d" % i, 0, None, 1.0))
        for i in range(1, 11):
            deep.remove(Item(i, b"d %d" % i, 0, None, 1.0))
        deep.close()
        sums = sorted(n for n in os.listdir(directory) if n.endswith(".sum"))
        self.assertTrue(sums)
        code, out = self.run_main("stats", self.data_dir, "deep")
        self.assertIn("queue 'deep': items=20 bytes=", out)
        code, out = self.run_main("check", self.data_dir, "deep")
        self.assertEqual((code, out.count("\n")), (0, 1))
        # A summary that says one add less, bound to its segment all the same.
        path = os.path.join(directory, sums[0])
        segment = open(path.replace(".sum", ".seg"), "rb").read()
        decoded = summaries.decode(open(path, "rb").read())
        assert decoded is not None
        summary, head_crc, tail_crc = decoded
        summary.adds -= 1
        with open(path, "wb") as f:
            f.write(summaries.encode(summary, head_crc, tail_crc))
        code, out = self.run_main("check", self.data_dir, "deep")
        self.assertEqual(code, 1)
        self.assertIn(
            f"{sums[0].replace('.sum', '.seg')}: summary disagrees with the segment",
            out,
        )
        # One that no longer matches its segment is only ignored.
        with open(path.replace(".sum", ".seg"), "ab") as f:
            f.write(segment[-20:])
        code, out = self.run_main("check", self.data_dir, "deep")
        self.assertNotIn("summary", out)

    def test_zeros_ahead_are_no_damage(self) -> None:
        # An always-synced queue left running: its segment ends in zeros.
        writer = JournalWriter(FakeReactor(), SyncPool())  # type: ignore[arg-type]
        synced = Journal(queue_dir(self.data_dir, "synced"), writer, "always")
        for i in range(1, 4):
            synced.add(Item(i, b"s %d" % i, 0, None, 1.0))
        code, out = self.run_main("check", self.data_dir, "synced")
        self.assertEqual(code, 0)
        self.assertIn("queue 'synced': ok, 1 segments, 3 records", out)
        code, out = self.run_main("dump", self.data_dir, "synced")
        self.assertEqual(len(out.splitlines()), 1 + 3)
        synced.close()

    def test_errors(self) -> None:
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            self.assertEqual(self.run_main("stats", self.data_dir, "nope")[0], 2)
            self.assertEqual(self.run_main("check", self.data_dir + "x")[0], 2)
        self.assertIn("no queue 'nope'", err.getvalue())

    def test_refuses_while_a_server_holds_the_directory(self) -> None:
        lock = lock_data_dir(self.data_dir)
        refusal = (
            f"erq-journal: data directory {os.path.abspath(self.data_dir)}"
            f" is in use by another erq process (pid {os.getpid()})\n"
        )
        for argv in (
            ("dump", self.data_dir),
            ("check", self.data_dir),
            ("stats", self.data_dir, "jobs"),
        ):
            err = io.StringIO()
            with contextlib.redirect_stderr(err):
                code, out = self.run_main(*argv)
            self.assertEqual((code, out, err.getvalue()), (2, "", refusal))
        lock.release()
        self.assertEqual(self.run_main("check", self.data_dir)[0], 0)

    def test_no_server_starts_while_it_reads(self) -> None:
        lock_data_dir(self.data_dir).release()
        refused: list[str] = []

        def stats(queues: dict[str, str], out: TextIO) -> int:
            with self.assertRaises(DataDirectoryInUse) as caught:
                lock_data_dir(self.data_dir)
            refused.append(str(caught.exception))
            return 0

        self.patch(tool_module, "_stats", stats)
        self.assertEqual(self.run_main("stats", self.data_dir)[0], 0)
        self.assertEqual(
            refused,
            [
                f"data directory {os.path.abspath(self.data_dir)} is in use by"
                " another erq process (erq-journal)"
            ],
        )
        # And it lets go when done.
        lock_data_dir(self.data_dir).release()

    def test_module_runs(self) -> None:
        result = subprocess.run(
            [sys.executable, "-m", "erq.journal", "check", self.data_dir],
            capture_output=True,
            text=True,
            timeout=60,
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("queue 'jobs': ok", result.stdout)


class ClosedPipeTests(SynchronousTestCase):
    """``erq-journal ... | head``: the reader goes away before the end."""

    def setUp(self) -> None:
        self.data_dir = self.mktemp()
        writer = JournalWriter(FakeReactor(), SyncPool())  # type: ignore[arg-type]
        journal = Journal(queue_dir(self.data_dir, "many"), writer, "never")
        # Far more than a pipe holds, so the tool is still writing when the
        # reader leaves.
        for i in range(1, 5001):
            journal.add(Item(i, b"%032d" % i, 0, None, 1.0))
        journal.close()

    def run_tool(self, *argv: str, read_a_line: bool) -> tuple[int, bytes, bytes]:
        """Run the tool into a pipe that is closed after its first line, or
        before it writes anything; its status, that line and its stderr."""
        reader, writer = os.pipe()
        if not read_a_line:
            os.close(reader)
        with subprocess.Popen(
            [sys.executable, "-m", "erq.journal", *argv],
            stdout=writer,
            stderr=subprocess.PIPE,
        ) as tool:
            os.close(writer)
            line = b""
            if read_a_line:
                with os.fdopen(reader, "rb") as pipe:
                    line = pipe.readline()
            _, err = tool.communicate(timeout=60)
        return tool.returncode, line, err

    def test_dump_into_head(self) -> None:
        code, line, err = self.run_tool("dump", self.data_dir, read_a_line=True)
        self.assertEqual(line, f"queue 'many' in {self.data_dir}/many\n".encode())
        self.assertEqual((code, err), (141, b""))

    def test_stats_into_a_closed_pipe(self) -> None:
        code, _, err = self.run_tool("stats", self.data_dir, read_a_line=False)
        self.assertEqual((code, err), (141, b""))

    def test_whole_output_read(self) -> None:
        result = subprocess.run(
            [sys.executable, "-m", "erq.journal", "dump", self.data_dir],
            capture_output=True,
            timeout=60,
        )
        self.assertEqual((result.returncode, result.stderr), (0, b""))
        self.assertEqual(len(result.stdout.splitlines()), 1 + 5000)
