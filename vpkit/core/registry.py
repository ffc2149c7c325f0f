"""Name -> spec tables. The host owns them; plugins fill them through a `register` callback."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, TypeVar

from vpkit.core.errors import VpkitError, did_you_mean

S = TypeVar("S")


class Registry(Generic[S]):
    """A table of specs keyed by name. Duplicate names are errors; unknown names get a did-you-mean."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._specs: dict[str, S] = {}

    def register(self, spec: S) -> None:
        name = spec.name  # type: ignore[attr-defined]
        if name in self._specs:
            owner = getattr(self._specs[name], "plugin", "?")
            raise VpkitError(f"{self.kind} '{name}' is registered twice (first by plugin '{owner}').")
        self._specs[name] = spec

    def get(self, name: str) -> S:
        try:
            return self._specs[name]
        except KeyError:
            known = ", ".join(sorted(self._specs)) or "none"
            raise VpkitError(
                f"Unknown {self.kind} '{name}'.{did_you_mean(name, self._specs)} Known: {known}."
            ) from None

    def __contains__(self, name: object) -> bool:
        return name in self._specs

    def __iter__(self) -> Iterator[S]:
        return iter(self._specs[n] for n in sorted(self._specs))

    def __len__(self) -> int:
        return len(self._specs)

    def names(self) -> list[str]:
        return sorted(self._specs)
