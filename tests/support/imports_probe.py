"""`python -m tests.support.imports_probe MODULE ARGS...` runs MODULE as `python -m
MODULE ARGS...` would, and prints every module the process loaded, as one line
`LOADED <json list>`, when it exits (the tests of what a process imports)."""

from __future__ import annotations

import atexit
import json
import runpy
import sys


def _report() -> None:
    print("LOADED " + json.dumps(sorted(sys.modules)), flush=True)


if __name__ == "__main__":
    module = sys.argv[1]
    sys.argv = [module, *sys.argv[2:]]
    atexit.register(_report)
    runpy.run_module(module, run_name="__main__", alter_sys=True)
