"""The on-disk cubin cache: round trip, corruption, and never failing a build."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from tilewarp.runtime.cubin_cache import CubinCache, default_cache_dir

KEY = "ab" * 32
CUBIN = b"\x7fELF" + bytes(range(64))


def test_round_trip_with_and_without_ptx(tmp_path: Path) -> None:
    cache = CubinCache(tmp_path / "c")
    assert cache.load(KEY) is None
    cache.store(KEY, CUBIN, None, {"log": "ptxas info", "compile_seconds": 1.5})
    hit = cache.load(KEY)
    assert hit is not None and hit.cubin == CUBIN and hit.ptx is None
    assert hit.meta["log"] == "ptxas info" and hit.meta["compile_seconds"] == 1.5
    assert cache.load(KEY, need_ptx=True) is None  # asked for PTX the entry lacks
    cache.store(KEY, CUBIN, ".version 9.0", {"log": ""})
    assert cache.load(KEY, need_ptx=True).ptx == ".version 9.0"
    assert not list((tmp_path / "c").glob("*.tmp"))


@pytest.mark.parametrize("damage", ["cubin", "json", "key", "ptx"])
def test_damaged_entries_are_ignored(tmp_path: Path, damage: str,
                                     caplog: pytest.LogCaptureFixture) -> None:
    cache = CubinCache(tmp_path)
    cache.store(KEY, CUBIN, ".version 9.0", {"log": ""})
    cubin_path, ptx_path, meta_path = cache.paths(KEY)
    if damage == "cubin":
        cubin_path.write_bytes(CUBIN[:10])
    elif damage == "json":
        meta_path.write_text('{"format": 1, "key"')
    elif damage == "key":
        meta = json.loads(meta_path.read_text())
        meta_path.write_text(json.dumps(dict(meta, key="cd" * 32)))
    else:
        ptx_path.unlink()
    with caplog.at_level(logging.WARNING):
        assert cache.load(KEY) is None
    assert "corrupt cubin cache entry" in caplog.text


def test_unwritable_cache_only_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with caplog.at_level(logging.WARNING):
        CubinCache(blocker / "sub").store(KEY, CUBIN, None, {"log": ""})
    assert "could not write cubin cache entry" in caplog.text


def test_default_dir_honours_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TILEWARP_CACHE_DIR", str(tmp_path / "x"))
    assert default_cache_dir() == tmp_path / "x"
    monkeypatch.delenv("TILEWARP_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "tilewarp" / "cubin"
