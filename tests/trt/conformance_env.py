"""The real TensorRT Python bindings, importable on a machine without TensorRT or a GPU.

NVIDIA publishes the bindings as small standalone wheels on PyPI (`tensorrt_cu12_bindings` for 10.x,
`tensorrt_cu13_bindings` for 11.x); the libraries they link against are not on PyPI. The bindings'
`tensorrt.so` needs `libnvinfer.so.N`, `libnvonnxparser.so.N` and `libnvinfer_plugin.so.N`, and from them
only nine C entry points. Three stub libraries compiled here with gcc export those (returning NULL / 0), so
`import tensorrt_bindings` succeeds and every class, method, property and enum member of the real API can be
inspected and spec'd. Nothing can be built or run: calling into C++ returns an error.

Layout (git-ignored, reused between runs):

    .trt-conformance/wheels/<wheel>.whl
    .trt-conformance/<version>/site/tensorrt_bindings/...   the unpacked wheel (goes on PYTHONPATH)
    .trt-conformance/<version>/lib/libnvinfer.so.N ...       the stubs (go on LD_LIBRARY_PATH)
    .trt-conformance/<version>/ready.json                    what was prepared, from which wheel

Run `python tests/trt/conformance_env.py` to prepare both versions (CI does this before pytest; the tests
also prepare on demand). `--require` exits 1 when a version cannot be prepared. Standard library only.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]

# API generation -> (PyPI package, exact version). The task pins these; bump them together with the tests.
BINDINGS = {
    "10": ("tensorrt_cu12_bindings", "10.16.1.11"),
    "11": ("tensorrt_cu13_bindings", "11.4.0.106"),
}

# The C entry points tensorrt.so imports from the TensorRT libraries (checked against the .so with nm).
KNOWN_SYMBOLS = (
    "createInferBuilder_INTERNAL", "createInferRefitter_INTERNAL", "createInferRuntime_INTERNAL",
    "createNvOnnxParserRefitter_INTERNAL", "createNvOnnxParser_INTERNAL", "getBuilderPluginRegistry",
    "getNvOnnxParserVersion", "getPluginRegistry", "initLibNvInferPlugins",
)
TRT_LIBRARIES = ("libnvinfer", "libnvonnxparser", "libnvinfer_plugin")


class Unavailable(Exception):
    """The bindings cannot be prepared here; the message is the skip reason."""


@dataclass(frozen=True)
class BindingsEnv:
    """One prepared API version: where its bindings and stub libraries are."""

    key: str
    package: str
    version: str
    site_dir: Path
    lib_dir: Path

    def environ(self, base: dict | None = None) -> dict:
        """`base` (default os.environ) with the bindings on PYTHONPATH and the stubs on LD_LIBRARY_PATH."""
        env = dict(os.environ if base is None else base)
        paths = (str(self.site_dir), str(REPO_ROOT), env.get("PYTHONPATH", ""))
        env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
        env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (str(self.lib_dir), env.get("LD_LIBRARY_PATH", "")) if p)
        return env


def cache_root() -> Path:
    return Path(os.environ.get("DEPLOYKIT_TRT_CONFORMANCE_DIR", REPO_ROOT / ".trt-conformance"))


def _run(cmd: list[str], *, timeout: float = 180, env: dict | None = None) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except FileNotFoundError as exc:
        raise Unavailable(f"{cmd[0]} is not installed") from exc
    except subprocess.TimeoutExpired as exc:
        raise Unavailable(f"{' '.join(cmd[:4])} ... took over {timeout:.0f} s") from exc


def _tail(text: str, lines: int = 3) -> str:
    return " | ".join(text.strip().splitlines()[-lines:])


def fetch_wheel(package: str, version: str, wheels: Path) -> Path:
    """The wheel for this interpreter and platform, downloaded from PyPI unless already cached."""
    pattern = f"{package}-{version}-*.whl"
    found = sorted(wheels.glob(pattern))
    if found:
        return found[0]
    wheels.mkdir(parents=True, exist_ok=True)
    result = _run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                   "--disable-pip-version-check", "--quiet", "--dest", str(wheels), f"{package}=={version}"])
    found = sorted(wheels.glob(pattern))
    if result.returncode != 0 or not found:
        raise Unavailable(f"could not download {package}=={version} from PyPI ({_tail(result.stderr) or 'no wheel'})")
    return found[0]


def _needed_sonames(so_path: Path, major: str) -> list[str]:
    """The TensorRT sonames tensorrt.so is linked against (readelf), or the documented names without it."""
    if shutil.which("readelf"):
        out = _run(["readelf", "-d", str(so_path)]).stdout
        names = re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", out)
        wanted = [n for n in names if n.split(".so")[0] in TRT_LIBRARIES]
        if wanted:
            return wanted
    return [f"{lib}.so.{major}" for lib in TRT_LIBRARIES]


def _symbols_to_stub(so_path: Path) -> list[str]:
    """KNOWN_SYMBOLS, plus any new TensorRT-looking import a later wheel may add (nm -D, when present)."""
    symbols = list(KNOWN_SYMBOLS)
    if shutil.which("nm"):
        out = _run(["nm", "-D", "--undefined-only", str(so_path)]).stdout
        undefined = {line.split()[-1] for line in out.splitlines() if line.strip().startswith("U ")}
        for name in sorted(undefined):
            if "@" not in name and name not in symbols and re.search(r"Infer|NvOnnx|Plugin|Refitter", name):
                symbols.append(name)
    return symbols


def _library_for(symbol: str) -> str:
    if "NvOnnxParser" in symbol:
        return "libnvonnxparser"
    if symbol.startswith("initLibNvInferPlugins"):
        return "libnvinfer_plugin"
    return "libnvinfer"


def compile_stubs(sonames: list[str], symbols: list[str], lib_dir: Path) -> None:
    """One stub library per soname, each exporting its share of `symbols` as functions returning 0."""
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        raise Unavailable("gcc is not installed (needed to compile the TensorRT stub libraries)")
    lib_dir.mkdir(parents=True, exist_ok=True)
    for soname in sonames:
        lib = soname.split(".so")[0]
        mine = [s for s in symbols if _library_for(s) == lib]
        source = lib_dir / f"{lib}_stub.c"
        source.write_text(
            "/* Stub of " + soname + " for API conformance tests: the entry points exist, nothing works. */\n"
            + "".join(f"void *{name}(void) {{ return 0; }}\n" for name in mine)
        )
        result = _run([gcc, "-shared", "-fPIC", "-O0", f"-Wl,-soname,{soname}", "-o", str(lib_dir / soname), str(source)])
        if result.returncode != 0:
            raise Unavailable(f"gcc could not build the {soname} stub ({_tail(result.stderr)})")


def prepare(key: str, root: Path | None = None) -> BindingsEnv:
    """Fetch, unpack and stub one API version (cached); raises Unavailable with the reason."""
    if not sys.platform.startswith("linux") or platform.machine() not in ("x86_64", "aarch64"):
        raise Unavailable(f"the bindings wheels are for Linux x86_64/aarch64, not {sys.platform} {platform.machine()}")
    package, version = BINDINGS[key]
    root = root or cache_root()
    base = root / version
    env = BindingsEnv(key, package, version, base / "site", base / "lib")
    marker = base / "ready.json"
    if marker.is_file():
        try:
            ready = json.loads(marker.read_text())
        except ValueError:
            ready = {}
        if ready.get("version") == version and all((env.lib_dir / s).is_file() for s in ready.get("sonames", [])):
            return env

    wheel = fetch_wheel(package, version, root / "wheels")
    if env.site_dir.exists():
        shutil.rmtree(env.site_dir)
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(env.site_dir)
    so_path = env.site_dir / "tensorrt_bindings" / "tensorrt.so"
    if not so_path.is_file():
        candidates = sorted((env.site_dir / "tensorrt_bindings").glob("tensorrt*.so"))
        if not candidates:
            raise Unavailable(f"{wheel.name} has no tensorrt_bindings/tensorrt*.so")
        so_path = candidates[0]
    sonames = _needed_sonames(so_path, version.split(".")[0])
    symbols = _symbols_to_stub(so_path)
    compile_stubs(sonames, symbols, env.lib_dir)

    probe = _run([sys.executable, "-c", "import tensorrt_bindings as t; print(t.__version__)"],
                 env=env.environ(), timeout=60)
    if probe.returncode != 0 or probe.stdout.strip() != version:
        raise Unavailable(f"the {version} bindings do not import with the stubs ({_tail(probe.stderr or probe.stdout)})")
    marker.write_text(json.dumps({
        "package": package, "version": version, "wheel": wheel.name,
        "wheel_sha256": hashlib.sha256(wheel.read_bytes()).hexdigest(), "sonames": sonames, "symbols": symbols,
    }, indent=2) + "\n")
    return env


def prepare_all(root: Path | None = None) -> dict[str, BindingsEnv | Unavailable]:
    results: dict[str, BindingsEnv | Unavailable] = {}
    for key in BINDINGS:
        try:
            results[key] = prepare(key, root)
        except Unavailable as exc:
            results[key] = exc
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=None, help="cache directory (default: .trt-conformance/)")
    parser.add_argument("--require", action="store_true", help="exit 1 if a version cannot be prepared")
    args = parser.parse_args(argv)
    results = prepare_all(args.cache)
    for key, result in results.items():
        if isinstance(result, BindingsEnv):
            print(f"TensorRT {result.version} bindings ready: "
                  f"PYTHONPATH={result.site_dir} LD_LIBRARY_PATH={result.lib_dir}")
        else:
            print(f"TensorRT {BINDINGS[key][1]} bindings unavailable: {result}")
    return 1 if args.require and any(isinstance(r, Unavailable) for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
