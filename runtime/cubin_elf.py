"""Minimal reader of a cubin's ELF section table.

Why: current ptxas no longer prints constant-bank usage (``cmem[B]``) with ``-v``; the
cubin records it as the size of the sections ``.nv.constant<B>.<kernel>`` (bank 0 is
the kernel's parameter bank, driver-reserved words included). Only the section header
table is read; nothing here interprets code.
"""

from __future__ import annotations

import re
import struct

from tilewarp.pipeline.errors import DeviceError

_CONST_SECTION = re.compile(r"^\.nv\.constant(\d+)\.(.+)$")


def section_sizes(cubin: bytes) -> dict[str, int]:
    """Section name -> size in bytes, for a little-endian ELF64 (every cubin is one)."""
    if cubin[:4] != b"\x7fELF" or len(cubin) < 64:
        raise DeviceError(f"not an ELF file ({len(cubin)} bytes, starts {cubin[:4]!r})")
    if cubin[4] != 2 or cubin[5] != 1:
        raise DeviceError("cubin is not a little-endian ELF64 file")
    shoff, = struct.unpack_from("<Q", cubin, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", cubin, 0x3A)
    if shentsize < 64 or shoff + shnum * shentsize > len(cubin) or shstrndx >= shnum:
        raise DeviceError("cubin section header table is truncated or malformed")

    def header(i: int) -> tuple[int, int, int]:
        base = shoff + i * shentsize
        name_off, = struct.unpack_from("<I", cubin, base)
        offset, size = struct.unpack_from("<QQ", cubin, base + 24)
        return name_off, offset, size

    _, str_off, str_size = header(shstrndx)
    strtab = cubin[str_off:str_off + str_size]
    sizes: dict[str, int] = {}
    for i in range(1, shnum):
        name_off, _, size = header(i)
        end = strtab.find(b"\0", name_off)
        sizes[strtab[name_off:end].decode("utf-8", "replace")] = size
    return sizes


def constant_banks(cubin: bytes) -> dict[str, dict[int, int]]:
    """Kernel (mangled name) -> {constant bank: bytes}, from ``.nv.constant<B>.<kernel>``."""
    banks: dict[str, dict[int, int]] = {}
    for name, size in section_sizes(cubin).items():
        m = _CONST_SECTION.match(name)
        if m:
            banks.setdefault(m.group(2), {})[int(m.group(1))] = size
    return banks
