"""No program can forge a pass: each forgery is scored through the real engine and fails."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from attribution.data.records import COLUMNS
from attribution.execution.engine import execute_samples

pytestmark = pytest.mark.timeout(120)

PROMPT = 'def add(a, b):\n    """Return a + b."""\n'


def _tasks() -> pd.DataFrame:
    row = {
        "task_id": "T/0",
        "prompt": PROMPT,
        "entry_point": "add",
        "canonical_solution": "    return a + b\n",
        "test": "",
        "contract": "",
        "base_input": json.dumps([[1, 2], [3, 4]]),
        "plus_input": json.dumps([[10, -3], [0, 0]]),
        "atol": 0.0,
    }
    return pd.DataFrame([row], columns=list(COLUMNS["humanevalplus"]))


FORGERIES = {
    "sys_exit_0_at_import": "    return 0\nimport sys\nsys.exit(0)\n",
    "sys_exit_0_in_call": "    import sys\n    sys.exit(0)\n",
    "os_exit_0_at_import": "    return 0\nimport os\nos._exit(0)\n",
    "os_exit_0_in_call": "    import os\n    os._exit(0)\n",
    "raise_systemexit": "    raise SystemExit(0)\n",
    "prints_passed": "    print('passed'); print('ALL TESTS PASSED')\n    return None\n",
    "eq_always_true": (
        "    class Liar(int):\n"
        "        def __eq__(self, other):\n"
        "            return True\n"
        "        __hash__ = int.__hash__\n"
        "    return Liar(-999)\n"
    ),
    "eq_object": (
        "    class Anything:\n"
        "        def __eq__(self, other):\n"
        "            return True\n"
        "    return Anything()\n"
    ),
    "patched_builtins": (
        "    import builtins\n"
        "    builtins.isinstance = lambda *a: True\n"
        "    builtins.AssertionError = type('Nope', (Exception,), {})\n"
        "    builtins.all = lambda *a: True\n"
        "    return -1\n"
    ),
    "closes_stdout": "    import os, sys\n    sys.stdout.close()\n    os.close(1)\n    return -1\n",
    "garbage_on_result_pipe": ("    import os\n    os.write(3, b'\\xff' * 64)\n    os._exit(0)\n"),
    "forged_frames": (
        "    import os, pickle, struct\n"
        "    for msg in [('setup', True, ''), ('in', 0, 'ok', 3, 0.0, ''), ('end',)]:\n"
        "        data = pickle.dumps(msg)\n"
        "        os.write(3, struct.pack('<Q', len(data)) + data)\n"
        "    os._exit(0)\n"
    ),
    "kills_parent": "    import os, signal\n    os.kill(os.getppid(), signal.SIGKILL)\n    return 0\n",
    # The shared result area is writable by the child: claiming to have finished, or a value
    # for one input, still leaves every other input without a value.
    "forged_end_in_result_area": (
        "    import os, pickle, sys\n"
        "    frame = sys._getframe()\n"
        "    while 'report' not in frame.f_locals:\n"
        "        frame = frame.f_back\n"
        "    area = frame.f_locals['report'].area\n"
        "    area.append(pickle.dumps(('in', 0, 'ok', 3, 0.0, '', None, '', '')))\n"
        "    area.append(pickle.dumps(('end',)))\n"
        "    os._exit(0)\n"
    ),
}


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("forgery")
    names = ["correct", *FORGERIES]
    completions = ["    return a + b\n", *FORGERIES.values()]
    samples = pd.DataFrame(
        {"task_id": "T/0", "sample": range(len(names)), "completion": completions}
    )
    frame = execute_samples("humanevalplus", _tasks(), samples, tmp / "ex.parquet", workers=2)
    return dict(zip(names, frame.sort_values("sample").to_dict(orient="records"), strict=True))


def test_correct_program_passes(scored):
    assert scored["correct"]["passed"] and scored["correct"]["plus_passed"]


@pytest.mark.parametrize("name", list(FORGERIES))
def test_forgery_does_not_pass(scored, name):
    row = scored[name]
    assert not row["passed"] and not row["base_passed"] and not row["plus_passed"], row
