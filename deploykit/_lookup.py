"""Name lookup shared by the spec registries (blocks, networks); pure Python, so listing never imports torch."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

T = TypeVar("T")


def lookup(registry: Mapping[str, T], kind: str, name: str) -> T:
    """`registry[name]`; an unknown name raises UserInputError with the valid names and a close match.

    Args:
        registry: spec objects by name, in the order the error lists them.
        kind: what a name denotes ("block", "network"), as the error message words it.
        name: the name asked for.
    """
    try:
        return registry[name]
    except KeyError:
        from deploykit.errors import unknown_name_error

        raise unknown_name_error(kind, name, list(registry)) from None
