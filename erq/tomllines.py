"""Where each key of a TOML document is: its line, for error messages."""

from __future__ import annotations

import json
import re
import tomllib
from bisect import bisect_left

#: A key's path from the top of the document: ``("queues", "orders",
#: "max_items")``.
KeyPath = tuple[str, ...]

#: A key TOML lets stand unquoted.
BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def dotted(path: KeyPath) -> str:
    """A key path as TOML writes it: ``queues."orders+audit".max_items``."""
    return ".".join(
        part if BARE_KEY.fullmatch(part) else json.dumps(part) for part in path
    )


def key_lines(text: str) -> dict[KeyPath, int]:
    """The line of each key in a TOML document that tomllib has accepted.

    tomllib keeps no positions, so this walks the text once more, knowing
    just enough TOML to tell keys from strings, comments and values. A table
    or key first implied by a longer dotted key or header gets that line
    unless the text spells it out itself. Should anything surprise it, what
    it found so far is returned: an error message without a line is better
    than none.
    """
    scanner = _KeyScanner(text)
    try:
        scanner.document()
    except Exception:
        pass
    return scanner.lines


class _KeyScanner:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.newlines = [found.start() for found in re.finditer("\n", text)]
        self.lines: dict[KeyPath, int] = {}
        self.spelled: set[KeyPath] = set()

    def line(self) -> int:
        return bisect_left(self.newlines, self.pos) + 1

    def record(self, path: KeyPath, line: int) -> None:
        for end in range(1, len(path)):
            self.lines.setdefault(path[:end], line)
        if path not in self.spelled:
            self.spelled.add(path)
            self.lines[path] = line

    def skip(self, newlines: bool) -> None:
        """Past blanks and comments, and past line ends if ``newlines``."""
        text = self.text
        while self.pos < len(text):
            char = text[self.pos]
            if char in " \t" or (newlines and char in "\r\n"):
                self.pos += 1
            elif char == "#":
                end = text.find("\n", self.pos)
                self.pos = len(text) if end < 0 else end
            else:
                return

    def document(self) -> None:
        text = self.text
        table: KeyPath = ()
        while True:
            self.skip(newlines=True)
            if self.pos >= len(text):
                return
            line = self.line()
            if text[self.pos] == "[":
                brackets = 2 if text.startswith("[[", self.pos) else 1
                self.pos += brackets
                table = self.key()
                self.skip(newlines=False)
                self.expect("]" * brackets)
                self.record(table, line)
            else:
                self.key_value(table, line)

    def key_value(self, table: KeyPath, line: int) -> None:
        path = table + self.key()
        self.record(path, line)
        self.skip(newlines=False)
        self.expect("=")
        self.skip(newlines=False)
        self.value(path)

    def expect(self, token: str) -> None:
        if not self.text.startswith(token, self.pos):
            raise ValueError(f"expected {token!r} at {self.pos}")
        self.pos += len(token)

    def key(self) -> KeyPath:
        text = self.text
        parts: list[str] = []
        while True:
            self.skip(newlines=False)
            if text[self.pos] in "\"'":
                start = self.pos
                self.string()
                # Let tomllib undo the quoting and escapes.
                parts.append(tomllib.loads("k = " + text[start : self.pos])["k"])
            else:
                found = BARE_KEY.match(text, self.pos)
                if found is None:
                    raise ValueError(f"expected a key at {self.pos}")
                parts.append(found.group())
                self.pos = found.end()
            self.skip(newlines=False)
            if not text.startswith(".", self.pos):
                return tuple(parts)
            self.pos += 1

    def string(self) -> None:
        text = self.text
        quote = text[self.pos]
        escapes = quote == '"'
        if text.startswith(quote * 3, self.pos):
            pos = self.pos + 3
            while pos < len(text):
                if escapes and text[pos] == "\\":
                    pos += 2
                elif text.startswith(quote * 3, pos):
                    # Up to two quotes may end the content just before the
                    # closing three.
                    run = 3
                    while run < 5 and text.startswith(quote, pos + run):
                        run += 1
                    self.pos = pos + run
                    return
                else:
                    pos += 1
            raise ValueError("unterminated string")
        pos = self.pos + 1
        while text[pos] != quote:
            # Past the end of the text: IndexError, and the scan ends.
            pos += 2 if escapes and text[pos] == "\\" else 1
        self.pos = pos + 1

    def value(self, path: KeyPath) -> None:
        text = self.text
        char = text[self.pos]
        if char in "\"'":
            self.string()
        elif char in "{[":
            closing = "}" if char == "{" else "]"
            self.pos += 1
            while True:
                self.skip(newlines=True)
                if text[self.pos] == closing:
                    self.pos += 1
                    return
                if text[self.pos] == ",":
                    self.pos += 1
                elif char == "{":
                    self.key_value(path, self.line())
                else:
                    self.value(path)
        else:
            found = _SCALAR.match(text, self.pos)
            if found is None:
                raise ValueError(f"expected a value at {self.pos}")
            self.pos = found.end()


# A number, boolean or date: up to a separator (dates may hold a space).
_SCALAR = re.compile(r"[^,\]}#\r\n]+")
