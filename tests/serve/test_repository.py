"""Loading a repository for serving: Triton's rules, clear errors at start-up, TensorRT plans when possible."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.serve.helpers import make_input, needs_serve_extra

needs_serve_extra()

from deploykit.errors import MissingDependency, UserInputError  # noqa: E402
from deploykit.serve.models import PLAN, Repository, default_runner  # noqa: E402
from deploykit.serve.protocol import ProtocolError  # noqa: E402
from deploykit.serve.settings import ServeSettings  # noqa: E402
from deploykit.trt.capabilities import cuda_device, import_tensorrt  # noqa: E402

HAVE_TRT_AND_GPU = import_tensorrt()[0] is not None and cuda_device()[0] is not None


@pytest.fixture
def repo(model_repo, tmp_path) -> Path:
    """A private copy of se and sam to edit."""
    out = tmp_path / "repo"
    for name in ("se", "sam"):
        shutil.copytree(model_repo / name, out / name)
    return out


def edit_config(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new))


def load_error(repo: Path, **settings) -> str:
    with pytest.raises(UserInputError) as err:
        Repository.load(repo, ServeSettings(**settings))
    return err.value.one_line()


def test_missing_or_empty_repository(tmp_path):
    assert "does not exist" in load_error(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes").mkdir()  # a directory without config.pbtxt or versions is ignored
    message = load_error(tmp_path / "empty")
    assert "has no model" in message and "deploykit export" in message


@pytest.mark.parametrize("old,new,words", [
    ('name: "se"', 'name: "other"', ["names the model 'other'", "directory is 'se'"]),
    ('platform: "onnxruntime_onnx"', 'platform: "pytorch_libtorch"', ["pytorch_libtorch", "not served"]),
    ("data_type: TYPE_FP32", "data_type: TYPE_FP16", ["FP16", "float32"]),
    ("dims: [ 64, 14, 14 ]", "dims: [ 64, 14 ]", ["dims"]),
    ('name: "input"', 'name: "image"', ["['image']", "['input']"]),
    ("max_batch_size: 4", "max_batch_size: 4\nmax_batch: 4", ["Triton's model-config schema", "max_batch"]),
    ("data_type: TYPE_FP32", "data_type: TYPE_STRING", ["TYPE_STRING"]),
    # Same rank, other sizes: the metadata would advertise shapes the model refuses at run time.
    ("dims: [ 64, 14, 14 ]", "dims: [ 64, 14, 15 ]", ["[64, 14, 15]", "[64, 14, 14]"]),
    ("dims: [ 64, 14, 14 ]", "dims: [ 64, -1, 14 ]", ["[64, -1, 14]", "[64, 14, 14]"]),
])
def test_a_config_that_does_not_fit_its_model_stops_the_server(repo, old, new, words):
    edit_config(repo / "se" / "config.pbtxt", old, new)
    message = load_error(repo)
    assert message.startswith("1 model(s)") and "se:" in message
    for word in words:
        assert word in message, message


def test_batching_a_model_with_a_fixed_batch_stops_the_server(repo, model_repo):
    # Requests merged by dynamic batching would fail at run time against a fixed first dim.
    shutil.copytree(model_repo / "se_static", repo / "se_static")
    config = repo / "se_static" / "config.pbtxt"
    edit_config(config, "max_batch_size: 0", "max_batch_size: 4\ndynamic_batching { }")
    edit_config(config, "dims: [ 2, 64, 14, 14 ]", "dims: [ 64, 14, 14 ]")
    message = load_error(repo)
    assert "max_batch_size 4" in message and "first dim of input at 2" in message and "dynamic batch" in message


def test_missing_model_file_and_stray_versions(repo):
    (repo / "se" / "1" / "model.onnx").unlink()
    assert "no model.onnx" in load_error(repo)
    shutil.rmtree(repo / "se")
    (repo / "loose" / "1").mkdir(parents=True)
    assert "no config.pbtxt" in load_error(repo)


def test_version_policy(repo):
    shutil.copytree(repo / "se" / "1", repo / "se" / "2")
    assert sorted(Repository.load(repo).models["se"].versions) == [2]  # Triton's default: the latest
    config = repo / "se" / "config.pbtxt"
    config.write_text(config.read_text() + "version_policy { all { } }\n")
    loaded = Repository.load(repo)
    assert sorted(loaded.models["se"].versions) == [1, 2]
    assert loaded.get("se").version == 2 and loaded.get("se", "1").version == 1
    edit_config(config, "version_policy { all { } }", "version_policy { specific { versions: [1] } }")
    loaded = Repository.load(repo)
    assert sorted(loaded.models["se"].versions) == [1]
    with pytest.raises(ProtocolError) as err:
        loaded.get("se", "2")
    assert err.value.status == 404


def test_batching_settings_follow_config_then_flags(repo):
    def scheduler(**settings):  # --batching config: what config.pbtxt says, then the flags
        settings = {"batching": "config", **settings}
        return Repository.load(repo, ServeSettings(**settings)).models["se"].versions[1].scheduler

    assert not scheduler().batching  # no dynamic_batching in config.pbtxt
    assert scheduler(batching="on").batching and scheduler(batching="on").max_batch == 4
    edit_config(repo / "se" / "config.pbtxt", "max_batch_size: 4",
                "max_batch_size: 4\ndynamic_batching { max_queue_delay_microseconds: 1500 }\n"
                "instance_group [ { count: 2 kind: KIND_CPU } ]")
    s = scheduler()
    assert s.batching and s.max_delay_s == pytest.approx(0.0015) and s.instances == 2
    s = scheduler(max_queue_delay_us=0, max_batch=2, instances=1)
    assert s.batching and s.max_delay_s == 0 and s.max_batch == 2 and s.instances == 1
    assert not scheduler(batching="off").batching
    # a model without a batch dimension is never batched
    static = Repository.load(repo, ServeSettings(batching="on")).models["sam"]
    assert static.versions[1].scheduler.batching == (static.max_batch_size > 0)


class PlanRunner:
    """Stands in for TrtRunner (same attributes the server reads): runs the ONNX twin of the 'engine'."""

    def __init__(self, onnx_path: Path):
        from deploykit.backends.ort import OrtRunner

        self.ort = OrtRunner(onnx_path).activate()
        self.inputs, self.outputs = ["input"], ["output"]
        self.dtypes = {"input": np.dtype(np.float32), "output": np.dtype(np.float32)}
        self.calls = 0

    def infer(self, feed):
        self.calls += 1
        return self.ort.infer(feed)

    def deactivate(self):
        self.ort.deactivate()


def add_plan_model(repo: Path, name: str = "se_trt") -> Path:
    """A tensorrt_plan entry laid out as `deploykit build` writes it (plan bytes are a stand-in)."""
    from deploykit.repository import TensorSpec, config_pbtxt

    (repo / name / "1").mkdir(parents=True)
    (repo / name / "1" / "model.plan").write_bytes(b"not a real engine")
    spec = [TensorSpec("input", "float32", (-1, 64, 14, 14))]
    (repo / name / "config.pbtxt").write_text(
        config_pbtxt(name, "tensorrt_plan", spec, [TensorSpec("output", "float32", (-1, 64, 14, 14))], 4))
    return repo / name


def test_plan_models_are_served_through_the_same_path(repo, reference):
    """With a runner for plans (TensorRT on a GPU machine; a stand-in here) the plan entry is served."""
    import asyncio

    import httpx

    from deploykit.serve.app import create_app

    add_plan_model(repo)
    made = {}

    def factory(platform, path, settings):
        if platform == PLAN:
            assert path.name == "model.plan"
            made["plan"] = PlanRunner(repo / "se" / "1" / "model.onnx")
            return made["plan"]
        return default_runner(platform, path, settings)

    loaded = Repository.load(repo, ServeSettings(instances=3), runner_factory=factory)
    assert loaded.models["se_trt"].platform == "tensorrt_plan"
    # one execution context per plan: its runs never overlap, whatever --instances says
    assert loaded.models["se_trt"].versions[1].scheduler.instances == 1
    assert loaded.models["se"].versions[1].scheduler.instances == 3
    probe_calls = made["plan"].calls  # --batching auto timed the runner at start-up
    x = make_input((2, 64, 14, 14), seed=21)
    app = create_app(loaded)

    async def talk():  # in-process: the app's lifespan around an ASGI transport, no socket
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://in-process") as http:
                meta = (await http.get("/v2/models/se_trt")).json()
                body = {"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32",
                                    "data": x.ravel().tolist()}]}
                return meta, await http.post("/v2/models/se_trt/infer", json=body)

    meta, response = asyncio.run(talk())
    assert meta["platform"] == "tensorrt_plan" and meta["inputs"][0]["shape"] == [-1, 64, 14, 14]
    assert response.status_code == 200, response.text
    out = response.json()["outputs"][0]
    assert made["plan"].calls == probe_calls + 1
    reference.assert_close("se", x, {"output": np.asarray(out["data"], np.float32).reshape(out["shape"])})


@pytest.mark.skipif(HAVE_TRT_AND_GPU, reason="TensorRT and a GPU are present: the plan would be loaded")
def test_plans_are_skipped_with_the_reason_where_tensorrt_is_missing(repo):
    add_plan_model(repo)
    messages = []
    loaded = Repository.load(repo, log=messages.append)
    assert set(loaded.models) == {"se", "sam"}
    (skipped,) = loaded.unavailable
    assert skipped.name == "se_trt" and "deploykit[trt]" in skipped.reason
    assert any("skipping model 'se_trt'" in m for m in messages)
    assert {"name": "se_trt", "version": "", "state": "UNAVAILABLE", "reason": skipped.reason} in loaded.index()
    with pytest.raises(ProtocolError) as err:
        loaded.get("se_trt")
    assert err.value.status == 503 and "unavailable" in err.value.message
    # a repository of plans only: nothing can be served here, which is a missing dependency (exit 3)
    only_plans = repo.parent / "plans"
    add_plan_model(only_plans)
    with pytest.raises(MissingDependency) as err:
        Repository.load(only_plans)
    assert err.value.exit_code == 3 and "se_trt" in err.value.one_line()


def test_hidden_directories_are_ignored(repo):
    shutil.copytree(repo / "se", repo / ".staging-se")
    assert set(Repository.load(repo).models) == {"se", "sam"}
