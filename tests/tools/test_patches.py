"""CI, no GPU: every change waiting in patches/ for its GPU run still applies to this tree, so
the session that runs it spends no device time on a rebase (patches/README.md)."""

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PATCHES = sorted((ROOT / "patches").glob("*.patch"))


@pytest.mark.skipif(shutil.which("git") is None or not (ROOT / ".git").exists(), reason="needs a git checkout")
@pytest.mark.parametrize("patch", PATCHES, ids=[p.name for p in PATCHES])
def test_each_waiting_patch_applies_to_the_tree(patch):
    done = subprocess.run(["git", "apply", "--check", str(patch)], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, f"{patch.name} no longer applies; rebase it (patches/README.md):\n{done.stderr}"


def test_the_readme_lists_every_waiting_patch():
    readme = (ROOT / "patches" / "README.md").read_text()
    assert all(p.name in readme for p in PATCHES)
