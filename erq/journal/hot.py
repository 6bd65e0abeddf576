"""The journal's two hottest steps, done by the C extension where it is
built (``_hot.c`` in ``erq.journal._engine``).

Every set appends an ADD record: two struct packs, two crc32 calls and a
concatenation in Python.  ``add_record`` makes its frame and head in one
call (the item's data follows it, as before); it returns ``None`` for a
value it does not take, and ``Journal._add_record`` then packs it in
Python.

Every get of an item that is not open appends a REMOVE record and moves
four of the journal's counts: the current segment's size, the run of
removed ids that its summary is building, and the live count of the
oldest segment, where the item was born.  ``remove`` does the common case
in one call: the item is removed in id order, from the oldest segment,
into the write being gathered, with no open read, no abort and no
forwarded item in the journal, and the segment it leaves is not to be
compacted.  In any other case it changes nothing and says so, and
``Journal.remove`` does it all in Python.

In erq's own code on a lock-step request (``python -m
benchmarks.inprocess --sync never --lockstep``), that is about a tenth of
a get's time and a twentieth of a set's.  Both are ``None`` where the
extension is not built, and the Python code does everything.

``remove`` reads and writes the objects' slots where they are in
memory: ``bind`` is given each slot's descriptor, once, and keeps its
offset, so that no attribute is looked up by name on a get.  An object
of another type than the one bound here is left to Python.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable

from erq.items import Item
from erq.journal.files import _Write
from erq.journal.records import _NAN
from erq.journal.segments import _Segment
from erq.journal.summaries import SummaryBuilder

#: The slots that ``remove`` reads and writes, in the order ``bind``
#: takes their descriptors.
SLOTS: tuple[tuple[type, str], ...] = (
    (Item, "id"),
    (Item, "data"),
    (_Segment, "size"),
    (_Segment, "file"),
    (_Segment, "summary"),
    (_Segment, "first_id"),
    (_Segment, "last_id"),
    (_Segment, "live"),
    (_Segment, "pinned"),
    (_Write, "file"),
    (_Write, "bufs"),
    (SummaryBuilder, "run_last"),
    (SummaryBuilder, "run_limit"),
    (SummaryBuilder, "run_bytes"),
)

add_record: Callable[[int, int, float | None, float, bytes], bytes | None] | None
remove: Callable[..., bool] | None
try:
    from erq.journal import _engine
except ImportError:  # built without its C extension: all of it in Python
    add_record = remove = None
else:
    _engine.bind(
        zlib.crc32,
        _NAN,
        Item,
        _Segment,
        _Write,
        SummaryBuilder,
        *(vars(cls)[name] for cls, name in SLOTS),
    )
    add_record = _engine.add_record
    remove = _engine.remove
