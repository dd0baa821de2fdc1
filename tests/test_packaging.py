"""goloop as users get it: scripts/check-package.sh builds the sdist and the
wheel, checks their contents and metadata (twine check --strict), repairs the
wheel to a manylinux tag, installs it into a fresh venv with no compiler on
PATH, builds the sdist in another, and runs a small goloop program in both.

It takes minutes (two compilations, PyPI installs), so it runs only when
GOLOOP_TEST_PACKAGING=1 is set; `make package` runs the script alone."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "check-package.sh"

pytestmark = pytest.mark.skipif(
    os.environ.get("GOLOOP_TEST_PACKAGING") != "1",
    reason="builds, repairs and installs the sdist and the wheel (minutes): "
    "set GOLOOP_TEST_PACKAGING=1, or run `make package`",
)


def test_sdist_and_wheel_build_install_and_run():
    r = subprocess.run(["bash", str(SCRIPT), sys.executable],
                       capture_output=True, text=True, timeout=1200)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "check-package: all passed" in r.stdout, r.stdout
    assert "manylinux" in r.stdout, r.stdout
