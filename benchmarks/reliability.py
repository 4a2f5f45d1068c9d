"""Reliability check (issue 17): kill -9 at every step of an export's install, and a table of bad CLI inputs.

1. Kill at every step: a repository holding se and se_fp16 (batch 1:2:4) is overwritten by
   `deploykit export --force --batch 2:2:2`, SIGKILLed right before install step N (the
   DEPLOYKIT_KILL_AT_STEP failpoint of deploykit/repository_journal.py), for every N until a run finishes.
   After each kill the repository is loaded the way `deploykit serve` starts (which first recovers it), every
   model answers an inference, and the repository must be exactly the old or exactly the new one, with no
   leftovers.
2. Bad inputs: each case of CASES runs `python -m deploykit ...` in a subprocess and must exit with its
   documented code and one `error: <what failed> (<what to do>)` line, no traceback.

    python benchmarks/reliability.py              # -> benchmarks/results/reliability.md
    python benchmarks/reliability.py --no-kill    # the bad-input table only

Add a bad-input case by appending a Case to CASES: `setup` writes what the case needs into a scratch
directory and returns the CLI arguments.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

SMALL = ["--size", "14x14"]
KILL_ENV = "DEPLOYKIT_KILL_AT_STEP"


def deploykit(args: list[str], *, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "deploykit", *args], cwd=common.REPO, capture_output=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


# ------------------------------------------------------------------------------------------ kill at every step
def _repository_state(repo: Path) -> tuple[str, list[str]]:
    """Load `repo` as serve does, run each model, and say which export it holds: 'old', 'new' or a problem."""
    import numpy as np

    from deploykit.repository import sha256_file
    from deploykit.serve.models import Repository

    problems = []
    try:
        loaded = Repository.load(repo)
    except Exception as exc:  # noqa: BLE001 - the check reports it
        return "unservable", [f"serve refuses to start: {exc}"]
    batches = set()
    for name in ("se", "se_fp16"):
        manifest = json.loads((repo / name / "1" / "deploykit.json").read_text())
        batch = manifest["config"]["input"]["batch"]
        config_max = 0 if batch["min"] == batch["max"] else batch["max"]
        if f"max_batch_size: {config_max}\n" not in (repo / name / "config.pbtxt").read_text():
            problems.append(f"{name}: config.pbtxt is not the one of its model")
        if manifest["onnx"]["sha256"] != sha256_file(repo / name / "1" / "model.onnx"):
            problems.append(f"{name}: model.onnx does not match its manifest")
        spec = manifest["inputs"][0]
        shape = tuple(2 if d == -1 else d for d in spec["shape"])
        x = np.random.default_rng(0).standard_normal(shape).astype(spec["dtype"])
        out = loaded.get(name).runner.infer({spec["name"]: x})[manifest["outputs"][0]["name"]]
        if out.shape != shape or not np.isfinite(out).all():
            problems.append(f"{name}: inference answered {out.shape}")
        batches.add(batch["max"])
    leftovers = [str(p.relative_to(repo)) for p in repo.rglob(".*")]
    if leftovers:
        problems.append(f"leftovers {leftovers}")
    if len(batches) != 1:
        return "mixed", problems + ["one model old, another new"]
    return ("old" if batches == {4} else "new"), problems


def kill_at_every_step(scratch: Path) -> tuple[list[list], dict]:
    pristine, repo = scratch / "pristine", scratch / "repo"
    base = ["export", "--block", "se", *SMALL, "--precision", "fp32", "--precision", "fp16"]
    done = deploykit([*base, "--batch", "1:2:4", "--out", str(pristine)])
    if done.returncode != 0:
        raise SystemExit(f"the first export failed: {done.stderr.decode()[-500:]}")
    rows, counts = [], {"kills": 0, "old": 0, "new": 0, "broken": 0}
    for step in range(100):
        shutil.rmtree(repo, ignore_errors=True)
        shutil.copytree(pristine, repo)
        run = deploykit([*base, "--batch", "2:2:2", "--out", str(repo), "--force"], env={KILL_ENV: str(step)})
        if run.returncode == 0:
            state, problems = _repository_state(repo)
            rows.append([step, "finished (no kill)", state, "; ".join(problems) or "ok"])
            break
        if run.returncode != -9:
            rows.append([step, f"exit {run.returncode}", "-", run.stderr.decode()[-200:]])
            counts["broken"] += 1
            continue
        counts["kills"] += 1
        state, problems = _repository_state(repo)
        ok = state in ("old", "new") and not problems
        counts[state if ok else "broken"] += 1
        rows.append([step, "SIGKILL", state, "; ".join(problems) or "ok"])
    return rows, counts


# ------------------------------------------------------------------------------------------ bad inputs
@dataclass
class Case:
    name: str
    setup: Callable[[Path], list[str]]   # scratch dir -> CLI arguments
    code: int                            # the documented exit code
    words: str = ""                      # a phrase the error line must hold


def _file(name: str, data: bytes | str):
    def setup(d: Path) -> Path:
        path = d / name
        path.write_bytes(data if isinstance(data, bytes) else data.encode())
        return path
    return setup


def _checkpoint(change: str):
    """An se checkpoint whose fc2.weight is changed: nan, inf, complex or truncated."""
    def setup(d: Path) -> list[str]:
        import torch

        from deploykit.export.config import default_config
        from deploykit.export.source import build_modules

        state = dict(build_modules(default_config("se")).reference.state_dict())
        w = state["fc2.weight"].clone()
        if change == "nan":
            w[0] = float("nan")
        elif change == "inf":
            w[0] = float("inf")
        elif change == "complex":
            w = w.to(torch.complex64)
        state["fc2.weight"] = w
        path = d / f"{change}.pth"
        torch.save(state, path)
        if change == "truncated":
            path.write_bytes(path.read_bytes()[:200])
        return ["export", "--block", "se", *SMALL, "--weights", str(path), "--out", str(d / "m")]
    return setup


def _overflowing_weights(d: Path) -> list[str]:
    """Finite weights whose forward pass yields NaN (inf - inf in fc2)."""
    import torch

    from deploykit.export.config import default_config
    from deploykit.export.source import build_modules

    state = {k: v.clone() for k, v in build_modules(default_config("se")).reference.state_dict().items()}
    state["fc1.weight"].zero_()
    state["fc1.bias"].fill_(1e38)
    state["fc2.weight"].zero_()
    state["fc2.weight"][:, 0], state["fc2.weight"][:, 1] = 1e30, -1e30
    state["fc2.bias"].zero_()
    torch.save(state, d / "overflow.pth")
    return ["export", "--block", "se", *SMALL, "--weights", str(d / "overflow.pth"), "--out", str(d / "m")]


LAUGHS = "source:\n  block: se\n  args:\n    a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"    {c}: &{c} [{', '.join([f'*{p}'] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi")
) + "input: {channels: 64, height: {opt: 14}, width: {opt: 14}}\n"


def _config(text: str):
    def setup(d: Path) -> list[str]:
        return ["export", "--config", str(_file("cfg.yaml", text)(d)), "--out", str(d / "m")]
    return setup


CASES: list[Case] = [
    Case("empty checkpoint (0 bytes)", lambda d: ["export", "--block", "se", *SMALL, "--weights",
                                                   str(_file("empty.pth", b"")(d)), "--out", str(d / "m")], 2, "empty"),
    Case("truncated checkpoint", _checkpoint("truncated"), 2, "cannot read checkpoint"),
    Case("NaN checkpoint", _checkpoint("nan"), 2, "non-finite"),
    Case("Inf checkpoint", _checkpoint("inf"), 2, "non-finite"),
    Case("complex checkpoint", _checkpoint("complex"), 2, "complex"),
    Case("weights whose outputs are NaN", _overflowing_weights, 1, "NaN or Inf"),
    Case("text file as checkpoint", lambda d: ["export", "--block", "se", "--weights",
                                               str(_file("w.pth", "not a checkpoint")(d)), "--out", str(d / "m")], 2),
    Case("YAML billion laughs", _config(LAUGHS), 2, "aliases are not allowed"),
    Case("YAML malformed", _config("source: {block: se\ninput: ["), 2, "malformed YAML"),
    Case("YAML top level a list", _config("- a\n- b\n"), 2, "mapping"),
    Case("YAML unknown field", _config("source: {block: se}\ncolour: blue\n"), 2, "unknown field"),
    Case("config does not exist", lambda d: ["export", "--config", str(d / "nope.yaml")], 2, "does not exist"),
    Case("--size 0x14", lambda d: ["export", "--block", "se", "--size", "0x14", "--out", str(d / "m")], 2),
    Case("--size abc", lambda d: ["export", "--block", "se", "--size", "abc", "--out", str(d / "m")], 2),
    Case("--size 8192x8192 (memory)", lambda d: ["export", "--block", "se", "--size", "8192x8192",
                                                 "--out", str(d / "m")], 2, "GiB"),
    Case("--batch 4:2:1", lambda d: ["export", "--block", "se", "--batch", "4:2:1", "--out", str(d / "m")], 2),
    Case("unknown block", lambda d: ["export", "--block", "sma", "--out", str(d / "m")], 2, "did you mean"),
    Case("--out is a file", lambda d: ["export", "--block", "se", *SMALL, "--out",
                                       str(_file("f", "x")(d))], 2),
    Case("bench --csv /proc/nope/x.csv", lambda d: ["bench", "--block", "se", "--batch", "1", "--csv",
                                                    "/proc/nope/x.csv"], 2, "does not exist"),
    Case("bench --csv /proc/x.csv", lambda d: ["bench", "--block", "se", "--batch", "1", "--csv", "/proc/x.csv"],
         2, "not a directory this user can write in"),
    Case("bench --plot into a missing directory", lambda d: ["bench", "--block", "se", "--batch", "1", "--plot",
                                                             str(d / "nonexistent" / "x.png")], 2, "does not exist"),
    Case("build of a missing model", lambda d: ["build", "models/nope/1/model.onnx"], 2, "does not exist"),
    Case("validate of a missing file", lambda d: ["validate", str(d / "nope.onnx")], 2),
    Case("validate of a text file", lambda d: ["validate", str(_file("m.onnx", "not onnx")(d))], 2),
    Case("serve of a missing repository", lambda d: ["serve", str(d / "nope")], 2, "does not exist"),
]


def run_case(case: Case, scratch: Path) -> list:
    d = scratch / case.name.replace(" ", "_").replace("/", "_")
    d.mkdir(parents=True)
    args = case.setup(d)
    start = time.monotonic()
    try:
        run = deploykit(args, timeout=300)
        code, err = run.returncode, run.stderr.decode(errors="replace")
    except subprocess.TimeoutExpired:
        code, err = "timeout", ""
    seconds = time.monotonic() - start
    last = err.strip().splitlines()[-1] if err.strip() else ""
    checks = {
        "exit code": code == case.code,
        "one error line": last.startswith("error: ") and last.endswith(")") and len(last) < 1000,
        "no traceback": "Traceback" not in err,
        "names the problem": case.words.lower() in last.lower(),
    }
    failed = [k for k, ok in checks.items() if not ok]
    return [case.name, f"`deploykit {' '.join(a if len(a) < 40 else '...' + a[-30:] for a in args)}`", case.code,
            code, f"{seconds:.1f}", "ok" if not failed else "FAILED: " + ", ".join(failed), last[:160]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-kill", action="store_true", help="skip the kill-at-every-step check")
    parser.add_argument("--out", default=str(common.RESULTS / "reliability.md"))
    args = parser.parse_args()
    from deploykit.bench.env import environment, load_average

    env = environment()
    lines = []
    with tempfile.TemporaryDirectory(prefix="deploykit-reliability-") as tmp:
        scratch = Path(tmp)
        kill_rows, kill_counts = ([], None) if args.no_kill else kill_at_every_step(scratch / "kill")
        case_rows = [run_case(case, scratch / "cases") for case in CASES]
    env["load_average_end"] = load_average()
    passed = sum(r[5] == "ok" for r in case_rows)
    lines += common.header("Reliability: kill -9 during the install, and bad CLI inputs", env,
                           "shared 2-core machine with other engineers' jobs: timings are indicative only")
    if kill_counts is not None:
        lines += ["## kill -9 at every step of `export --force`", "",
                  f"{kill_counts['kills']} kills, one per install step: {kill_counts['old']} left the old models, "
                  f"{kill_counts['new']} the new ones, {kill_counts['broken']} anything else (a mix, leftovers, or "
                  "a repository serve refuses). Steps of this install (two models, each replacing its config.pbtxt "
                  "and version 1): 0 writes the journal; 1-8 move each old entry aside and rename the new one into "
                  "place; 9-12 delete the old entries; 13 deletes the journal. After each kill the repository is "
                  "loaded as `deploykit serve` loads it at start (recovering it first) and every model answers an "
                  "inference.", ""]
        lines += common.md_table(["step", "run", "repository after recovery", "problems"], kill_rows, "rlll") + [""]
    lines += ["## Bad inputs", "", f"{passed} of {len(case_rows)} cases exit with the documented code and one "
              "`error: ... (what to do)` line without a traceback.", ""]
    lines += common.md_table(["case", "command", "expected exit", "exit", "s", "result", "error line"], case_rows,
                             "llrrrll")
    path = common.write_markdown(args.out, lines)
    print(f"wrote {path}: bad inputs {passed}/{len(case_rows)} ok"
          + (f"; kills {kill_counts}" if kill_counts is not None else ""))
    broken = (kill_counts or {}).get("broken", 0)
    sys.exit(0 if passed == len(case_rows) and not broken else 1)


if __name__ == "__main__":
    main()
