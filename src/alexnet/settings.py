"""What every settings dataclass of the package can do, written once: a checked copy with some
fields changed, a plain dict for JSON, and back from such a dict, with one clear line for a
field this version does not know.

    @dataclass(frozen=True)
    class Recipe(Settings):
        what = "recipe field"
        epochs: int = 90
        def checks(self): return [(self.epochs >= 1, f"--epochs must be at least 1; got {self.epochs}")]

``ModelConfig``, ``PreprocessConfig``, ``Recipe`` and ``Runtime`` are such dataclasses; a run's
``TrainConfig`` is made of them (``alexnet.train.config``).
"""

from __future__ import annotations

import dataclasses
from typing import Dict, Iterable, List, Mapping, Tuple, TypeVar

from .errors import ConfigError

S = TypeVar("S", bound="Settings")


def _plain(value):
    return [_plain(v) for v in value] if isinstance(value, (tuple, list)) else value


class Settings:
    """A mixin for frozen dataclasses of settings. ``what`` names one field in messages."""

    what = "setting"

    def __post_init__(self):
        for ok, message in self.checks():
            if not ok:
                raise ConfigError(message)

    def checks(self) -> List[Tuple[bool, str]]:
        """(ok, the one line that says what is wrong) for each rule the values must keep."""
        return []

    @classmethod
    def names(cls) -> Tuple[str, ...]:
        """The fields, in declaration order."""
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def reject_unknown(cls, keys: Iterable[str], where: str = "") -> None:
        unknown = sorted(set(keys) - set(cls.names()))
        if unknown:
            raise ConfigError(f"{where}unknown {cls.what} {unknown[0]!r}; the {cls.what}s are "
                              f"{', '.join(cls.names())}")

    def replace(self: S, **changes) -> S:
        """A copy with ``changes`` to its fields, checked; an unknown name is one line naming it."""
        self.reject_unknown(changes)
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> Dict[str, object]:
        """The fields as JSON writes and reads them (tuples as lists), so a dict read back from a
        file compares equal to the one it was written from."""
        return {name: _plain(getattr(self, name)) for name in self.names()}

    @classmethod
    def from_dict(cls, data: Mapping, where: str = "") -> "Settings":
        """What ``as_dict`` wrote; a key this version does not know is one line naming it and
        ``where`` it was found (a checkpoint, a run's config.json)."""
        cls.reject_unknown(data, f"{where}: " if where else "")
        return cls(**data)
