"""On-disk cache of compiled cubins, so a second start does not recompile.

A megakernel compile takes tens of seconds; the engine starts far more often than its
sources change. An entry is three files named by the cache key (a sha256 computed by
nvrtc_build from sources, options, arch and NVRTC version):

    <key>.cubin   the binary
    <key>.ptx     the PTX, only when the build kept it
    <key>.json    metadata: log, report, options, the cubin's sha256; written last

Each file is written to a temporary name and renamed into place, so readers and
concurrent writers never see half a file; the JSON is the commit record. An entry whose
JSON is unreadable or whose cubin does not match its recorded hash is treated as absent
(and rebuilt over). Failing to write the cache only logs a warning: the build result
is still good.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

FORMAT = 1


def default_cache_dir() -> Path:
    """``$TILEWARP_CACHE_DIR``, else ``$XDG_CACHE_HOME/tilewarp/cubin`` (``~/.cache/...``)."""
    env = os.environ.get("TILEWARP_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "tilewarp" / "cubin"


@dataclass(frozen=True)
class CacheEntry:
    """What a cache hit gives back."""

    cubin: bytes
    ptx: str | None
    meta: dict[str, Any]


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class CubinCache:
    """A directory of cache entries."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def paths(self, key: str) -> tuple[Path, Path, Path]:
        return (self.root / f"{key}.cubin", self.root / f"{key}.ptx", self.root / f"{key}.json")

    def load(self, key: str, *, need_ptx: bool = False) -> CacheEntry | None:
        """The entry for `key`, or None if absent, corrupt, or lacking PTX when asked for."""
        cubin_path, ptx_path, meta_path = self.paths(key)
        if not meta_path.exists():
            return None
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            if meta.get("format") != FORMAT or meta.get("key") != key:
                raise ValueError("format or key mismatch")
            cubin = cubin_path.read_bytes()
            if hashlib.sha256(cubin).hexdigest() != meta["cubin_sha256"]:
                raise ValueError("cubin does not match its recorded sha256")
            ptx = None
            if meta.get("ptx_sha256"):
                raw = ptx_path.read_bytes()
                if hashlib.sha256(raw).hexdigest() != meta["ptx_sha256"]:
                    raise ValueError("ptx does not match its recorded sha256")
                ptx = raw.decode("utf-8")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring corrupt cubin cache entry %s: %s", meta_path, exc)
            return None
        if need_ptx and ptx is None:
            return None
        return CacheEntry(cubin, ptx, meta)

    def store(self, key: str, cubin: bytes, ptx: str | None, meta: dict[str, Any]) -> None:
        """Write an entry; a failure is logged, never raised (the build itself succeeded)."""
        cubin_path, ptx_path, meta_path = self.paths(key)
        record = dict(meta, format=FORMAT, key=key,
                      cubin_sha256=hashlib.sha256(cubin).hexdigest(), ptx_sha256=None)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            _atomic_write(cubin_path, cubin)
            if ptx is not None:
                raw = ptx.encode("utf-8")
                _atomic_write(ptx_path, raw)
                record["ptx_sha256"] = hashlib.sha256(raw).hexdigest()
            _atomic_write(meta_path, json.dumps(record, indent=1, sort_keys=True).encode("utf-8"))
        except OSError as exc:
            log.warning("could not write cubin cache entry under %s: %s", self.root, exc)
