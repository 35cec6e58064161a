"""PyTorch's own distributed tests over oxccl.

torch ships the body of its distributed test suite in the wheel
(`torch.testing._internal.distributed.distributed_test`, the `_DistTestBase` that
`test/distributed/test_distributed_spawn.py` runs for gloo, nccl and ucc). This runs that
same class with BACKEND=oxccl: every test spawns WORLD_SIZE ranks that join through a file
store and call `init_process_group("oxccl")`. Tests that name the backends they cover
(gloo, nccl, ucc), need CUDA or a feature list oxccl is not on skip themselves.

    BACKEND=oxccl WORLD_SIZE=2 $VENV/bin/python python/torch/tests/torch_suite.py [-k NAME] [-v]

Needs `expecttest` beside torch (torch's test utilities import it). At 2 ranks, torch
2.15: 285 tests, 58 pass, 7 are skipped here as unsupported (below), the rest skip
themselves (CUDA, other backends' features); about 5 minutes on 2 cores. It prints one
line, `torch_suite at N ranks (T tests, S skipped): P passed, F failed`.
"""

import os
import tempfile
import unittest

os.environ.setdefault("BACKEND", "oxccl")
os.environ.setdefault("WORLD_SIZE", "2")
os.environ.setdefault("TEMP_DIR", tempfile.mkdtemp(prefix="oxccl-torch-suite-"))
# A test that hangs ends here, not after torch's default of 300 s.
os.environ.setdefault("DISTRIBUTED_TESTS_DEFAULT_TIMEOUT", "120")

import oxccl_torch  # noqa: E402,F401  registers the backend, in every spawned rank too
from torch.testing._internal.distributed.distributed_test import (  # noqa: E402
    DistributedTest,
    TestDistBackend,
)


# What oxccl does not do, by design, and says so with an error (docs/pytorch.md): these
# tests are skipped with the reason; every other test must pass or skip itself.
UNSUPPORTED = {
    "recv from any source: oxccl matches messages by peer": [
        "test_send_recv_any_source",
        "test_send_recv_any_source_autograd_profiler",
        "test_send_recv_any_source_torch_profiler",
    ],
    "send/recv tags other than 0: oxccl matches a pair's messages in issue order": [
        "test_send_recv_with_tag",
        "test_send_recv_with_tag_autograd_profiler",
        "test_send_recv_with_tag_torch_profiler",
    ],
    "DDP's logging names a third-party backend 'custom' (torch's ProcessGroup, not oxccl)": [
        "test_ddp_logging_data_cpu",
    ],
}


class TestDistBackendWithSpawn(TestDistBackend, DistributedTest._DistTestBase):
    """torch's `_DistTestBase`, each test in freshly spawned ranks (as upstream's spawn run)."""

    def setUp(self):
        super().setUp()
        self._spawn_processes()


def _skip(reason):
    @unittest.skip(reason)
    def test(self):
        pass

    return test


for _reason, _names in UNSUPPORTED.items():
    for _name in _names:
        setattr(TestDistBackendWithSpawn, _name, _skip("oxccl: " + _reason))


def main():
    """Runs the suite (unittest's arguments: -k NAME, -v) and prints one summary line."""
    # unittest's own runner: torch's run_tests wants xmlrunner for reports under CI.
    prog = unittest.main(exit=False)
    r = prog.result
    bad = len(r.failures) + len(r.errors) + len(r.unexpectedSuccesses)
    skipped = len(r.skipped)
    print(
        "torch_suite at %s ranks (%d tests, %d skipped): %d passed, %d failed"
        % (os.environ["WORLD_SIZE"], r.testsRun, skipped, r.testsRun - skipped - bad, bad)
    )
    return 0 if bad == 0 and r.testsRun > 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
