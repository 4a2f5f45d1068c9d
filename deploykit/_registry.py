"""What the block and network registries share: the paper fields of a spec, name lookup and building an entry.

Pure Python at import, so listing never imports torch.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")

VARIANTS = ("reference", "safe")


@dataclass(frozen=True)
class PaperSpec:
    """A registry entry's paper and where its code lives.

    Attributes:
        name: registry name.
        title: what the paper calls it.
        paper: authors, title, venue.
        arxiv: link to the paper.
        official_repo: the authors' repository (or the port) whose checkpoint keys the reference reproduces.
        module: the deploykit module that defines it.
    """

    name: str
    title: str
    paper: str
    arxiv: str
    official_repo: str
    module: str

    def summary(self) -> dict[str, Any]:
        return {"name": self.name, "title": self.title, "paper": self.paper, "arxiv": self.arxiv,
                "official_repo": self.official_repo}


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


def build(spec: PaperSpec, kind: str, variant: str, attribute: Callable[[str], str], defaults: Mapping[str, Any],
          overrides: Mapping[str, Any], /, *, what: str = "arguments", errors: tuple[type[Exception], ...] = (TypeError,),
          hint: str | None = None, **fixed: Any):
    """Call `spec.module`'s `attribute(variant)` with the defaults updated by `overrides` (and `fixed`, keywords
    every call gets, such as a network builder's `variant`).

    A bad variant, or arguments the callable rejects with one of `errors`, raise UserInputError naming the
    entry and the arguments.
    """
    import importlib

    from deploykit.errors import UserInputError, unknown_name_error

    if variant not in VARIANTS:
        raise unknown_name_error("variant", variant, VARIANTS)
    target = getattr(importlib.import_module(spec.module), attribute(variant))
    try:
        return target(**fixed, **{**defaults, **overrides})
    except errors as exc:
        raise UserInputError(f"{kind} '{spec.name}': bad {what} {dict(overrides)}: {exc}", hint=hint) from exc
