"""The validation report as Markdown (`--report FILE.md`) and as rows for the terminal table."""

from __future__ import annotations

from deploykit.validate.checks import CATEGORIES, ValidationReport


def _cell(text: str) -> str:
    return (text or "").replace("|", "\\|").replace("\n", " ")


def rows(report: ValidationReport) -> list[tuple[str, str, str, str, str]]:
    """(category, check, status, detail, fix) in category order, then run order."""
    order = {c: i for i, c in enumerate(CATEGORIES)}
    ranked = sorted(enumerate(report.checks), key=lambda ic: (order.get(ic[1].category, 99), ic[0]))
    return [(c.category, c.name, c.status, c.detail, c.fix or "") for _, c in ranked]


def markdown(report: ValidationReport) -> str:
    counts = report.counts()
    verdict = report.verdict
    s = report.summary
    lines = [f"# deploykit validate: {verdict}", "",
             f"- model: `{report.path}`",
             f"- checks: {counts['passed']} passed, {counts['errors']} failed, {counts['warnings']} warnings, "
             f"{counts['notes']} notes, {counts['skipped']} skipped"]
    if s.get("shapes_run"):
        lines.append(f"- ran at: {', '.join(s.get('runs') or s['shapes_run'])} (from {s.get('shape_source', '?')})")
    if s.get("reference"):
        lines.append(f"- reference: {s['reference']}")
    if s.get("tensorrt_support"):
        lines.append(f"- TensorRT support data: {s['tensorrt_support']}")
    lines += ["", "Exit code: 0 when every error-severity check passes, 1 otherwise; warnings and notes never fail.",
              ""]
    current = None
    for category, name, status, detail, fix in rows(report):
        if category != current:
            current = category
            lines += ["", f"## {category}", "", "| check | status | detail | fix |", "|---|---|---|---|"]
        lines.append(f"| `{_cell(name)}` | {status} | {_cell(detail)} | {_cell(fix)} |")
    fp16 = next((c for c in report.checks if c.name == "fp16_range" and c.data and c.data.get("tensors")), None)
    if fp16 is not None:
        lines += ["", "## fp16 keep-list", "", "| tensor | kind | produced by | max abs | share < 6.1e-5 |",
                  "|---|---|---|---|---|"]
        for t in fp16.data["tensors"]:
            lines.append(f"| `{_cell(t['tensor'])}` | {t['kind']} | {t['producer_op']} `{_cell(t['producer'])}` | "
                         f"{t['max_abs']:.3g} | {t['tiny_fraction']:.0%} |")
        lines += ["", "Nodes to keep in fp32: " + ", ".join(f"`{n}`" for n in fp16.data["keep_nodes"])]
    return "\n".join(lines).rstrip() + "\n"
