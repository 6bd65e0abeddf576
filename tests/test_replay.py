"""Tests for erq.journal.replay: a queue rebuilt from its segments, and
the damage it cuts off."""

from __future__ import annotations

import os
import random
import shutil
from collections import deque
from typing import Any

from twisted.python.failure import Failure

from erq.journal import (
    FileOps,
    Journal,
    JournalError,
    JournalWriter,
    files,
    summaries,
)
from erq.journal.replay import _Replay
from erq.journal.summaries import SummaryBuilder, summarize_part
from erq.journal.tool import _summary_problem
from erq.queue import Item
from tests.support import (
    FakeReactor,
    JournalTestCase,
    SyncPool,
    ids,
    item,
    segment_files,
)


class ReplayTests(JournalTestCase):
    """What goes in comes back out, in order."""

    def test_round_trip(self) -> None:
        writer = self.fake_writer()
        journal = Journal(self.dir, writer, name="work")
        items = [item(1), item(2, 0), item(3, 100, expiry=1700000100.125), item(4)]
        items[1].flags = 2**32 - 1
        for it in items:
            journal.add(it)
        journal.close()
        _, replayed = self.replay()
        self.assertEqual(ids(replayed.items), [1, 2, 3, 4])
        for got, want in zip(replayed.items, items, strict=True):
            self.assertEqual(
                (got.data, got.flags, got.expiry, got.added),
                (want.data, want.flags, want.expiry, want.added),
            )
        self.assertIsNone(replayed.items[0].expiry)
        self.assertEqual(replayed.next_id, 5)
        self.assertEqual((replayed.behind_items, replayed.damage), (0, []))
        with open(os.path.join(self.dir, "name")) as f:
            self.assertEqual(f.read(), "work\n")

    def test_empty_and_missing(self) -> None:
        _, replayed = self.replay()
        self.assertEqual((replayed.items, replayed.next_id), ([], 1))

    def test_remove_anywhere(self) -> None:
        journal = Journal(self.dir, self.fake_writer())
        items = [item(i) for i in range(1, 11)]
        for it in items:
            journal.add(it)
        for i in (1, 5, 10):
            journal.remove(items[i - 1])
        journal.close()
        _, replayed = self.replay()
        self.assertEqual(ids(replayed.items), [2, 3, 4, 6, 7, 8, 9])
        self.assertEqual(replayed.next_id, 11)

    def test_abort_puts_back_at_head(self) -> None:
        journal = Journal(self.dir, self.fake_writer())
        items = [item(i) for i in range(1, 6)]
        for it in items:
            journal.add(it)
        journal.open(items[0])
        journal.open(items[1])
        journal.abort(items[0])
        journal.abort(items[1])
        # Reopened from the aborted head, and given back again.
        journal.open(items[1])
        journal.abort(items[1])
        journal.close()
        _, replayed = self.replay()
        self.assertEqual(ids(replayed.items), [2, 1, 3, 4, 5])
        self.assertEqual(replayed.reopened, 0)

    def test_flush_keeps_open_reads(self) -> None:
        journal = Journal(self.dir, self.fake_writer())
        items = [item(i) for i in range(1, 6)]
        for it in items:
            journal.add(it)
        journal.open(items[0])
        journal.open(items[1])
        journal.abort(items[1])
        journal.flush()
        journal.add(item(6))
        journal.close()
        _, replayed = self.replay()
        self.assertEqual(ids(replayed.items), [1, 6])
        self.assertEqual(replayed.next_id, 7)

    def test_unknown_ids_are_ignored(self) -> None:
        journal = Journal(self.dir, self.fake_writer())
        journal.add(item(5))
        for it in (item(1), item(2), item(99)):
            journal.remove(it)
            journal.open(it)
            journal.abort(it)
        journal.close()
        _, replayed = self.replay()
        self.assertEqual(ids(replayed.items), [5])
        self.assertEqual(replayed.next_id, 100)

    def test_randomized_against_a_model(self) -> None:
        """Random adds, opens, confirms, aborts, removes and flushes, with
        tiny segments (so compaction and forwarding run a lot), replayed
        and compared with a plain model of the queue."""
        for seed in range(12):
            rng = random.Random(seed)
            directory = os.path.join(self.dir, str(seed))
            writer = self.fake_writer()
            journal = Journal(
                directory, writer, sync="never", segment_size=rng.choice([300, 2000])
            )
            queued: deque[Item] = deque()
            opened: list[Item] = []
            next_id = 1
            for _ in range(1500):
                r = rng.random()
                if r < 0.45 or not (queued or opened):
                    it = item(next_id, rng.randrange(0, 40))
                    next_id += 1
                    journal.add(it)
                    queued.append(it)
                elif r < 0.55 and queued:
                    it = queued.popleft()
                    journal.open(it)
                    opened.append(it)
                elif r < 0.7 and opened:
                    it = opened.pop(rng.randrange(len(opened)))
                    journal.remove(it)
                elif r < 0.8 and opened:
                    it = opened.pop(rng.randrange(len(opened)))
                    journal.abort(it)
                    queued.appendleft(it)
                elif r < 0.95 and queued:
                    it = queued[rng.randrange(len(queued))]
                    queued.remove(it)
                    journal.remove(it)
                elif r < 0.96:
                    journal.flush()
                    queued.clear()
            journal.close()
            sizes = os.path.getsize
            on_disk = sum(
                sizes(os.path.join(directory, n)) for n in os.listdir(directory)
            )
            self.assertLess(on_disk, 40000, f"seed {seed}")
            for max_memory in (1 << 30, 50):
                replay_journal = Journal(directory, self.fake_writer(), sync="never")
                replayed = replay_journal.replay(max_memory)
                got = ids(replayed.items)
                behind: list[Item] = []
                while replayed.behind_items > len(behind):
                    d = replay_journal.read_behind(100)
                    d.addCallback(behind.extend)
                got += ids(behind)
                want = sorted(ids(opened)) + ids(list(queued))
                self.assertEqual(got, want, f"seed {seed} {max_memory}")
                self.assertEqual(replayed.reopened, len(opened))
                self.assertEqual(replayed.damage, [])
                self.assertGreaterEqual(replayed.next_id, next_id)
                replay_journal.close()
                # The replay journaled the open reads as aborted.
                opened.sort(key=lambda it: it.id)
                queued.extendleft(reversed(opened))
                opened = []

    def test_randomized_with_read_behind(self) -> None:
        """Like the queue: past a memory limit items are journaled only and
        read back as the head drains; compaction runs all the while."""
        for seed in range(8):
            rng = random.Random(1000 + seed)
            directory = os.path.join(self.dir, str(seed))
            journal = Journal(
                directory, self.fake_writer(), sync="never", segment_size=700
            )
            limit = 200
            memory: deque[Item] = deque()
            behind: deque[Item] = deque()
            opened: list[Item] = []
            next_id = 1

            for _ in range(3000):
                r = rng.random()
                if not memory and behind:
                    got = self.successResultOf(journal.read_behind(limit // 2))
                    self.assertEqual(ids(got), ids(list(behind)[: len(got)]))
                    self.assertTrue(got)
                    for _ in got:
                        memory.append(behind.popleft())
                if r < 0.45:
                    it = item(next_id, rng.randrange(1, 30))
                    next_id += 1
                    in_memory = sum(len(queued.data) for queued in memory)
                    keep = not behind and in_memory + len(it.data) <= limit
                    journal.add(it, in_memory=keep)
                    (memory if keep else behind).append(it)
                elif r < 0.6 and memory:
                    it = memory.popleft()
                    journal.open(it)
                    opened.append(it)
                elif r < 0.7 and opened:
                    journal.remove(opened.pop(rng.randrange(len(opened))))
                elif r < 0.75 and opened:
                    it = opened.pop(rng.randrange(len(opened)))
                    journal.abort(it)
                    memory.appendleft(it)
                elif r < 0.97 and memory:
                    journal.remove(memory.popleft())
                elif r >= 0.995:
                    journal.flush()
                    memory.clear()
                    behind.clear()
            journal.close()
            files = segment_files(directory)
            # A few segments of a tiny size; most hold the (deep) queue.
            self.assertLessEqual(len(files), 10, f"seed {seed}")
            replay_journal = Journal(directory, self.fake_writer(), sync="never")
            replayed = replay_journal.replay(limit)
            head = ids(replayed.items)
            rest: list[Item] = []
            while replayed.behind_items > len(rest):
                replay_journal.read_behind(limit // 2).addCallback(rest.extend)
            # Open reads come back first, in the order they were queued in.
            want = sorted(ids(opened)) + ids(list(memory)) + ids(list(behind))
            self.assertEqual(head + ids(rest), want, f"seed {seed}")
            self.assertEqual(replayed.damage, [])


def summary_files(directory: str) -> list[str]:
    return sorted(n for n in os.listdir(directory) if n.endswith(".sum"))


def replay_state(directory: str, max_memory: int) -> tuple[Any, int]:
    """Everything a replay hands over (the head, then every item read back
    from disk), and the liveness of each segment; and how many segments
    were taken from their summaries."""
    model = _Replay(directory, max_memory, repair=False)
    model.run()
    writer = JournalWriter(FakeReactor(), SyncPool())  # type: ignore[arg-type]
    journal = Journal(directory, writer, sync="never")
    replayed = journal.replay(max_memory)
    items = list(replayed.items)
    while replayed.behind_items > len(items) - len(replayed.items):
        got: list[Item] = []
        journal.read_behind(max_memory).addCallback(got.extend)
        if not got:
            break
        items += got
    segments = [
        (s.number, s.live, s.pinned, s.first_id, s.last_id, s.size)
        for s in journal._segments
    ]
    journal.close()
    writer.stop()
    state = (
        [(i.id, i.data, i.flags, i.expiry, i.added) for i in items],
        replayed.behind_items,
        replayed.behind_bytes,
        replayed.next_id,
        replayed.reopened,
        [damage.replace(directory, "") for damage in replayed.damage],
        segments,
    )
    return state, model.summarized


class SummaryTests(JournalTestCase):
    """Closed segments get a summary, and replay takes them from it rather
    than reading them, to the same result."""

    def fill(self, count: int, segment_size: int = 600, size: int = 20) -> Journal:
        journal = Journal(
            self.dir, self.fake_writer(), sync="never", segment_size=segment_size
        )
        for i in range(1, count + 1):
            journal.add(item(i, size))
        return journal

    def test_closed_segments_have_summaries(self) -> None:
        self.fill(50).close()
        segments = segment_files(self.dir)
        self.assertGreater(len(segments), 3)
        # Every segment, the last one as the journal closed.
        self.assertEqual(
            summary_files(self.dir),
            [name.replace(".seg", ".sum") for name in segments],
        )

    def test_compaction_deletes_the_summary_first(self) -> None:
        journal = self.fill(50)
        for i in range(1, 31):
            journal.remove(item(i, 20))
        journal.close()
        segments = segment_files(self.dir)
        self.assertNotIn("00000001.seg", segments)
        self.assertEqual(
            summary_files(self.dir),
            [name.replace(".seg", ".sum") for name in segments],
        )

    def test_summaries_stand_for_segments(self) -> None:
        """Adds, opens, aborts and removes (in order and out of it), and in
        some runs a flush, with a small memory: replay from summaries hands
        over what reading every segment does, and each summary built as
        records were appended says what reading its segment says."""
        takens: list[int] = []
        for seed in range(8):
            rng = random.Random(seed)
            flushes = 0.002 if seed % 3 == 2 else 0.0
            directory = os.path.join(self.dir, str(seed))
            journal = Journal(
                directory,
                self.fake_writer(),
                sync="never",
                segment_size=rng.choice([400, 2000, 8000]),
            )
            queued: deque[Item] = deque()
            opened: list[Item] = []
            next_id = 1
            for _ in range(1500):
                r = rng.random()
                if r < 0.5 or not (queued or opened):
                    it = item(next_id, rng.randrange(0, 40))
                    next_id += 1
                    journal.add(it)
                    queued.append(it)
                elif r < 0.6 and queued:
                    it = queued.popleft()
                    journal.open(it)
                    opened.append(it)
                elif r < 0.7 and opened:
                    # Mostly the oldest, as consumers do.
                    at = 0 if rng.random() < 0.9 else rng.randrange(len(opened))
                    journal.remove(opened.pop(at))
                elif r < 0.72 and queued:
                    it = queued[rng.randrange(len(queued))]
                    queued.remove(it)
                    journal.remove(it)
                elif r < 0.76 and opened:
                    # Back at the head: the latest abort first.
                    it = opened.pop(rng.randrange(len(opened)))
                    journal.abort(it)
                    queued.appendleft(it)
                elif 0.76 <= r < 0.76 + flushes:
                    journal.flush()
                    queued.clear()
                elif queued:
                    journal.remove(queued.popleft())
            journal.close()
            self.assertTrue(summary_files(directory), f"seed {seed}")
            for name in summary_files(directory):
                path = os.path.join(directory, name.replace(".sum", ".seg"))
                with open(path, "rb") as f:
                    buf = f.read()
                self.assertIsNone(_summary_problem(path, buf), f"seed {seed}")
            slow = directory + "-slow"
            shutil.copytree(directory, slow)
            for name in summary_files(slow):
                os.unlink(os.path.join(slow, name))
            for max_memory in (1 << 30, 100, 1):
                fast_copy = f"{directory}-{max_memory}"
                slow_copy = f"{slow}-{max_memory}"
                shutil.copytree(directory, fast_copy)
                shutil.copytree(slow, slow_copy)
                fast_state, taken = replay_state(fast_copy, max_memory)
                slow_state, none_taken = replay_state(slow_copy, max_memory)
                where = f"seed {seed}, max_memory {max_memory}"
                takens.append(taken)
                self.assertEqual(none_taken, 0, where)
                self.assertEqual(fast_state, slow_state, where)
                want = sorted(ids(opened)) + ids(list(queued))
                got = fast_state[0]
                assert isinstance(got, list)
                self.assertEqual([entry[0] for entry in got], want, where)
        # Most runs had summaries to take.
        self.assertGreater(sum(1 for taken in takens if taken), len(takens) // 2)

    def test_summaries_across_restarts(self) -> None:
        """Lives of a journal, each replaying what the last left, some
        ending in a close (the open segment's summary is written, taken at
        the next start and built on) and some in a crash (it no longer
        matches, and the segment is read): every start hands over what
        reading every segment does."""
        for seed in range(4):
            rng = random.Random(seed)
            directory = os.path.join(self.dir, str(seed))
            next_id = 1
            for life in range(4):
                journal = Journal(
                    directory, self.fake_writer(), sync="never", segment_size=2000
                )
                replayed = journal.replay(1 << 30)
                queued = deque(replayed.items)
                next_id = max(next_id, replayed.next_id)
                opened: list[Item] = []
                for _ in range(300):
                    r = rng.random()
                    if r < 0.5 or not (queued or opened):
                        it = item(next_id, rng.randrange(0, 40))
                        next_id += 1
                        journal.add(it)
                        queued.append(it)
                    elif r < 0.65 and queued:
                        it = queued.popleft()
                        journal.open(it)
                        opened.append(it)
                    elif r < 0.75 and opened:
                        journal.remove(opened.pop(0))
                    elif r < 0.8 and opened:
                        it = opened.pop(rng.randrange(len(opened)))
                        journal.abort(it)
                        queued.appendleft(it)
                    elif queued:
                        journal.remove(queued.popleft())
                crashed = rng.random() < 0.5
                if not crashed:
                    journal.close()
                where = f"seed {seed}, life {life}, crashed {crashed}"
                slow = f"{directory}-slow-{life}"
                shutil.copytree(directory, slow)
                for name in summary_files(slow):
                    os.unlink(os.path.join(slow, name))
                fast_state, taken = replay_state(
                    shutil.copytree(directory, f"{directory}-fast-{life}"), 1 << 30
                )
                slow_state, _ = replay_state(slow, 1 << 30)
                self.assertEqual(fast_state, slow_state, where)
                segments = segment_files(directory)
                self.assertEqual(
                    taken, len(segments) - 1 if crashed else len(segments), where
                )

    def test_a_data_directory_without_summaries(self) -> None:
        """One written before summaries: it is read the slow way, and its
        closed segments get their summaries once the writer runs."""
        self.fill(50).close()
        for name in summary_files(self.dir):
            os.unlink(os.path.join(self.dir, name))
        journal, replayed = self.replay()
        self.assertEqual(ids(replayed.items), list(range(1, 51)))
        journal.close()
        segments = segment_files(self.dir)
        self.assertEqual(
            summary_files(self.dir),
            [name.replace(".seg", ".sum") for name in segments],
        )
        _, taken = replay_state(self.dir, 1 << 30)
        self.assertEqual(taken, len(segments))

    def test_summarized_a_slice_per_batch(self) -> None:
        """A closed segment this journal did not write (one found at start)
        is read for its summary a slice per batch, so that no batch waits
        long for it."""
        self.fill(400, segment_size=8000).close()
        for name in summary_files(self.dir):
            os.unlink(os.path.join(self.dir, name))
        self.patch(summaries, "SLICE", 1000)
        reads: list[int] = []

        def counted(path: str, builder: SummaryBuilder) -> object:
            before = builder.end
            result = summarize_part(path, builder)
            reads.append(builder.end - before)
            return result

        self.patch(files, "summarize_part", counted)
        journal, replayed = self.replay()
        journal.close()
        self.assertEqual(ids(replayed.items), list(range(1, 401)))
        segments = segment_files(self.dir)
        self.assertEqual(
            summary_files(self.dir),
            [name.replace(".seg", ".sum") for name in segments],
        )
        self.assertGreater(len(reads), 8 * (len(segments) - 1))
        self.assertLessEqual(max(reads), 1000)
        for name in segments:
            path = os.path.join(self.dir, name)
            with open(path, "rb") as f:
                self.assertIsNone(_summary_problem(path, f.read()))

    def test_a_summary_without_its_segment_goes(self) -> None:
        self.fill(50).close()
        with open(os.path.join(self.dir, "00000099.sum"), "wb") as f:
            f.write(b"left behind")
        journal, replayed = self.replay()
        journal.close()
        self.assertNotIn("00000099.sum", summary_files(self.dir))
        self.assertEqual(ids(replayed.items), list(range(1, 51)))

    def test_damage_the_summary_does_not_know_of(self) -> None:
        """A flipped byte past what a summary checks: met at start (the
        head is read there), replay starts again the slow way and cuts it,
        as it would without summaries."""
        self.fill(800, segment_size=16000, size=40).close()
        segments = segment_files(self.dir)
        self.assertGreater(len(segments), 2)
        path = os.path.join(self.dir, segments[0])
        size = os.path.getsize(path)
        with open(path, "r+b") as f:
            f.seek(size // 2)
            byte = f.read(1)
            f.seek(-1, os.SEEK_CUR)
            f.write(bytes([byte[0] ^ 1]))
        slow = self.dir + "-slow"
        shutil.copytree(self.dir, slow)
        for name in summary_files(slow):
            os.unlink(os.path.join(slow, name))
        fast_state, taken = replay_state(self.dir, 1 << 30)
        slow_state, _ = replay_state(slow, 1 << 30)
        self.assertEqual(taken, 0)
        self.assertEqual(fast_state, slow_state)
        self.assertIn("checksum mismatch", str(fast_state[5]))

    def test_damage_met_reading_back(self) -> None:
        """Damage in a part of a segment that start did not read: the
        read-back fails, and the summary goes, so that the next start
        reads the segment and cuts the damage off."""
        self.fill(800, segment_size=16000, size=40).close()
        segments = segment_files(self.dir)
        path = os.path.join(self.dir, segments[0])
        size = os.path.getsize(path)
        with open(path, "r+b") as f:
            f.seek(size // 2)
            byte = f.read(1)
            f.seek(-1, os.SEEK_CUR)
            f.write(bytes([byte[0] ^ 1]))
        journal, replayed = self.replay(max_memory=100)
        self.assertEqual(replayed.damage, [])
        failures: list[Failure] = []
        journal.read_behind(1 << 20).addErrback(failures.append)
        [failure] = failures
        failure.trap(JournalError)
        self.assertNotIn(segments[0].replace(".seg", ".sum"), summary_files(self.dir))
        journal.close()
        _, again = self.replay()
        self.assertIn("checksum mismatch", again.damage[0])

    def test_open_reads_in_summaries(self) -> None:
        """Items open in a summarized segment when the server stopped come
        back at the head, first, and are journaled as aborted; those
        confirmed later are gone."""
        journal = self.fill(60)
        for i in range(1, 21):
            journal.open(item(i, 20))
            if i not in (7, 15):
                journal.remove(item(i, 20))
        journal.remove(item(30, 20))
        for i in range(40, 50):
            journal.add(item(i + 21, 20))
        journal.remove(item(15, 20))
        journal.close()
        state, taken = replay_state(self.dir, 1 << 30)
        self.assertGreater(taken, 0)
        got = state[0]
        assert isinstance(got, list)
        want = [7] + [i for i in range(21, 71) if i != 30]
        self.assertEqual([entry[0] for entry in got], want)
        self.assertEqual(state[4], 1)

    def test_forwarded_open_reads_in_summaries(self) -> None:
        """An item held open while the rest of its segment is consumed is
        copied forward and its segment deleted: a summarized segment then
        holds its only copy, which comes back at the head."""
        journal = self.fill(20)
        journal.open(item(1, 20))
        for i in range(2, 16):
            journal.remove(item(i, 20))
        for i in range(21, 61):
            journal.add(item(i, 20))
        journal.close()
        self.assertNotIn("00000001.seg", segment_files(self.dir))
        slow = self.dir + "-slow"
        shutil.copytree(self.dir, slow)
        for name in summary_files(slow):
            os.unlink(os.path.join(slow, name))
        state, taken = replay_state(self.dir, 1 << 30)
        slow_state, _ = replay_state(slow, 1 << 30)
        self.assertGreater(taken, 0)
        self.assertEqual(state, slow_state)
        got = state[0]
        assert isinstance(got, list)
        self.assertEqual([entry[0] for entry in got], [1, *range(16, 61)])
        self.assertEqual(state[4], 1)

    def test_aborted_reads_in_summaries(self) -> None:
        """Items given back (aborted) in summarized segments, some copied
        forward as their segment went: they come back at the head, the
        latest abort first, behind the reads still open, as reading every
        segment has them."""
        journal = self.fill(60)
        for i in range(1, 11):
            journal.open(item(i, 20))
        for i in (3, 5, 8):
            journal.abort(item(i, 20))
        journal.open(item(5, 20))
        journal.abort(item(5, 20))
        for i in (1, 2, 4, 6, 9, 10, 11):
            journal.remove(item(i, 20))
        for i in range(61, 101):
            journal.add(item(i, 20))
        journal.close()
        self.assertNotIn("00000001.seg", segment_files(self.dir))
        slow = self.dir + "-slow"
        shutil.copytree(self.dir, slow)
        for name in summary_files(slow):
            os.unlink(os.path.join(slow, name))
        state, taken = replay_state(self.dir, 1 << 30)
        slow_state, _ = replay_state(slow, 1 << 30)
        self.assertGreater(taken, 2)
        self.assertEqual(state, slow_state)
        got = state[0]
        assert isinstance(got, list)
        self.assertEqual([entry[0] for entry in got], [7, 5, 8, 3, *range(12, 101)])
        self.assertEqual(state[4], 1)

    def test_a_summary_that_does_not_match_is_written_again(self) -> None:
        self.fill(50).close()
        path = os.path.join(self.dir, summary_files(self.dir)[0])
        with open(path, "rb") as f:
            good = f.read()
        with open(path, "wb") as f:
            f.write(good[:-1] + bytes([good[-1] ^ 1]))
        journal, replayed = self.replay()
        self.assertEqual(ids(replayed.items), list(range(1, 51)))
        journal.close()
        with open(path, "rb") as f:
            self.assertEqual(f.read(), good)

    def test_only_kept_segments_are_summarized_at_start(self) -> None:
        """A data directory without summaries whose oldest segments are
        dead: they are deleted at start, not summarized first."""
        journal = self.fill(50)
        # Its items are removed below and it is deleted; put back, it is
        # what a crash before the deletion leaves.
        kept = os.path.join(self.dir, "00000001.seg")
        with open(kept, "rb") as original:
            dead = original.read()
        for i in range(1, 31):
            journal.remove(item(i, 20))
        journal.close()
        with open(kept, "wb") as copy:
            copy.write(dead)
        for name in summary_files(self.dir):
            os.unlink(os.path.join(self.dir, name))
        written: list[str] = []

        class Recording(FileOps):
            def write_file(self, path: str, data: bytes, durable: bool = True) -> None:
                written.append(os.path.basename(path))
                super().write_file(path, data, durable)

        journal = Journal(
            self.dir, self.fake_writer(ops=Recording()), sync="never", segment_size=600
        )
        replayed = journal.replay(1 << 30)
        journal.close()
        self.assertEqual(ids(replayed.items), list(range(31, 51)))
        self.assertNotIn("00000001.sum", written)
        self.assertNotIn("00000001.seg", segment_files(self.dir))
        self.assertEqual(
            sorted(written),
            [name.replace(".seg", ".sum") for name in segment_files(self.dir)],
        )
