"""Fixtures for the serving tests: a small exported repository, a live server on 127.0.0.1, PyTorch references.

The repository is exported once per session in this process (torch is imported anyway for the
references); servers run as real `python -m deploykit serve` subprocesses on a port the OS picks
(`--port 0`, read back from the ready line), and are stopped with SIGTERM, so every test talks to the
server exactly as a user would. All traffic goes to 127.0.0.1.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.serve.helpers import SMALL_BODY_LIMIT, LiveServer, Reference, export_model


@pytest.fixture(scope="session")
def model_repo(tmp_path_factory) -> Path:
    """se (fp32 + fp16, batch 1..4), sam (dynamic H/W) and se_static (fixed batch 2: max_batch_size 0)."""
    out = tmp_path_factory.mktemp("repo")
    export_model(out, "se", precisions=("fp32", "fp16"))
    export_model(out, "sam", dynamic_hw=True)
    export_model(out, "se", name="se_static", batch="2:2:2")
    return out


@pytest.fixture(scope="session")
def reference(model_repo) -> Reference:
    return Reference(model_repo)


@pytest.fixture(scope="session")
def server(model_repo, tmp_path_factory):
    """The shared server: default flags except a 1 MiB body limit."""
    live = LiveServer(model_repo, "--max-body-size", SMALL_BODY_LIMIT, log_dir=tmp_path_factory.mktemp("logs"))
    live.start()
    yield live
    code = live.stop()
    assert code == 0, f"server exited {code} on SIGTERM:\n{live.log()}"


@pytest.fixture
def client(server):
    httpclient = pytest.importorskip("tritonclient.http", reason="needs tritonclient[http] (test extra)")

    c = httpclient.InferenceServerClient(server.address, connection_timeout=30, network_timeout=60)
    yield c
    c.close()
