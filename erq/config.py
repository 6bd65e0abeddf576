"""Queue and server settings: what each queue may hold and how it is kept."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

MiB = 1024 * 1024

#: ``"always"``, ``"never"``, or the seconds between fsyncs.
SyncPolicy = Literal["always", "never"] | float


@dataclass(frozen=True)
class QueueSettings:
    """The settings of one queue; ``None`` means unlimited or unset."""

    max_items: int | None = None
    max_size: int | None = None
    max_item_size: int | None = None
    max_age: float | None = None
    discard_old_when_full: bool = False
    journal: bool = True
    sync_journal: SyncPolicy = "always"
    max_memory_size: int = 128 * MiB
    expire_to_queue: str | None = None
    max_open_reads: int = 1
    fanout_only: bool = False
    max_queue_age: float | None = None
