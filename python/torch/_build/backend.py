"""PEP 517 backend of oxccl-torch: setuptools', run where the target environment's torch is
importable.

pip builds in an isolated environment that hides the target environment's site-packages. The
extension must compile against the torch it will run with (torch's C++ ABI changes between
releases), so this appends the installing interpreter's own site-packages (sysconfig's paths:
the venv pip installs into) to sys.path, after the isolated ones, and its scripts folder to
PATH (ninja). With --no-build-isolation both are there already and nothing changes.
"""

import os
import sys
import sysconfig

for _key in ("purelib", "platlib"):
    _path = sysconfig.get_paths()[_key]
    if _path not in sys.path:
        sys.path.append(_path)
_scripts = sysconfig.get_paths()["scripts"]
if _scripts not in os.environ.get("PATH", "").split(os.pathsep):
    os.environ["PATH"] = os.environ.get("PATH", "") + os.pathsep + _scripts

from setuptools.build_meta import *  # noqa: E402,F401,F403
