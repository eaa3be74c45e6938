"""YAML for the user's small files (YOLO ``data.yaml``, planograms): safe tags only, no aliases, and (for
planograms) the line of every key and item, so each problem names its line.

An alias (``*name``) repeats a node anchored earlier; nested ones grow a 1 KB file into billions of
nodes ("billion laughs"), and any message that formats the result never ends. None of the files we read
needs one, so :class:`NoAliasLoader` refuses the first alias it meets, before anything is built.
"""

from __future__ import annotations

from typing import Any

import yaml


class NoAliasLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that raises ``yaml.MarkedYAMLError`` (line of the alias) on any alias."""

    def compose_node(self, parent: Any, index: Any) -> Any:  # noqa: D102 (PyYAML's hook)
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                None, None, f"YAML aliases (*{event.anchor}) are not allowed in this file: write the value out",
                event.start_mark)
        return super().compose_node(parent, index)


def load_yaml(text: str) -> Any:
    """``yaml.safe_load(text)`` without aliases (see :class:`NoAliasLoader`)."""
    return yaml.load(text, Loader=NoAliasLoader)  # noqa: S506 (a SafeLoader subclass)


class LineDict(dict):
    """A mapping that knows its own ``line`` and each key's line (``key_lines``); 1-based, None when unknown."""

    line: int | None = None
    key_lines: dict


class LineList(list):
    """A sequence that knows its own ``line`` and each item's line (``item_lines``)."""

    line: int | None = None
    item_lines: list


class LineLoader(NoAliasLoader):
    """Safe loader (no aliases) whose mappings and sequences remember the line of every key and item."""


def _construct_map(loader: LineLoader, node: yaml.MappingNode) -> LineDict:
    loader.flatten_mapping(node)
    out = LineDict()
    out.line, out.key_lines = node.start_mark.line + 1, {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            duplicate = key in out
        except TypeError:
            raise yaml.constructor.ConstructorError(
                None, None, f"unusable mapping key {key!r}", key_node.start_mark
            ) from None
        if duplicate:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key '{key}'", key_node.start_mark)
        out[key] = loader.construct_object(value_node, deep=True)
        out.key_lines[key] = key_node.start_mark.line + 1
    return out


def _construct_seq(loader: LineLoader, node: yaml.SequenceNode) -> LineList:
    out = LineList(loader.construct_object(child, deep=True) for child in node.value)
    out.line, out.item_lines = node.start_mark.line + 1, [child.start_mark.line + 1 for child in node.value]
    return out


LineLoader.add_constructor("tag:yaml.org,2002:map", _construct_map)
LineLoader.add_constructor("tag:yaml.org,2002:seq", _construct_seq)


def with_unknown_lines(obj: Any) -> Any:
    """JSON data -> the same nested types as the YAML loader, with unknown lines."""
    if isinstance(obj, dict):
        out = LineDict((k, with_unknown_lines(v)) for k, v in obj.items())
        out.key_lines = {}
        return out
    if isinstance(obj, list):
        out = LineList(with_unknown_lines(v) for v in obj)
        out.item_lines = [None] * len(out)
        return out
    return obj
