"""Class ids → the names answers show, from a label map (parsed by ``odapi.labels``), with a fallback name."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from odapi.labels import LabelMapError, parse_label_map, read_label_map
from proxy.errors import ConfigError, InvalidParameter
from proxy.params import show

_FALLBACK = re.compile(r"^class (\d{1,9})$")


def fallback_name(class_id: int) -> str:
    """The name answered for a class id the label map lacks (documented in the README)."""
    return f"Class {class_id}"


@dataclass(frozen=True)
class LabelMap:
    """Class id → display name, as the seed showed it (``display_name``, else ``name``, title-cased)."""

    names: Mapping[int, str]
    _ids: Mapping[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_ids", {name.lower(): class_id for class_id, name in self.names.items()})

    @classmethod
    def from_text(cls, text: str, *, source: str) -> LabelMap:
        """Parse label-map text; ``ConfigError`` names the source and line of the first problem."""
        try:
            return cls(parse_label_map(text, source=source))
        except LabelMapError as exc:
            raise ConfigError(str(exc)) from None

    @classmethod
    def load(cls, path: Path) -> LabelMap:
        """Read and parse a label map file; ``ConfigError`` when it is missing or malformed."""
        try:
            return cls(read_label_map(path)[1])
        except LabelMapError as exc:
            raise ConfigError(str(exc)) from None

    def name(self, class_id: int) -> str:
        """The display name of ``class_id``, or the documented fallback when the map lacks it."""
        return self.names.get(class_id) or fallback_name(class_id)

    def ids_of(self, names: Iterable[str]) -> frozenset[int]:
        """The class ids for names as answers show them (any case), fallback names (``Class 17``) included.

        Raises ``InvalidParameter`` naming the first name that is neither.
        """
        ids = set()
        for name in names:
            key = name.strip().lower()
            class_id = self._ids.get(key)
            if class_id is None:
                fallback = _FALLBACK.match(key)
                if fallback is None:
                    raise InvalidParameter(
                        f"unknown class {show(name)}; the label map has {len(self.names)} classes "
                        "(names as answers show them, or 'Class N' for an id it lacks)"
                    )
                class_id = int(fallback.group(1))
            ids.add(class_id)
        return frozenset(ids)

    def __len__(self) -> int:
        return len(self.names)
