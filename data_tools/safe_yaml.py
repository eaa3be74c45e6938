"""YAML for the user's small files (YOLO ``data.yaml``, planograms): safe tags only, and no aliases.

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
