"""Install the test suite's AWS request check in a child process, once it imports botocore.

Importing botocore costs a child process that never calls AWS (a job's script) a sixth of a
second, so the check waits for botocore.handlers to be imported by someone else.
"""
from __future__ import annotations

import importlib.abc
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


class _InstallAfterBotocore(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):  # noqa: ANN001 - the finder protocol
        if name != "botocore.handlers":
            return None
        sys.meta_path.remove(self)
        spec = next(spec for finder in sys.meta_path
                    if (spec := getattr(finder, "find_spec", lambda *a: None)(name, path, target)) is not None)
        load = spec.loader.exec_module

        def exec_module(module):  # noqa: ANN001
            load(module)
            for folder in (str(TESTS), str(TESTS.parent)):
                if folder not in sys.path:
                    sys.path.append(folder)
            import aws_request_check

            aws_request_check.install()

        spec.loader.exec_module = exec_module
        return spec


sys.meta_path.insert(0, _InstallAfterBotocore())
