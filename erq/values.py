"""Setting values: the checks that turn what a TOML file or the command line
gives into what the settings hold.

Each check takes a value as tomllib gives it (or as ``parse_option`` makes
it from command-line text) and returns it as the settings hold it, or raises
`ValueError` saying what was expected, in words fit for an error message
that also names the file, line and key.  What each kind of value may be (a
size, a duration, a sync policy, a port...) is described for users in
`erq.config`.  ``SERVER_KEYS`` and ``QUEUE_KEYS`` name the check of every
key of ``[server]`` and of a queue's table: a key not in them is unknown.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable
from datetime import date, time
from decimal import Decimal
from typing import Any, Literal, TypeGuard

from erq.names import valid_queue_name
from erq.status import ServerStatus

#: ``"always"``, ``"never"``, or the seconds between fsyncs.
SyncPolicy = Literal["always", "never"] | float

_SIZE_UNITS = {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40}
_AMBIGUOUS_UNITS = {"KB": "KiB", "MB": "MiB", "GB": "GiB", "TB": "TiB"}
_DURATION_UNITS = {
    "ms": Decimal("0.001"),
    "s": Decimal(1),
    "m": Decimal(60),
    "h": Decimal(3600),
    "d": Decimal(86400),
}
_AMOUNT = re.compile(r"([+-]?[0-9]+(?:\.[0-9]+)?) ?([A-Za-z]+)")
_MAX_SHOWN = 60


def show(value: object) -> str:
    """A value as the TOML file spells it, on one line."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        shown = json.dumps(value)
        return shown if len(shown) <= _MAX_SHOWN else shown[: _MAX_SHOWN - 4] + '..."'
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, date | time):
        return value.isoformat()
    return repr(value)


