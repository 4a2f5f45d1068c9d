"""Running the user's code: import `PKG.MOD:CALLABLE` or `path/file.py:CALLABLE`, call it, report failures.

A failure in the user's code is their input being unusable: one `error:` line and exit 2. Their traceback is
printed only with `--debug` or DEPLOYKIT_DEBUG=1, never by default.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import traceback
from pathlib import Path

from deploykit.errors import UserInputError

DEBUG_ENV = "DEPLOYKIT_DEBUG"
DEBUG_HINT = "run with --debug (or DEPLOYKIT_DEBUG=1) for the traceback"


def debug_enabled() -> bool:
    return os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")


def user_failure(what: str, exc: BaseException, hint: str | None = None) -> UserInputError:
    """The UserInputError for an exception raised by the user's code; prints its traceback in debug mode."""
    if debug_enabled():
        traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
    first = str(exc).splitlines()[0][:300] if str(exc) else ""
    return UserInputError(f"{what} raised {type(exc).__name__}{': ' + first if first else ''}",
                          hint=hint or f"fix the model code; {DEBUG_HINT}")


def split_spec(spec: str) -> tuple[str, str]:
    target, sep, name = spec.rpartition(":")
    if not sep or not target or not name.isidentifier():
        raise UserInputError(f"--module {spec!r} is not PKG.MOD:CALLABLE or path/to/file.py:CALLABLE",
                             hint="e.g. --module examples/tiny_detector.py:TinyDetector")
    return target, name


def load_callable(spec: str):
    """The class or factory that `spec` names (importing its module runs the user's code)."""
    if spec.startswith("<live>"):
        raise UserInputError(f"'{spec.removeprefix('<live>')}' was exported from a live module in Python: its "
                             "reference cannot be rebuilt from the sidecar",
                             hint="give validate --config FILE whose source names module, args and weights")
    target, name = split_spec(spec)
    if target.endswith(".py"):
        path = Path(target).resolve()
        if not path.is_file():
            raise UserInputError(f"model file '{target}' does not exist", hint="pass an existing .py file")
        module_name = f"deploykit_user_{path.stem}_{abs(hash(str(path))) % 10**8}"
        folder = str(path.parent)
        sys.path.insert(0, folder)   # the file's own sibling imports
        try:
            spec_obj = importlib.util.spec_from_file_location(module_name, path)
            module = importlib.util.module_from_spec(spec_obj)
            sys.modules[module_name] = module
            spec_obj.loader.exec_module(module)
        except Exception as exc:  # noqa: BLE001 - anything the user's module raises on import
            sys.modules.pop(module_name, None)
            raise user_failure(f"importing '{target}'", exc) from None
        finally:
            if folder in sys.path:
                sys.path.remove(folder)
    else:
        if os.getcwd() not in sys.path and "" not in sys.path:
            sys.path.insert(0, os.getcwd())   # like `python -m`: packages in the working directory import
        try:
            module = importlib.import_module(target)
        except ModuleNotFoundError as exc:
            if exc.name and target.startswith(exc.name):
                raise UserInputError(f"module '{target}' cannot be imported: no module named '{exc.name}'",
                                     hint="install the package, run from its directory, or pass path/to/file.py:CALLABLE") from None
            raise user_failure(f"importing '{target}'", exc) from None
        except Exception as exc:  # noqa: BLE001
            raise user_failure(f"importing '{target}'", exc) from None
    if not hasattr(module, name):
        public = sorted(n for n in vars(module) if not n.startswith("_") and callable(getattr(module, n)))
        raise UserInputError(f"'{target}' has no callable '{name}'",
                             hint=f"callables there: {', '.join(public[:12]) or 'none'}")
    fn = getattr(module, name)
    if not callable(fn):
        raise UserInputError(f"'{target}:{name}' is a {type(fn).__name__}, not a class or factory",
                             hint="name a torch.nn.Module class or a function returning one")
    return fn


def construct(spec: str, args: dict):
    """Call the class or factory with `args`; it must return a torch.nn.Module."""
    import torch

    fn = load_callable(spec)
    try:
        model = fn(**args)
    except TypeError as exc:
        raise user_failure(f"'{spec}' called with arguments {args}", exc,
                           hint=f"check --args against its signature; {DEBUG_HINT}") from None
    except Exception as exc:  # noqa: BLE001
        raise user_failure(f"constructing '{spec}'", exc) from None
    if not isinstance(model, torch.nn.Module):
        raise UserInputError(f"'{spec}' returned a {type(model).__name__}, not a torch.nn.Module",
                             hint="name a torch.nn.Module class or a factory that returns one")
    return model
