"""The `deploykit` command line. Subcommands live in deploykit.commands and are imported only when run,
so `deploykit --help` and `deploykit list` never import torch."""

from __future__ import annotations

import importlib
import importlib.util
import sys

import click

from deploykit import __version__
from deploykit.errors import EXIT_INTERRUPTED, DeployKitError

# name -> (module, attribute, one-line help shown by --help without importing the module)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "list": ("deploykit.commands.list_blocks", "list_blocks", "List the blocks (and networks) with their papers and defaults."),
    "export": ("deploykit.commands.export", "export", "Export a block or network to ONNX, simplify, and verify against PyTorch."),
    "validate": ("deploykit.commands.validate", "validate", "Check an ONNX model and compare its outputs with PyTorch."),
    "build": ("deploykit.commands.build", "build", "Build a TensorRT engine from an ONNX model (needs TensorRT and a GPU)."),
    "bench": ("deploykit.commands.bench", "bench", "Benchmark a block, network or ONNX model across backends."),
    "serve": ("deploykit.commands.serve", "serve", "Serve a model repository over the KServe v2 protocol."),
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
    try:
        rv = cli.main(args=argv, prog_name="deploykit", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("error: interrupted; nothing half-written was kept", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except DeployKitError as exc:
        click.echo(f"error: {exc.one_line()}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("error: interrupted; nothing half-written was kept", err=True)
        sys.exit(EXIT_INTERRUPTED)
    sys.exit(rv if isinstance(rv, int) else 0)


if __name__ == "__main__":  # pragma: no cover
    main()
