"""Host-side helpers of scripts/container_check.sh (run with the host's Python, which has deploykit[export,test]).

    container_probe.py free-port                      a free TCP port on 127.0.0.1
    container_probe.py pip-conf OUT                   the host's effective pip configuration (files and PIP_*
                                                      variables) as one pip.conf; prints the local paths it
                                                      refers to (wheel folders, file:// indexes, constraint
                                                      files, the CA bundle), one per line, to mount into the build
    container_probe.py wait-ready URL SINCE TIMEOUT   poll URL/v2/health/ready until 200; print the seconds
                                                      since SINCE (a time.time() value)
    container_probe.py infer URL MODEL_DIR            one inference through tritonclient.http, compared with
                                                      ONNX Runtime on the host on the same input: exit 0 when equal
"""

from __future__ import annotations

import configparser
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlparse


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def pip_conf(out: Path) -> list[str]:
    """`pip config list` already merges the files by precedence; PIP_* variables (`:env:.key`) override them."""
    listing = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True,
                             check=True).stdout
    sections: dict[str, dict[str, str]] = {}
    env: dict[str, str] = {}
    for line in listing.splitlines():
        key, sep, value = line.partition("=")
        if not sep:
            continue
        value = value.strip().strip("'\"")
        section, _, name = key.strip().rpartition(".")
        if section == ":env:":
            env[name] = value
        else:
            sections.setdefault(section or "global", {})[name] = value
    sections.setdefault("global", {}).update(env)
    parser = configparser.ConfigParser(interpolation=None)
    for section, values in sections.items():
        parser[section] = values
    with out.open("w") as fh:
        parser.write(fh)
    paths = []
    for values in sections.values():
        for value in values.values():
            for token in value.split():
                if token.startswith("file://"):
                    # A file:// index links its files relative to itself (../../files/...): mount its parent.
                    local = Path(urlparse(token).path)
                    paths.append(str(local.parent if local.is_dir() else local))
                elif token.startswith("/") and Path(token).exists():
                    paths.append(token)
    return sorted(set(paths))


def wait_ready(url: str, since: float, timeout: float) -> float:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url + "/v2/health/ready", timeout=2) as response:
                if response.status == 200:
                    return time.time() - since
        except OSError:
            pass
        time.sleep(0.02)
    raise SystemExit(f"not ready after {timeout:.0f} s")


def infer(url: str, model_dir: Path) -> str:
    """Served output vs ONNX Runtime on the host, same graph, same input: equal, bit for bit."""
    import numpy as np
    import onnxruntime as ort
    import tritonclient.http as httpclient

    name = model_dir.name
    onnx_path = model_dir / "1" / "model.onnx"
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    graph_input = session.get_inputs()[0]
    shape = [2 if not isinstance(d, int) else d for d in graph_input.shape]
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    expected = session.run(None, {graph_input.name: x})
    client = httpclient.InferenceServerClient(url.removeprefix("http://"))
    tensor = httpclient.InferInput(graph_input.name, list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)  # binary tensor extension
    result = client.infer(name, [tensor])
    diffs = []
    for out, want in zip(session.get_outputs(), expected):
        got = result.as_numpy(out.name)
        if got is None or got.shape != want.shape:
            raise SystemExit(f"output {out.name}: shape {None if got is None else got.shape}, expected {want.shape}")
        diffs.append(float(np.max(np.abs(got.astype(np.float64) - want))))
        if not np.array_equal(got, want):
            raise SystemExit(f"output {out.name} differs from ONNX Runtime on the host: max abs {diffs[-1]:.3g}")
    return f"{name} {list(x.shape)}: equal to ONNX Runtime {ort.__version__} on the host (max abs {max(diffs):.1g})"


def main(argv: list[str]) -> None:
    command, *args = argv
    if command == "free-port":
        print(free_port())
    elif command == "pip-conf":
        print("\n".join(pip_conf(Path(args[0]))))
    elif command == "wait-ready":
        print(f"{wait_ready(args[0], float(args[1]), float(args[2])):.2f}")
    elif command == "infer":
        print(infer(args[0], Path(args[1])))
    else:
        raise SystemExit(f"unknown command {command!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
