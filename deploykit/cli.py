"""The `deploykit` command line. Subcommands live in deploykit.commands and are imported only when run,
so `deploykit --help` and `deploykit list` never import torch."""

from __future__ import annotations

import importlib
import importlib.util
import re
import sys

import click

from deploykit import __version__
from deploykit.commands import echo_json, failure_json, json_printed, reset_json
from deploykit.errors import EXIT_INTERRUPTED, EXIT_USAGE, DeployKitError

INTERRUPTED = "interrupted; nothing half-written was kept"

# name -> (module, attribute, one-line help shown by --help without importing the module)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "list": ("deploykit.commands.list_blocks", "list_blocks", "List the blocks (and networks) with their papers and defaults."),
    "export": ("deploykit.commands.export", "export", "Export a block or network to ONNX, simplify, and verify against PyTorch."),
    "validate": ("deploykit.commands.validate", "validate", "Check an ONNX model and compare its outputs with PyTorch."),
    "build": ("deploykit.commands.build", "build", "Build a TensorRT engine from an ONNX model (needs TensorRT and a GPU)."),
    "bench": ("deploykit.commands.bench", "bench", "Benchmark a block, network or ONNX model across backends."),
    "serve": ("deploykit.commands.serve", "serve", "Serve a model repository over the KServe v2 protocol."),
    "tune": ("deploykit.commands.tune", "tune", "Pick the fastest verified CPU engine and precision and install it."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx):
        return [name for name in COMMANDS if _available(name)]

    def get_command(self, ctx, name):
        if name not in COMMANDS or not _available(name):
            return None
        module, attr, _ = COMMANDS[name]
        return getattr(importlib.import_module(module), attr)

    def format_commands(self, ctx, formatter):
        rows = [(name, COMMANDS[name][2]) for name in self.list_commands(ctx)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def resolve_command(self, ctx, args):
        name = args[0] if args else ""
        if name and not name.startswith("-") and self.get_command(ctx, name) is None:
            from deploykit.errors import unknown_name_error

            raise click.UsageError(unknown_name_error("command", name, self.list_commands(ctx)).message, ctx)
        return super().resolve_command(ctx, args)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            # Carried past click's main, which would print a blank line first and turn it into Abort.
            raise _Interrupted() from None


class _Interrupted(Exception):
    """Ctrl-C while a command ran."""


def _available(name: str) -> bool:
    module = COMMANDS[name][0]
    return importlib.util.find_spec(module) is not None


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="deploykit")
def cli():
    """deploykit: attention blocks from PyTorch to ONNX Runtime, TensorRT and a served container,
    with PyTorch parity proven at every step.

    Exit codes: 0 pass, 1 a check failed, 2 unusable input or usage, 3 missing dependency or hardware,
    130 interrupted.
    """


def main(argv: list[str] | None = None) -> None:
    """The console script. Every failure is one line on stderr, `error: <what failed> (<what to do>)`, and
    the documented exit code; with --json, stdout still gets exactly one JSON object."""
    args = list(sys.argv[1:] if argv is None else argv)
    command, as_json = _command_and_json(args)
    reset_json()
    try:
        rv = cli.main(args=args, prog_name="deploykit", standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as exc:  # `deploykit` alone: the help, as click shows it
        exc.show()
        sys.exit(exc.exit_code)
    except click.UsageError as exc:
        _fail(f"{_tidy(exc.format_message())} (see {_command_path(exc, command)} --help)", EXIT_USAGE, command,
              as_json)
    except click.ClickException as exc:
        _fail(_tidy(exc.format_message()), exc.exit_code, command, as_json)
    except DeployKitError as exc:
        _fail(_one_line(exc.one_line()), exc.exit_code, command, as_json)
    except (_Interrupted, KeyboardInterrupt, click.exceptions.Abort):
        if sys.stderr.isatty():  # end the terminal's ^C echo; our own output stays one line
            click.echo(err=True)
        _fail(INTERRUPTED, EXIT_INTERRUPTED, command, as_json)
    sys.exit(rv if isinstance(rv, int) else 0)


def _fail(line: str, code: int, command: str | None, as_json: bool) -> None:
    if as_json and not json_printed():
        echo_json(failure_json(command, line))
    click.echo(f"error: {line}", err=True)
    sys.exit(code)


def _command_and_json(args: list[str]) -> tuple[str | None, bool]:
    """The subcommand's name (the first word: deploykit's own options take no value) and whether --json was
    passed, read from the arguments themselves so that usage errors, raised before click has parsed
    them, are answered in JSON too."""
    if "--" in args:
        args = args[: args.index("--")]
    command = next((a for a in args if not a.startswith("-")), None)
    return command, "--json" in args


def _command_path(exc: click.UsageError, command: str | None) -> str:
    if exc.ctx is not None:
        return exc.ctx.command_path
    return f"deploykit {command}" if command in COMMANDS else "deploykit"


def _one_line(text: str) -> str:
    return " ".join(part.strip() for part in text.splitlines() if part.strip())


def _tidy(message: str) -> str:
    """Click's messages in the house style: one line, lower case, no closing full stop, and no aside in
    parentheses right before our (hint): "Got unexpected extra argument (x)" -> "got unexpected extra
    argument: x"."""
    text = _one_line(message)
    text = re.sub(r"\.\s+Did you mean", "; did you mean", text).rstrip(".").rstrip()
    aside = re.search(r"\s*\(([^()]*)\)$", text)
    if aside:
        text = f"{text[: aside.start()]}: {aside.group(1)}"
    if text[:1].isupper() and text[1:2].islower():
        text = text[0].lower() + text[1:]
    return text


if __name__ == "__main__":  # pragma: no cover
    main()