def _is_integer(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _count(value: object, minimum: int, unlimited: bool = False) -> int:
    words = "a non-negative integer" if minimum == 0 else "a positive integer"
    if _is_integer(value):
        if value >= minimum:
            return value
        raise ValueError(f"expected {words}, got {value}")
    also = ' or "unlimited"' if unlimited else ""
    raise ValueError(f"expected {words}{also}, got {show(value)}")


def positive_count(value: object) -> int:
    return _count(value, 1)


def _size(value: object, minimum: int = 0, unlimited: bool = False) -> int:
    if _is_integer(value):
        amount = value
    elif isinstance(value, str) and (found := _AMOUNT.fullmatch(value)):
        number, unit = found.groups()
        if unit in _AMBIGUOUS_UNITS:
            raise ValueError(
                f"ambiguous unit {unit} in {show(value)}: write"
                f' "{number}{_AMBIGUOUS_UNITS[unit]}" for {_AMBIGUOUS_UNITS[unit]}'
                " (powers of 1024) or the number of bytes"
            )
        if unit not in _SIZE_UNITS:
            raise ValueError(
                f"unknown size unit {unit} in {show(value)}"
                " (units: B, KiB, MiB, GiB, TiB)"
            )
        exact = Decimal(number) * _SIZE_UNITS[unit]
        if exact != exact.to_integral_value():
            raise ValueError(f"{show(value)} is not a whole number of bytes")
        amount = int(exact)
    else:
        also = ' or "unlimited"' if unlimited else ""
        raise ValueError(
            "expected a size: an integer of bytes or a string such as"
            f' "64KiB" or "128MiB"{also}, got {show(value)}'
        )
    if amount < minimum:
        words = "a non-negative" if minimum == 0 else "a positive"
        raise ValueError(f"expected {words} size, got {show(value)}")
    return amount


def parse_size(value: int | str) -> int:
    """Bytes from an integer or a string with a binary unit (``"64KiB"``);
    `ValueError` for anything else."""
    return _size(value)


def _size_limit(value: object) -> int | None:
    return None if value == "unlimited" else _size(value, unlimited=True)


def _positive_size(value: object) -> int:
    return _size(value, minimum=1)


def _duration(value: object, none: bool = False) -> float:
    also = ' or "none"' if none else ""
    expected = (
        "expected a duration with a unit (ms, s, m, h, d) such as"
        f' "30s"{also}, got {show(value)}'
    )
    if _is_integer(value):
        raise ValueError(f'{expected} (write "{value}s" for seconds)')
    if not isinstance(value, str):
        raise ValueError(expected)
    found = _AMOUNT.fullmatch(value)
    if found is None:
        raise ValueError(expected)
    number, unit = found.groups()
    if unit not in _DURATION_UNITS:
        raise ValueError(
            f"unknown duration unit {unit} in {show(value)} (units: ms, s, m, h, d)"
        )
    seconds = float(Decimal(number) * _DURATION_UNITS[unit])
    if not 0 < seconds < math.inf:
        raise ValueError(f"expected a positive duration, got {show(value)}")
    return seconds


def parse_duration(value: str) -> float:
    """Seconds from a string with a unit (``"250ms"``, ``"30s"``, ``"5m"``,
    ``"1h"``, ``"7d"``); `ValueError` for anything else."""
    return _duration(value)


def _duration_or_none(value: object) -> float | None:
    return None if value == "none" else _duration(value, none=True)


def parse_sync_journal(value: str) -> SyncPolicy:
    """``"always"``, ``"never"``, or seconds from a duration (``"50ms"``);
    `ValueError` for anything else."""
    if value == "always":
        return "always"
    if value == "never":
        return "never"
    if isinstance(value, str) and _AMOUNT.fullmatch(value):
        return _duration(value)
    raise ValueError(
        f'expected "always", "never" or a duration such as "50ms", got {show(value)}'
    )


def positive_seconds(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        pass
    elif 0 < value < math.inf:
        return float(value)
    raise ValueError(f"expected a positive number of seconds, got {show(value)}")


def _boolean(value: object) -> bool:
    if isinstance(value, bool):
        return value
    raise ValueError(f"expected true or false, got {show(value)}")


def _allow_shutdown(value: object) -> bool | Literal["any"]:
    if isinstance(value, bool):
        return value
    if value == "any":
        return "any"
    raise ValueError(f'expected true, false or "any", got {show(value)}')


def parse_status(value: object) -> ServerStatus:
    """A server status (``status`` in ``[server]``, ``--status``, the status
    file), in any case."""
    if isinstance(value, ServerStatus):
        return value
    if isinstance(value, str):
        try:
            return ServerStatus(value.lower())
        except ValueError:
            pass
    raise ValueError(f'expected "up", "readonly" or "quiescent", got {show(value)}')


def _queue_name_or_none(value: object) -> str | None:
    if value == "":
        return None
    if isinstance(value, str) and valid_queue_name(value):
        return value
    raise ValueError(
        "expected a queue name (1 to 250 printable ASCII characters, no space"
        f" or '/', not starting with '.') or \"\" for none, got {show(value)}"
    )


def _port(value: object) -> str:
    if _is_integer(value):
        value = str(value)
    if not isinstance(value, str):
        raise ValueError(
            "expected a port number or an endpoint description such as"
            f' "tcp:22122:interface=0.0.0.0", got {show(value)}'
        )
    if value.isdigit() and value.isascii():
        if int(value) > 65535:
            raise ValueError(f"expected a port number up to 65535, got {value}")
        return value
    if ":" not in value or value != value.strip():
        raise ValueError(
            "expected a port number or an endpoint description such as"
            f' "tcp:22122:interface=0.0.0.0", got {show(value)}'
        )
    return value


def _admin_port(value: object) -> str | None:
    if value == "":
        return None
    return _port(value)


def _data_dir(value: object) -> str:
    if isinstance(value, str) and value and "\0" not in value:
        return value
    raise ValueError(f"expected a directory path, got {show(value)}")


def _auth_file(value: object) -> str | None:
    if value == "":
        return None
    if isinstance(value, str) and "\0" not in value:
        # Read again at each reload: the same file, wherever the server's
        # working directory is by then.
        return os.path.abspath(value)
    raise ValueError(f'expected a file path or "" for none, got {show(value)}')


SERVER_KEYS: dict[str, Callable[[Any], object]] = {
    "port": _port,
    "data_dir": _data_dir,
    "max_connections": lambda value: (
        None if value == "unlimited" else _count(value, 1, unlimited=True)
    ),
    "expiry_sweep": _duration,
    "allow_shutdown": _allow_shutdown,
    "max_item_cap": _positive_size,
    "auth_file": _auth_file,
    "status": parse_status,
    "admin_port": _admin_port,
    "admin_auth": _boolean,
    "max_memory_size": _size_limit,
}

QUEUE_KEYS: dict[str, Callable[[Any], object]] = {
    "max_items": lambda value: (
        None if value == "unlimited" else _count(value, 0, unlimited=True)
    ),
    "max_size": _size_limit,
    "max_item_size": _size_limit,
    "max_age": _duration_or_none,
    "discard_old_when_full": _boolean,
    "journal": _boolean,
    "sync_journal": parse_sync_journal,
    "max_memory_size": _size,
    "expire_to_queue": _queue_name_or_none,
    "max_open_reads": positive_count,
    "open_timeout": _duration_or_none,
    "fanout_only": _boolean,
    "max_queue_age": _duration_or_none,
}

_INTEGER = re.compile(r"[+-]?[0-9]+")
#: Settings that are text even when they look like a number.
_TEXT_KEYS = {"data_dir", "expire_to_queue", "auth_file", "status"}


def parse_option(key: str, text: str) -> Any:
    """The value of the setting ``key`` (``"max_memory_size"``) given on the
    command line as ``text``, checked exactly as the configuration file
    checks it: ``"1048576"`` is the integer a TOML file would hold, anything
    else its string (``"128MiB"``, ``"unlimited"``, ``"50ms"``).  Returns
    the value as the settings hold it; `ValueError` says what was expected.
    """
    # ``max_memory_size`` on the command line is the queues' default.
    check = QUEUE_KEYS.get(key) or SERVER_KEYS[key]
    value: int | str = text
    if key not in _TEXT_KEYS and _INTEGER.fullmatch(text):
        value = int(text)
    return check(value)
