"""The markdown export report written beside the artifacts (also summarised in `--json`)."""

from __future__ import annotations


def render_markdown(status) -> str:
    cfg = status.config
    lines = [f"# Export report: {cfg.model_name}", "",
             f"- verdict: **{'PASSED' if status.passed else 'FAILED'}**",
             f"- source: {cfg.source.label} ({cfg.source.variant}), args {cfg.source.args}",
             f"- exporter used: {status.exporter or 'none'}; simplified: {status.simplified}"]
    if getattr(status, "allow_non_finite", False):
        lines.append("- **WARNING: exported with --allow-non-finite: PyTorch's outputs were not required to be finite; "
                     "NaN compares equal to NaN, so parity on non-finite values proves nothing**")
    if status.error:
        lines.append(f"- error: {status.error}")
    failure = status.first_failure
    if failure:
        lines.append(f"- first failing stage: **{failure.name}**: {failure.detail}")
    source = getattr(status, "source", None)
    if source is not None:
        lines += _source_section(source)
    lines += ["", "## Stages", "", "| stage | status | seconds | detail |", "|---|---|---|---|"]
    lines += [f"| {s.name} | {s.status} | {s.seconds:.2f} | {s.detail.replace('|', '/')} |" for s in status.stages]
    lines += ["", "## Exporter attempts", "", "| exporter | ok | seconds | error |", "|---|---|---|---|"]
    lines += [f"| {a.exporter} | {a.ok} | {a.seconds:.2f} | {(a.error or '').replace('|', '/')} |" for a in status.attempts]
    for precision, parity in status.parity.items():
        t = parity.tolerance
        lines += ["", f"## Parity: {precision} ({parity.label}; atol {t.atol:g}, rtol {t.rtol:g}, {t.mode})", "",
                  "| shape | passed | max abs | max rel | cosine |", "|---|---|---|---|---|"]
        for s in parity.shapes:
            d = s.as_dict()
            lines.append(f"| {shape_label(s.shape)} | {d['passed']} | {d['max_abs']:.3e} | "
                         f"{d['max_rel']:.3e} | {d['cosine']:.8f} |")
        lines.append(f"\nMinimum passing tolerance ({parity.tolerance.mode}): atol {parity.min_passing_atol:.3e} (rtol 0) "
                     f"or rtol {parity.min_passing_rtol:.3e} (atol 0).")
    if status.artifacts:
        lines += ["", "## Artifacts", ""]
        lines += [f"- {a.precision}: `{a.onnx}` (manifest `{a.manifest}`)" for a in status.artifacts]
    failed_logs = [a for a in status.attempts if not a.ok and a.log]
    if failed_logs:
        lines += ["", "## Exporter errors", ""]
        for a in failed_logs:
            lines += [f"### {a.exporter}", "", "```", a.log.strip()[-4000:], "```", ""]
    return "\n".join(lines) + "\n"


def shape_label(shape) -> str:
    """1x3x8x8 for one input; 1x3x8x8 + 1x1x8x8 for several."""
    if shape and isinstance(shape[0], tuple):
        return " + ".join("x".join(map(str, s)) for s in shape)
    return "x".join(map(str, shape))


def _source_section(source) -> list[str]:
    """Which weights went in (or, loudly, that they are seeded random), the inputs, and the rewrite."""
    from deploykit.sources.weights import describe

    w = source.weights_report
    lines = [f"- {describe(w)}"]
    if w.get("seeded_random", w.get("path") is None):
        lines.append("- **WARNING: these are SEEDED RANDOM WEIGHTS, not a trained model**; pass --weights to export yours")
    lines.append("- inputs: " + "; ".join(
        f"`{t.name}` {t.dtype} " + "x".join(str(d.opt) if not d.dynamic else f"[{d.lo}..{d.opt}..{d.hi}]" for d in t.dims)
        for t in source.inputs))
    lines.append("- outputs: " + ", ".join(f"`{n}`" for n in source.output_names))
    lines += [f"- **{note}**" for note in source.notes]
    conv = source.conversion
    if conv is not None:
        lines += ["", "## Export-safe rewrite", "",
                  f"Used for the export: {'yes' if conv.get('used') else 'no (' + conv.get('why', '') + ')'}.", "",
                  "| module | original | outcome | block | parity max abs (weights / seeded) | why |", "|---|---|---|---|---|---|"]
        for c in conv["replaced"]:
            lines.append(f"| {c['path'] or '<root>'} | {c['original']} | swapped for {c['replacement']} | {c['block']} | "
                         f"{_num(c.get('max_abs'))} / {_num(c.get('max_abs_seeded'))} | {c.get('source', '')} |")
        for c in conv["not_replaced"]:
            lines.append(f"| {c['path'] or '<root>'} | {c['original']} | kept | {c['block']} | "
                         f"{_num(c.get('max_abs'))} / {_num(c.get('max_abs_seeded'))} | {c.get('reason', '').replace('|', '/')} |")
        if not conv["replaced"] and not conv["not_replaced"]:
            lines.append("| - | - | no recognised block | - | - | - |")
    return lines


def _num(value) -> str:
    return "-" if value is None else f"{value:.1e}"
