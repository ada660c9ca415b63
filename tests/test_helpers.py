"""The test helpers' own behaviour, where a wrong helper would hide a failure."""
import pytest

from tests.helpers import run_script

HANGS = """import time
print('started', flush=True)
def waiting_forever():
    time.sleep(120)
waiting_forever()
"""


def test_a_script_that_hangs_fails_the_test_with_its_python_stack():
    """A hung run (e.g. a torchrun rank waiting in a collective) fails with where each process stood."""
    with pytest.raises(pytest.fail.Exception) as failure:
        run_script("-c", HANGS, timeout=3)
    message = str(failure.value)
    assert "ran past 3 s" in message and "started" in message
    assert "most recent call first" in message and "waiting_forever" in message


def test_a_script_that_ends_returns_its_output_and_code():
    result = run_script("-c", "import sys; print('out'); print('err', file=sys.stderr); sys.exit(3)")
    assert (result.returncode, result.stdout, result.stderr) == (3, "out\n", "err\n")
