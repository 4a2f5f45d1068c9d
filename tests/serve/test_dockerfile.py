"""The Dockerfile without a Docker engine: its structure, and its ENTRYPOINT and HEALTHCHECK commands run for real.

The container's command is `deploykit serve /models --host 0.0.0.0 --port 8000`; here it runs against a
generated repository with three substitutions only: the repository path for /models, 127.0.0.1 for
0.0.0.0 (tests talk to loopback only) and port 0 for 8000 (a free port). The HEALTHCHECK command runs as
written, pointed at that port: it must pass while the server is ready and fail once it has stopped.
"""

from __future__ import annotations

import fnmatch
import json
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.serve.helpers import REPO_ROOT, LiveServer, needs_serve_extra

needs_serve_extra()

DOCKERFILE = REPO_ROOT / "Dockerfile"


@dataclass
class Stage:
    base: str
    name: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]

    def last(self, keyword: str) -> str | None:
        found = self.all(keyword)
        return found[-1] if found else None


def parse_dockerfile(text: str) -> tuple[dict[str, str], dict[str, Stage]]:
    """Global ARG defaults and the stages by name (continuations joined, comments dropped)."""
    logical, current = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        logical.append(current + line)
        current = ""
    args, stages, stage = {}, {}, None
    for line in logical:
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            match = re.fullmatch(r"(\S+)\s+AS\s+(\S+)", rest.strip(), flags=re.IGNORECASE)
            assert match, f"every stage is named: FROM {rest}"
            stage = Stage(match.group(1), match.group(2))
            stages[stage.name] = stage
        elif stage is None:
            assert keyword == "ARG", line
            name, _, default = rest.partition("=")
            args[name.strip()] = default.strip()
        else:
            stage.instructions.append((keyword, rest.strip()))
    return args, stages


def exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), f"exec form expected: {args}"
    return value


@pytest.fixture(scope="module")
def dockerfile():
    return parse_dockerfile(DOCKERFILE.read_text())


def test_named_targets_on_the_right_bases(dockerfile):
    args, stages = dockerfile
    assert {"cpu", "gpu"} <= set(stages)
    assert stages["gpu"].base == "nvcr.io/nvidia/tensorrt:${TENSORRT_TAG}-py3"
    assert re.fullmatch(r"\d\d\.\d\d", args["TENSORRT_TAG"])
    assert re.fullmatch(r"python:\$\{PYTHON_VERSION\}-slim", stages["cpu"].base)
    gpu_install = " ".join(stages["gpu"].all("RUN"))
    assert '".[trt,gpu,serve]"' in gpu_install and "-c constraints.txt" in gpu_install
    cpu_install = " ".join(s for st in stages.values() if st.base == stages["cpu"].base for s in st.all("RUN"))
    assert '".[serve]"' in cpu_install and "-c constraints.txt" in cpu_install
    assert any("--from=cpu-build" in c for c in stages["cpu"].all("COPY"))


@pytest.mark.parametrize("target", ["cpu", "gpu"])
def test_targets_run_unprivileged_with_a_readiness_healthcheck(dockerfile, target):
    stage = dockerfile[1][target]
    user = stage.last("USER")
    assert user and user not in {"root", "0"}
    health = stage.last("HEALTHCHECK")
    assert health and "/v2/health/ready" in health and "CMD" in health
    entry = exec_form(stage.last("ENTRYPOINT"))
    assert entry[:3] == ["deploykit", "serve", "/models"]
    assert entry[entry.index("--host") + 1] == "0.0.0.0"  # explicit: the server itself defaults to loopback
    assert "8000" in stage.last("EXPOSE").split()
    assert exec_form(stage.last("CMD")) == []


def test_both_targets_start_the_same_command(dockerfile):
    stages = dockerfile[1]
    assert exec_form(stages["cpu"].last("ENTRYPOINT")) == exec_form(stages["gpu"].last("ENTRYPOINT"))


def local_command(argv: list[str], repo: Path) -> list[str]:
    """The container command with only the path, the bind address and the port made local."""
    assert argv[0] == "deploykit"
    swaps = {"/models": str(repo), "0.0.0.0": "127.0.0.1", "8000": "0"}
    # gRPC on a free port too (the container's 8001 could be taken on a shared test machine).
    return [sys.executable, "-m", "deploykit", *[swaps.get(a, a) for a in argv[1:]], "--grpc-port", "0"]


def healthcheck_command(stage: Stage, port: int) -> list[str]:
    health = stage.last("HEALTHCHECK")
    argv = exec_form(health[health.index("CMD") + 3:].strip())
    assert argv[0] in {"python", "python3"}
    return [sys.executable, *[a.replace("127.0.0.1:8000", f"127.0.0.1:{port}") for a in argv[1:]]]


@pytest.mark.parametrize("target", ["cpu"])
def test_entrypoint_serves_a_generated_repository_and_the_healthcheck_sees_it(dockerfile, model_repo, target,
                                                                              tmp_path, reference):
    import httpx
    import numpy as np

    stage = dockerfile[1][target]
    argv = exec_form(stage.last("ENTRYPOINT")) + exec_form(stage.last("CMD"))
    live = LiveServer(model_repo, command=local_command(argv, model_repo), log_dir=tmp_path)
    with live:
        port = int(live.address.rsplit(":", 1)[1])
        probe = subprocess.run(healthcheck_command(stage, port), capture_output=True, text=True, timeout=60)
        assert probe.returncode == 0, probe.stderr
        x = np.random.default_rng(7).standard_normal((2, 64, 14, 14)).astype(np.float32)
        body = {"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}]}
        response = httpx.post(f"{live.url}/v2/models/se/infer", json=body, timeout=30)
        assert response.status_code == 200, response.text
        out = response.json()["outputs"][0]
        reference.assert_close("se", x, {"output": np.asarray(out["data"], np.float32).reshape(out["shape"])})
    assert live.proc.returncode == 0  # SIGTERM (docker stop) is a clean exit
    probe = subprocess.run(healthcheck_command(stage, port), capture_output=True, text=True, timeout=60)
    assert probe.returncode != 0  # nothing listens any more: unhealthy


def dockerignored(path: str, patterns: list[str]) -> bool:
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        parts = path.split("/")
        hit = any(fnmatch.fnmatch("/".join(parts[:i]), pattern) for i in range(1, len(parts) + 1))
        hit = hit or (pattern.startswith("**/") and any(fnmatch.fnmatch(p, pattern[3:]) for p in parts))
        if hit:
            ignored = not negate
    return ignored


def test_dockerignore_keeps_the_build_context_small_but_complete(dockerfile):
    patterns = [line.strip() for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    for heavy in (".venv/bin/python", ".git/HEAD", "models/se/1/model.onnx", ".trt-conformance/x",
                  "deploykit/__pycache__/cli.cpython-311.pyc"):
        assert dockerignored(heavy, patterns), heavy
    sources = {src for stage in dockerfile[1].values() for c in stage.all("COPY") if not c.startswith("--from")
               for src in c.split()[:-1]}
    assert sources == {"pyproject.toml", "constraints.txt", "README.md", "deploykit"}
    for needed in ("pyproject.toml", "constraints.txt", "README.md", "deploykit/cli.py", "deploykit/serve/app.py"):
        assert not dockerignored(needed, patterns), needed
