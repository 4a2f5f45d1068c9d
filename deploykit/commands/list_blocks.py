"""`deploykit list`: the registry, without importing torch."""

from __future__ import annotations

import json

import click


@click.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def list_blocks(as_json: bool):
    """List the blocks with their papers and default arguments."""
    from deploykit.blocks.registry import BLOCKS

    rows = [s.summary() for s in BLOCKS.values()]
    if as_json:
        click.echo(json.dumps({"blocks": rows}, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="deploykit blocks")
    for col in ("name", "block", "paper", "defaults", "input CxHxW"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["name"], r["title"], f"{r['paper']}\n{r['arxiv']}",
                      ", ".join(f"{k}={v}" for k, v in r["defaults"].items()), "x".join(map(str, r["input_shape"])))
    Console().print(table)
