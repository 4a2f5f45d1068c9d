"""`deploykit list`: the registry, without importing torch."""

from __future__ import annotations

import click

from deploykit.commands import echo_json


@click.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def list_blocks(as_json: bool):
    """List the blocks and the networks built from them, with their papers and defaults."""
    from deploykit.blocks.registry import BLOCKS
    from deploykit.networks.registry import NETWORKS

    rows = [s.summary() for s in BLOCKS.values()]
    network_rows = [s.summary() for s in NETWORKS.values()]
    if as_json:
        echo_json({"blocks": rows, "networks": network_rows})
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="deploykit blocks")
    for col in ("name", "block", "paper", "defaults", "input CxHxW"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["name"], r["title"], f"{r['paper']}\n{r['arxiv']}",
                      ", ".join(f"{k}={v}" for k, v in r["defaults"].items()), "x".join(map(str, r["input_shape"])))
    console = Console()
    console.print(table)
    networks = Table(title="deploykit networks (deploykit export --model NAME)")
    for col in ("name", "network", "paper", "blocks", "params (M)", "input CxHxW"):
        networks.add_column(col)
    for r in network_rows:
        networks.add_row(r["name"], r["title"], f"{r['paper']}\n{r['arxiv']}", ", ".join(r["blocks"]),
                         f"{r['params_m']:g}", "x".join(map(str, r["input_shape"])))
    console.print(networks)
