"""Safetensors checkpoints in the published MiMo layout: ``config.json``, shards
``model-0000i-of-0000N.safetensors`` and ``model.safetensors.index.json``.

Writing streams: tensors arrive one at a time (a multi-GB random model is generated
lazily) and at most about one shard is held in memory. Reading is lazy: shards are
memory-mapped through ``safetensors.safe_open`` and only headers are parsed up front, so
a loader can check names, shapes and dtypes of a whole model without reading its data.
Weights load only through safetensors; pickle (``torch.load``) is never used.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Callable, Iterable

import safetensors
import safetensors.torch
import torch

from .config import ModelConfig, human
from .errors import CheckpointError, ConfigError
from .presets import preset
from .random_model import random_tensors
from .weights import Weights

log = logging.getLogger("tilewarp.checkpoint")

CONFIG = "config.json"
INDEX = "model.safetensors.index.json"
SINGLE = "model.safetensors"
_TMP_PREFIX = ".tmp-shard-"

#: safetensors dtype strings tilewarp reads. Anything else (e.g. "F8_E8M0": MiMo stores
#: E8M0 scales as U8) is rejected rather than guessed at.
DTYPES: dict[str, torch.dtype] = {
    "BF16": torch.bfloat16, "F16": torch.float16, "F32": torch.float32, "F64": torch.float64,
    "U8": torch.uint8, "I8": torch.int8, "I16": torch.int16, "I32": torch.int32, "I64": torch.int64,
    "BOOL": torch.bool, "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
}

Progress = Callable[[str], None]


def shard_name(i: int, n: int) -> str:
    return f"model-{i:05d}-of-{n:05d}.safetensors"


# ====================================================================== write
def _holds_checkpoint(d: Path) -> bool:
    return any(p.name in (CONFIG, INDEX) or p.suffix == ".safetensors" for p in d.iterdir())


def _old_checkpoint_files(d: Path, keep: set[Path]) -> list[Path]:
    return [p for p in d.iterdir() if p.is_file() and p not in keep
            and (p.name in (CONFIG, INDEX) or p.suffix == ".safetensors")]


def _owned(t: torch.Tensor) -> torch.Tensor:
    """A contiguous CPU tensor owning its storage: safetensors refuses tensors that share
    memory, and a view would pin (and save) its whole base buffer."""
    t = t.detach().to("cpu").contiguous()
    if t.untyped_storage().nbytes() != t.numel() * t.element_size():
        t = t.clone()
    return t


def save_checkpoint(cfg: ModelConfig, tensors: Iterable[tuple[str, torch.Tensor]], out_dir: str | Path, *,
                    max_shard_bytes: int = 2 << 30, progress: Progress | None = None,
                    overwrite: bool = False) -> Path:
    """Write `tensors` as a sharded checkpoint of `cfg`; returns the directory.

    Tensors are written in the order given, a new shard starting when the next tensor would
    push the current one past `max_shard_bytes` (a larger tensor gets a shard of its own).
    Shards are written under temporary names and renamed once their count is known;
    ``config.json`` and the index come last, so a crash never leaves a directory that looks
    like a complete checkpoint. The tensors are not checked against `cfg` here: the loader
    does that, and tests rely on writing deliberately bad checkpoints.
    """
    if max_shard_bytes <= 0:
        raise CheckpointError(f"save_checkpoint: max_shard_bytes must be positive, got {max_shard_bytes}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if _holds_checkpoint(out) and not overwrite:
        raise CheckpointError(f"{out}: already holds a checkpoint; pass overwrite=True to replace it")
    say = progress or (lambda msg: None)

    tmp: list[Path] = []
    weight_map: dict[str, int] = {}   # name -> shard number (1-based)
    total = 0
    buf: dict[str, torch.Tensor] = {}
    buf_bytes = 0

    def flush() -> None:
        nonlocal buf, buf_bytes
        path = out / f"{_TMP_PREFIX}{len(tmp) + 1:05d}.safetensors"
        tmp.append(path)
        safetensors.torch.save_file(buf, str(path), metadata={"format": "pt"})
        say(f"wrote shard {len(tmp)} ({human(buf_bytes, 'B')}, {len(buf)} tensors)")
        buf, buf_bytes = {}, 0

    try:
        for name, t in tensors:
            if name in weight_map:
                raise CheckpointError(f"save_checkpoint: tensor {name} given twice")
            t = _owned(t)
            nbytes = t.numel() * t.element_size()
            if buf and buf_bytes + nbytes > max_shard_bytes:
                flush()
            buf[name] = t
            buf_bytes += nbytes
            total += nbytes
            weight_map[name] = len(tmp) + 1
        if buf or not tmp:
            flush()
        n = len(tmp)
        for old in _old_checkpoint_files(out, keep=set(tmp)):
            old.unlink()
        for i, path in enumerate(tmp, start=1):
            os.replace(path, out / shard_name(i, n))
    except BaseException:
        for path in tmp:
            path.unlink(missing_ok=True)
        raise
    index = {"metadata": {"total_size": total},
             "weight_map": {name: shard_name(i, n) for name, i in weight_map.items()}}
    _write_json(out / INDEX, index)
    _write_json(out / CONFIG, cfg.to_hf_dict())
    say(f"saved {cfg.name}: {len(weight_map)} tensors, {human(total, 'B')} in {n} shard(s) to {out}")
    return out


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n")
    os.replace(tmp, path)


# ======================================================================= read
class SafetensorsSource:
    """A lazy `TensorSource` over a checkpoint directory (sharded with an index, or a
    single ``model.safetensors``). Opening parses only the shard headers and checks that
    they agree with the index; tensor data is read by `get`, one tensor at a time."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_dir():
            raise CheckpointError(f"{self.path}: not a checkpoint directory")
        index_path = self.path / INDEX
        if index_path.exists():
            weight_map = _read_index(index_path)
        elif (self.path / SINGLE).exists():
            weight_map = None
        else:
            raise CheckpointError(f"{self.path}: holds neither {INDEX} nor {SINGLE}")
        shards = sorted(set(weight_map.values())) if weight_map is not None else [SINGLE]
        self._handles: dict[str, Any] = {}
        self._where: dict[str, str] = {}   # tensor -> shard file name
        for shard in shards:
            handle = self._open(shard, index_path)
            self._handles[shard] = handle
            for name in handle.keys():
                if name in self._where:
                    raise CheckpointError(f"{self.path}: tensor {name} is stored twice, in {self._where[name]} "
                                          f"and {shard}")
                self._where[name] = shard
        if weight_map is not None:
            self._check_index(weight_map, index_path)
            unused = sorted(p.name for p in self.path.glob("*.safetensors") if p.name not in self._handles)
            if unused:
                log.warning("%s: ignoring %d safetensors file(s) the index does not name: %s",
                            self.path, len(unused), unused[:3])

    def _open(self, shard: str, index_path: Path) -> Any:
        file = self.path / shard
        if not file.is_file():
            raise CheckpointError(f"{index_path}: names shard {shard}, but {file} does not exist")
        try:
            return safetensors.safe_open(str(file), framework="pt")
        except safetensors.SafetensorError as e:
            raise CheckpointError(f"{file}: not a readable safetensors file ({e})") from None

    def _check_index(self, weight_map: dict[str, str], index_path: Path) -> None:
        for name, shard in weight_map.items():
            if self._where.get(name) != shard:
                raise CheckpointError(f"{index_path}: maps tensor {name} to {shard}, which does not hold it")
        stray = sorted(set(self._where) - set(weight_map))
        if stray:
            raise CheckpointError(f"{self.path / self._where[stray[0]]}: holds tensor {stray[0]} that {INDEX} "
                                  f"does not list ({len(stray)} such tensor(s))")

    def keys(self) -> Iterable[str]:
        return self._where.keys()

    def file_of(self, name: str) -> Path:
        return self.path / self._where[name]

    def meta(self, name: str) -> tuple[tuple[int, ...], torch.dtype]:
        """Shape and dtype from the shard header: no tensor data is read."""
        sl = self._handles[self._where[name]].get_slice(name)
        code = sl.get_dtype()
        dtype = DTYPES.get(code)
        if dtype is None:
            raise CheckpointError(f"{self.file_of(name)}: tensor {name} has dtype {code!r}, which tilewarp does "
                                  f"not read (supported: {sorted(DTYPES)})")
        return tuple(int(d) for d in sl.get_shape()), dtype

    def get(self, name: str) -> torch.Tensor:
        shard = self._where[name]
        try:
            return self._handles[shard].get_tensor(name)
        except safetensors.SafetensorError as e:
            raise CheckpointError(f"{self.path / shard}: cannot read tensor {name} ({e})") from None

    def close(self) -> None:
        for handle in self._handles.values():
            handle.__exit__(None, None, None)
        self._handles.clear()

    def __enter__(self) -> "SafetensorsSource":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _read_index(index_path: Path) -> dict[str, str]:
    try:
        index = json.loads(index_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{index_path}: not valid JSON ({e})") from None
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise CheckpointError(f"{index_path}: needs a non-empty 'weight_map' object")
    for name, shard in weight_map.items():
        # A shard is a plain file next to the index: never a path that leaves the directory.
        if not isinstance(shard, str) or Path(shard).name != shard or shard in ("", ".", ".."):
            raise CheckpointError(f"{index_path}: tensor {name} maps to {shard!r}, not a file name in the "
                                  "checkpoint directory")
    return weight_map


# ================================================================ entry points
def load_checkpoint(path: str | Path, *, strict_config: bool = True) -> Weights:
    """Open a checkpoint directory: config parsed, tensors checked structurally, data lazy."""
    path = Path(path)
    cfg_path = path / CONFIG
    try:
        cfg = ModelConfig.from_json(cfg_path, strict=strict_config)
    except ConfigError as e:
        msg = str(e)
        raise ConfigError(msg if msg.startswith(str(cfg_path)) else f"{cfg_path}: {msg}") from None
    return Weights(cfg, SafetensorsSource(path), where=str(path))


def make_checkpoint(cfg_or_preset_name: ModelConfig | str, out_dir: str | Path, *, seed: int = 0,
                    progress: Progress | None = None, max_shard_bytes: int = 2 << 30,
                    overwrite: bool = False) -> Path:
    """Write a random model (see `random_model`) of a config or preset name."""
    cfg = preset(cfg_or_preset_name) if isinstance(cfg_or_preset_name, str) else cfg_or_preset_name
    return save_checkpoint(cfg, random_tensors(cfg, seed), out_dir, max_shard_bytes=max_shard_bytes,
                           progress=progress, overwrite=overwrite)
