"""Build step of the `oxccl` package (metadata: pyproject.toml).

`build_py` also runs `cargo build --release -p oxccl-ffi` in the repository this file sits in
(its parent directory) and copies the resulting liboxccl.so to oxccl/lib/ in the wheel, where
oxccl/_lib.py looks first; it writes oxccl/_version.py with the ffi crate's version. The wheel
is tagged for the platform (py3-none-<platform>), since it carries a native library but no
Python extension module.

Knobs: CARGO (the cargo to run; default `cargo` on PATH, else ~/.cargo/bin/cargo),
CARGO_TARGET_DIR (honoured through cargo's own report of where it wrote the library).
"""

import json
import os
import re
import shutil
import subprocess

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.dist import Distribution

try:  # setuptools >= 70.1 carries bdist_wheel itself
    from setuptools.command.bdist_wheel import bdist_wheel
except ImportError:  # older setuptools: the `wheel` package's
    from wheel.bdist_wheel import bdist_wheel

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
FFI_TOML = os.path.join(ROOT, "ffi", "Cargo.toml")
LIB_NAME = "liboxccl.so"


def _need_repo():
    if not os.path.isfile(FFI_TOML):
        raise SystemExit(
            "oxccl: %s not found: the Python package is built from a checkout of the oxccl "
            "repository (pip install ./python at its root), not from a copy of python/ alone"
            % FFI_TOML
        )


def cargo_version():
    """The `version` of ffi/Cargo.toml's [package] table (the C library's version)."""
    _need_repo()
    section = None
    with open(FFI_TOML, encoding="utf-8") as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            m = re.match(r"^\[([^\]]+)\]$", line)
            if m:
                section = m.group(1).strip()
                continue
            m = re.match(r'^version\s*=\s*"([^"]+)"$', line)
            if m and section == "package":
                return m.group(1)
    raise SystemExit("oxccl: no [package] version in %s" % FFI_TOML)


def _cargo():
    cargo = os.environ.get("CARGO") or shutil.which("cargo")
    if not cargo:
        home = os.path.join(os.path.expanduser("~"), ".cargo", "bin", "cargo")
        cargo = home if os.path.isfile(home) else None
    if not cargo:
        raise SystemExit(
            "oxccl: cargo not found: building the Python package compiles liboxccl from Rust; "
            "install a Rust toolchain (https://rustup.rs) or set CARGO to cargo's path"
        )
    return cargo


def build_liboxccl():
    """Runs cargo on the ffi crate and returns the path of the liboxccl.so it wrote."""
    _need_repo()
    cmd = [_cargo(), "build", "--release", "-p", "oxccl-ffi",
           "--message-format=json-render-diagnostics"]
    if os.path.isfile(os.path.join(ROOT, "Cargo.lock")):
        cmd.insert(3, "--locked")
    print("oxccl: building liboxccl: %s (in %s)" % (" ".join(cmd), ROOT), flush=True)
    # Diagnostics go to stderr (shown to the user); stdout carries cargo's JSON messages.
    proc = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, check=False)
    if proc.returncode != 0:
        raise SystemExit("oxccl: `%s` failed (exit %d)" % (" ".join(cmd), proc.returncode))
    found = None
    for line in proc.stdout.decode("utf-8", "replace").splitlines():
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        target = msg.get("target") or {}
        if (msg.get("reason") == "compiler-artifact" and target.get("name") == "oxccl"
                and "cdylib" in target.get("kind", [])):
            for path in msg.get("filenames", []):
                if os.path.basename(path) == LIB_NAME:
                    found = path
    if not found or not os.path.isfile(found):
        raise SystemExit("oxccl: cargo succeeded but reported no %s" % LIB_NAME)
    return found


VERSION_PY = '''"""The package's version: the ffi crate's, written by setup.py at build time."""

__version__ = "%s"
'''

# Appended to the wheel's copy of oxccl/__init__.py when the source defines no __version__.
INIT_VERSION = '''
# Added by setup.py at build time (the source defines no __version__).
from ._version import __version__  # noqa: E402
'''


class BuildPy(build_py):
    """build_py, plus liboxccl.so and _version.py in the package."""

    def run(self):
        super().run()
        lib = build_liboxccl()
        version = self.distribution.get_version()
        if getattr(self, "editable_mode", False):
            # Editable install: the package is the source folder, whose _lib.py finds the
            # checkout's target/release/liboxccl.so that cargo just wrote.
            pkg = os.path.join(HERE, "oxccl")
            self._write(os.path.join(pkg, "_version.py"), VERSION_PY % version)
            return
        pkg = os.path.join(self.build_lib, "oxccl")
        os.makedirs(os.path.join(pkg, "lib"), exist_ok=True)
        dest = os.path.join(pkg, "lib", LIB_NAME)
        shutil.copyfile(lib, dest)
        os.chmod(dest, 0o755)
        self._write(os.path.join(pkg, "_version.py"), VERSION_PY % version)
        init = os.path.join(pkg, "__init__.py")
        with open(init, encoding="utf-8") as f:
            text = f.read()
        if not re.search(r"^\s*(from\s+\S+\s+import\s+.*)?__version__", text, re.M):
            self._write(init, text + INIT_VERSION)

    @staticmethod
    def _write(path, text):
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)


class BinaryDistribution(Distribution):
    """Platform-specific: the wheel carries liboxccl.so."""

    def has_ext_modules(self):
        return True


class BdistWheel(bdist_wheel):
    """Tags the wheel py3-none-<platform>: native code, but no Python ABI dependence."""

    def get_tag(self):
        _, _, plat = super().get_tag()
        return "py3", "none", plat


setup(
    version=cargo_version(),
    distclass=BinaryDistribution,
    cmdclass={"build_py": BuildPy, "bdist_wheel": BdistWheel},
)
