"""The markdown export report written beside the artifacts (also summarised in `--json`)."""

from __future__ import annotations


def render_markdown(status) -> str:
    cfg = status.config
    lines = [f"# Export report: {cfg.model_name}", "",
             f"- verdict: **{'PASSED' if status.passed else 'FAILED'}**",
             f"- source: {cfg.source.block or cfg.source.network} ({cfg.source.variant}), args {cfg.source.args}",
             f"- exporter used: {status.exporter or 'none'}; simplified: {status.simplified}"]
    if status.error:
        lines.append(f"- error: {status.error}")
    failure = status.first_failure
    if failure:
        lines.append(f"- first failing stage: **{failure.name}**: {failure.detail}")
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
            lines.append(f"| {'x'.join(map(str, s.shape))} | {d['passed']} | {d['max_abs']:.3e} | "
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
