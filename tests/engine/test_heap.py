"""The allocator setting every smpc process makes at start-up."""

from __future__ import annotations

import subprocess
import sys

import pytest

from parties.engine import heap


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_large_buffers_are_reused_and_the_setting_can_be_turned_off() -> None:
    code = ("from parties.engine import heap; import sys; "
            "sys.exit(0 if heap.keep_freed_memory() else 1)")
    on = subprocess.run([sys.executable, "-c", code], check=False)
    off = subprocess.run([sys.executable, "-c", code], check=False,
                         env={"SMPC_KEEP_FREED_MEMORY": "0", "PATH": ""})
    assert on.returncode == 0  # glibc took the setting
    assert off.returncode == 1  # and the switch leaves malloc alone
    assert heap.ENV == "SMPC_KEEP_FREED_MEMORY"
