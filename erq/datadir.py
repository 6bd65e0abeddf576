"""The data directory: one server at a time in it, and private to its user.

A server holds an exclusive ``flock`` on ``<data_dir>/.lock`` from before it
replays the first journal until its last batch is written and its files are
closed, so two servers never replay, cut and append to the same journals.
The lock belongs to the open file, not to the process: two services in one
process exclude each other too, and the kernel lets go when the process
ends, however it ends, so a crash leaves no stale lock behind.  The file is
never removed (removing a lock file lets two holders lock two different
files); it holds the pid of the server that took it last, for the message
that names the holder.  ``erq-journal`` takes the same lock shared: readers
go together, but never while a server runs, and no server starts while one
reads.

What erq creates in the data directory is for the server's user alone:
directories ``0700``, files ``0600`` (less what the umask takes away).
Whatever exists already keeps its mode: an operator who made the data
directory readable by a backup group meant it.
"""

from __future__ import annotations

import fcntl
import os

from erq.config import ConfigError

#: The lock file's name in the data directory.  It starts with a dot, which
#: no queue directory's name does (`erq.journal.names.queue_dir_name`), so
#: every queue name, ``lock`` included, keeps its own directory.
LOCK_FILE = ".lock"

#: Modes of the directories and files erq creates.
DIR_MODE = 0o700
FILE_MODE = 0o600


class DataDirectoryInUse(ConfigError):
    """Another erq process holds the data directory.

    A ``ConfigError``, because the cure is another ``data_dir`` or stopping
    the other server; ``str()`` is one line naming the directory and the
    holder."""

    def __init__(self, path: str, holder: str) -> None:
        # Absolute: a relative one says nothing to a server elsewhere.
        path = os.path.abspath(path)
        super().__init__(f"in use by {holder}", source=f"data directory {path}")
        self.path = path
        self.holder = holder
        self.args = (f"data directory {path} is in use by {holder}",)


def make_private_dir(path: str) -> None:
    """Make ``path`` (``0700``) unless it exists; missing parents get the
    usual mode, since they are not erq's."""
    os.makedirs(path, DIR_MODE, exist_ok=True)


def private_opener(path: str, flags: int) -> int:
    """An ``opener`` for ``open()`` that creates the file ``0600``."""
    return os.open(path, flags, FILE_MODE)


class DataDirLock:
    """A held lock on a data directory; ``release`` lets go of it."""

    def __init__(self, path: str, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            # Closing the only descriptor of the open file unlocks it.
            os.close(fd)


def _lock_path(data_dir: str) -> str:
    return os.path.join(data_dir, LOCK_FILE)


def _holder(fd: int) -> str:
    """Who holds the lock that ``fd`` could not take exclusively."""
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        pass
    else:
        # Only readers hold it.
        return "another erq process (erq-journal)"
    try:
        pid = int(os.pread(fd, 32, 0).decode("ascii").strip())
    except (OSError, ValueError):
        return "another erq process"
    return f"another erq process (pid {pid})"


def lock_data_dir(data_dir: str) -> DataDirLock:
    """Take ``data_dir`` for a server, making it (``0700``) if missing.

    Raises `DataDirectoryInUse`, having changed nothing, when another server
    or an ``erq-journal`` holds it; ``OSError`` when the lock file cannot be
    made."""
    make_private_dir(data_dir)
    fd = os.open(
        _lock_path(data_dir),
        os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW,
        FILE_MODE,
    )
    _lock(fd, fcntl.LOCK_EX, data_dir)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, b"%d\n" % os.getpid(), 0)
    except OSError:
        # The pid only makes a message better; the lock is what counts.
        pass
    return DataDirLock(data_dir, fd)


def lock_data_dir_shared(data_dir: str) -> DataDirLock | None:
    """Take ``data_dir`` for reading, alongside other readers.

    ``None`` when there is no lock file: no server has used the directory
    since servers lock it, and a reader does not write one.  Raises
    `DataDirectoryInUse` while a server holds it; ``OSError`` when the lock
    file cannot be opened."""
    try:
        fd = os.open(_lock_path(data_dir), os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    _lock(fd, fcntl.LOCK_SH, data_dir)
    return DataDirLock(data_dir, fd)


def _lock(fd: int, how: int, data_dir: str) -> None:
    """Lock the open lock file ``fd`` (``LOCK_EX`` or ``LOCK_SH``) without
    waiting; on failure close it, and say who holds the directory."""
    try:
        fcntl.flock(fd, how | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _holder(fd)
        os.close(fd)
        raise DataDirectoryInUse(data_dir, holder) from None
    except BaseException:
        os.close(fd)
        raise
