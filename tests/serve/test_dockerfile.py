"""The Dockerfile without a container engine: its structure, and its ENTRYPOINT and HEALTHCHECK commands run for real.

The container's command is `deploykit serve /models --host 0.0.0.0 --port 8000`; here it runs against a
generated repository with three substitutions only: the repository path for /models, 127.0.0.1 for
0.0.0.0 (tests talk to loopback only) and port 0 for 8000 (a free port). The HEALTHCHECK command runs exactly
as written; it finds the server's port itself (DEPLOYKIT_SERVER_PID names the server, which is PID 1 in a
container): it must pass while the server is ready, whatever its port, and fail once it has stopped.
scripts/container_check.sh builds the image with podman and runs the same checks against the container.
"""

from __future__ import annotations

import fnmatch
import json
import os
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


def test_named_targets_on_base_images_given_as_build_arguments(dockerfile):
    args, stages = dockerfile
    assert {"cpu", "gpu"} <= set(stages)
    # Both bases are build arguments (a mirror, a local image where no registry answers), defaulting to
    # NVIDIA's TensorRT image and a Debian-based Python.
    assert stages["gpu"].base == "${GPU_BASE_IMAGE}"
    assert re.fullmatch(r"nvcr\.io/nvidia/tensorrt:\d\d\.\d\d-py3", args["GPU_BASE_IMAGE"])
    assert stages["cpu"].base == stages["cpu-build"].base == "${CPU_BASE_IMAGE}"
    assert re.fullmatch(r"python:3\.\d+-slim", args["CPU_BASE_IMAGE"])
    gpu_install = " ".join(stages["gpu"].all("RUN"))
    assert '".[trt,gpu,serve]"' in gpu_install and "-c constraints.txt" in gpu_install
    cpu_install = " ".join(stages["cpu-build"].all("RUN"))
    # The serving image installs the base and the serve extra: no export extra, so no torch.
    assert '".[serve]"' in cpu_install and "-c constraints.txt" in cpu_install and "export" not in cpu_install
    assert any("--from=cpu-build" in c for c in stages["cpu"].all("COPY"))


def test_no_frontend_pull_and_python3_only():
    """`# syntax=` makes BuildKit pull a frontend image (blocked air-gapped); Debian's python images have no
    `python`, and a hard-coded package index would make mirrors edit the file."""
    text = DOCKERFILE.read_text()
    assert not re.search(r"^\s*#\s*syntax\s*=", text, flags=re.MULTILINE | re.IGNORECASE)
    _, stages = parse_dockerfile(text)
    commands = [c for st in stages.values() for kw in ("RUN", "HEALTHCHECK", "ENTRYPOINT", "CMD") for c in st.all(kw)]
    assert not [c for c in commands if re.search(r"(^|[\s\"\[/])python([\s\"]|$)", c)], "use python3"
    assert "download.pytorch.org" not in text and "--index-url" not in text and "--extra-index-url" not in text


@pytest.mark.parametrize("target", ["cpu", "gpu"])
def test_targets_run_unprivileged_with_a_readiness_healthcheck(dockerfile, target):
    stage = dockerfile[1][target]
    user = stage.last("USER")
    assert user and user not in {"root", "0"}
    health = stage.last("HEALTHCHECK")
    assert health and "CMD" in health and "8000" not in health  # the port comes from the server, not the file
    assert exec_form(health[health.index("CMD") + 3:].strip()) == ["python3", "-m", "deploykit.healthcheck"]
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


def healthcheck(stage: Stage, server_pid: int) -> subprocess.CompletedProcess:
    """The HEALTHCHECK command as written (python3 -> this interpreter), told which process is the server."""
    health = stage.last("HEALTHCHECK")
    argv = exec_form(health[health.index("CMD") + 3:].strip())
    assert argv[0] == "python3"
    env = {**os.environ, "DEPLOYKIT_SERVER_PID": str(server_pid), "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run([sys.executable, *argv[1:]], capture_output=True, text=True, timeout=60, env=env)


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
        assert port != 8000  # a port the HEALTHCHECK can only know by asking the server
        server_pid = live.proc.pid
        probe = healthcheck(stage, server_pid)
        assert probe.returncode == 0, probe.stderr
        x = np.random.default_rng(7).standard_normal((2, 64, 14, 14)).astype(np.float32)
        body = {"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}]}
        response = httpx.post(f"{live.url}/v2/models/se/infer", json=body, timeout=30)
        assert response.status_code == 200, response.text
        out = response.json()["outputs"][0]
        reference.assert_close("se", x, {"output": np.asarray(out["data"], np.float32).reshape(out["shape"])})
    assert live.proc.returncode == 0  # SIGTERM (docker stop) is a clean exit
    probe = healthcheck(stage, server_pid)
    assert probe.returncode == 1 and "unhealthy" in probe.stderr  # nothing listens any more


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
