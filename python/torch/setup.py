"""Build step of oxccl-torch (metadata: pyproject.toml): compiles csrc/ into oxccl_torch._C
with torch.utils.cpp_extension against the installed torch and this repository's
ffi/include/oxccl.h. The extension does not link liboxccl: it dlopens the library the `oxccl`
package loads (see csrc/api.h), so both share one copy and no rpath is needed.

oxccl is pinned to this repository's version. torch is deliberately not a declared dependency:
pip would then resolve the installed torch's own requirements and pull in the CUDA packages a
CPU-only install leaves out (about 0.5 GB); instead _version.py records the torch version the
extension was compiled against, and `import oxccl_torch` refuses another one (torch's C++ ABI
changes between releases).
"""

import os
import re

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
FFI = os.path.join(ROOT, "ffi")

try:
    import torch
    from torch.utils.cpp_extension import BuildExtension, CppExtension
except ImportError as e:
    raise SystemExit(
        "oxccl-torch compiles against the torch installed in the target environment, and "
        "`import torch` failed there (%s): install torch first" % e
    )

from setuptools import setup


def cargo_version():
    """The version of ffi/Cargo.toml's [package] (the same as the oxccl package's)."""
    path = os.path.join(FFI, "Cargo.toml")
    if not os.path.isfile(path):
        raise SystemExit("oxccl-torch: %s not found: build from a checkout of the oxccl "
                         "repository (pip install ./python/torch at its root)" % path)
    section = None
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            m = re.match(r"^\[([^\]]+)\]$", line)
            if m:
                section = m.group(1).strip()
                continue
            m = re.match(r'^version\s*=\s*"([^"]+)"$', line)
            if m and section == "package":
                return m.group(1)
    raise SystemExit("oxccl-torch: no [package] version in %s" % path)


VERSION = cargo_version()
with open(os.path.join(HERE, "oxccl_torch", "_version.py"), "w", encoding="utf-8") as f:
    f.write('"""Written by setup.py at build time."""\n\n'
            '__version__ = "%s"\n'
            '# The torch this extension was compiled against.\n'
            'torch_version = "%s"\n' % (VERSION, torch.__version__))

sources = [os.path.join("csrc", n) for n in
           ("api.cpp", "backend.cpp", "collectives.cpp", "module.cpp")]

setup(
    version=VERSION,
    install_requires=["oxccl==%s" % VERSION],
    ext_modules=[
        CppExtension(
            "oxccl_torch._C",
            sources,
            include_dirs=[os.path.join(FFI, "include"), os.path.join(HERE, "csrc")],
            extra_compile_args=["-O2", "-Wall", "-Wno-unused-parameter"],
            libraries=["dl"],
        )
    ],
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
)
