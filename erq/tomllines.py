"""Where each key of a TOML document is: its line, for error messages.

tomllib, which reads the configuration, keeps no positions, so a second
parse with tree-sitter's TOML grammar finds them: only for a document
tomllib has already accepted, and only when there is an error to place.
The grammar gives each table header and each ``key = value`` pair with
its line; this module turns their keys into paths like the ones tomllib's
nested dicts give (``("queues", "orders+audit", "max_items")``).
"""

from __future__ import annotations

import json
import re
import tomllib

import tree_sitter_toml
from tree_sitter import Language, Node, Parser

#: A key's path from the top of the document: ``("queues", "orders",
#: "max_items")``.
KeyPath = tuple[str, ...]

#: A key TOML lets stand unquoted.
BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")

_TOML = Language(tree_sitter_toml.language())


def dotted(path: KeyPath) -> str:
    """A key path as TOML writes it: ``queues."orders+audit".max_items``."""
    return ".".join(
        part if BARE_KEY.fullmatch(part) else json.dumps(part) for part in path
    )


def key_lines(text: str) -> dict[KeyPath, int]:
    """The line of each key in a TOML document that tomllib has accepted.

    A table or key first implied by a longer dotted key or header gets that
    line unless the text spells it out itself.  What the grammar cannot make
    out is left without a line, and should anything surprise this walk, what
    it found so far is returned: an error message without a line is better
    than none.
    """
    lines = _Lines()
    tree = Parser(_TOML).parse(text.encode("utf-8", "surrogatepass"))
    try:
        lines.document(tree.root_node)
    except Exception:
        pass
    return lines.lines


class _Lines:
    """The lines found so far, and which paths the text spells out."""

    def __init__(self) -> None:
        self.lines: dict[KeyPath, int] = {}
        self.spelled: set[KeyPath] = set()

    def document(self, root: Node) -> None:
        for node in root.named_children:
            if node.type in ("table", "table_array_element"):
                key = _key_node(node)
                if key is None:
                    continue
                table = _path(key)
                self.record(table, node.start_point.row + 1)
                for pair in node.named_children:
                    if pair.type == "pair":
                        self.pair(table, pair)
            elif node.type == "pair":
                self.pair((), node)

    def record(self, path: KeyPath, line: int) -> None:
        for end in range(1, len(path)):
            self.lines.setdefault(path[:end], line)
        if path not in self.spelled:
            self.spelled.add(path)
            self.lines[path] = line

    def pair(self, table: KeyPath, pair: Node) -> None:
        key = _key_node(pair)
        if key is None:
            return
        path = table + _path(key)
        self.record(path, pair.start_point.row + 1)
        self.value(path, pair.named_children[-1])

    def value(self, path: KeyPath, value: Node) -> None:
        if value.type == "inline_table":
            for pair in value.named_children:
                if pair.type == "pair":
                    self.pair(path, pair)
        elif value.type == "array":
            for element in value.named_children:
                self.value(path, element)


def _key_node(node: Node) -> Node | None:
    for child in node.named_children:
        if child.type in ("bare_key", "quoted_key", "dotted_key"):
            return child
    return None


def _path(key: Node) -> KeyPath:
    if key.type == "dotted_key":
        return tuple(part for child in key.named_children for part in _path(child))
    text = (key.text or b"").decode("utf-8")
    if key.type == "quoted_key":
        # Let tomllib undo the quoting and escapes.
        return (tomllib.loads("k = " + text)["k"],)
    return (text,)
