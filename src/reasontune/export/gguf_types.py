"""What llama.cpp's quantizer actually wrote, read back from the file, and recorded in its metadata.

The quantizer takes `--tensor-type` patterns in order (the first that matches a name wins) and then still falls
back to a legacy type where a tensor's rows do not fit the asked type's block, so what a file holds is known only
after it is written. `record_written_types` reads the tensors back with gguf's GGUFReader, says which types the
matrices got (and, for a k-quant, which types the tensors too narrow for it got and who asked for them), and
rewrites the file's metadata with that (read_header / set_string_kv: the header only, the tensor bytes copied as
they are): the model card's GGUF section repeats those keys (llamacpp.quantize_note).
"""

from __future__ import annotations

import logging
import re
import struct
from collections import Counter
from pathlib import Path

from reasontune.export.llamacpp import K_QUANTS, KV_FALLBACK, KV_TYPES, QK_K

logger = logging.getLogger(__name__)


def matrix_types(path: str | Path) -> dict[str, tuple[int, str]]:
    """{tensor name: (row width, ggml type name)} of the file's 2-D tensors, as written."""
    import gguf

    return {name: (dims[0], gguf.GGMLQuantizationType(kind).name)
            for name, dims, kind in read_header(path)["tensors"] if len(dims) == 2}


def _asker(name: str, patterns: dict[str, str], user: dict[str, str], fallback: str) -> str:
    """Who asked for the type of a tensor the k-quants cannot take: the first pattern llama.cpp matched."""
    for pattern, kind in patterns.items():
        if re.search(pattern, name):
            return f"--gguf-tensor-type {pattern}={kind}" if pattern in user else f"--gguf-fallback {fallback}"
    return "llama.cpp's own choice"


def written_types_kv(mats: dict[str, tuple[int, str]], kind: str, patterns: dict[str, str],
                     user: dict[str, str], fallback: str) -> dict[str, str]:
    """The metadata that says what `mats` (matrix_types of the written file) holds: KV_TYPES always; for a k-quant
    with rows not a multiple of QK_K, KV_FALLBACK with those tensors' types and who asked for each.
    `patterns` is what the quantizer was given ({regex: type}, in order), `user` the user's part of it."""
    def counted(counter: Counter) -> str:
        return ", ".join(f"{n} {what}" for what, n in sorted(counter.items(), key=lambda kv: (-kv[1], kv[0])))

    kv = {KV_TYPES: f"{len(mats)} matrices as written: {counted(Counter(t for _, t in mats.values()))}"}
    narrow = {n: wt for n, wt in mats.items() if wt[0] % QK_K}
    if kind in K_QUANTS and narrow:
        cols = ", ".join(str(w) for w in sorted({w for w, _ in narrow.values()}))
        by = Counter(f"{t} ({_asker(n, patterns, user, fallback)})" for n, (_, t) in narrow.items())
        kv[KV_FALLBACK] = (f"{len(narrow)} of {len(mats)} matrices have rows {cols} wide, not a multiple of {QK_K} "
                           f"as {kind}'s k-quant types need; as written: {counted(by)}")
    return kv


# ---- a GGUF header, read and rewritten without parsing the vocabulary --------------------------------------
# gguf's GGUFReader builds numpy views of every token and merge (measured 38 s for SmolLM2's file on a loaded
# 2-core CPU); these walk the same layout (GGUF v2/v3, little-endian) with struct and keep the key/value bytes.
_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9


def _skip(buf, off: int, vtype: int) -> int:
    """The offset after a value of `vtype` at `off`."""
    if vtype == _STRING:
        return off + 8 + struct.unpack_from("<Q", buf, off)[0]
    if vtype == _ARRAY:
        sub, n = struct.unpack_from("<IQ", buf, off)
        off += 12
        if sub in _SCALARS:
            return off + n * struct.calcsize(_SCALARS[sub])
        for _ in range(n):
            off = _skip(buf, off, sub)
        return off
    return off + struct.calcsize(_SCALARS[vtype])


def _string(buf, off: int) -> tuple[str, int]:
    n = struct.unpack_from("<Q", buf, off)[0]
    return bytes(buf[off + 8:off + 8 + n]).decode(), off + 8 + n


def read_header(path: str | Path) -> dict:
    """{"version", "kv": {key: (start, end) byte span of the whole entry}, "strings": {key: value} for the string
    keys, "alignment", "tensors": [(name, dims, ggml type id)], "infos": (start, end) of the tensor infos,
    "data": offset of the tensor data}."""
    import mmap

    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        magic, version, n_tensors, n_kv = struct.unpack_from("<4sIQQ", buf, 0)
        if magic != b"GGUF" or version not in (2, 3):
            raise ValueError(f"{path}: not a little-endian GGUF v2/v3 file (magic {magic!r}, version {version})")
        off, kv, strings, alignment = 24, {}, {}, 32
        for _ in range(n_kv):
            start = off
            key, off = _string(buf, off)
            vtype = struct.unpack_from("<I", buf, off)[0]
            if vtype == _STRING:
                strings[key] = _string(buf, off + 4)[0]
            if key == "general.alignment":
                alignment = struct.unpack_from("<" + _SCALARS[vtype], buf, off + 4)[0]
            off = _skip(buf, off + 4, vtype)
            kv[key] = (start, off)
        tensors, infos_start = [], off
        for _ in range(n_tensors):
            name, off = _string(buf, off)
            n_dims = struct.unpack_from("<I", buf, off)[0]
            dims = list(struct.unpack_from(f"<{n_dims}Q", buf, off + 4))
            kind = struct.unpack_from("<I", buf, off + 4 + 8 * n_dims)[0]
            off += 4 + 8 * n_dims + 4 + 8  # dims, type, data offset
            tensors.append((name, dims, kind))
    return {"version": version, "kv": kv, "strings": strings, "alignment": alignment, "tensors": tensors,
            "infos": (infos_start, off), "data": -(-off // alignment) * alignment}


def set_string_kv(path: str | Path, kv: dict[str, str]) -> Path:
    """Rewrite a GGUF file with the string keys `kv` set (replaced where present, else added last), every other
    key's bytes and the tensor infos and data as they were (the data's offsets are relative to its start, which
    is realigned); written aside, then renamed."""
    import shutil

    path = Path(path)
    head = read_header(path)
    tmp = path.with_name(path.name + ".kv.tmp")

    def enc(text: str) -> bytes:
        raw = text.encode()
        return struct.pack("<Q", len(raw)) + raw

    with open(path, "rb") as src, open(tmp, "wb") as dst:
        def copy(start: int, end: int) -> None:
            src.seek(start)
            dst.write(src.read(end - start))

        kept = [span for key, span in head["kv"].items() if key not in kv]
        dst.write(struct.pack("<4sIQQ", b"GGUF", head["version"], len(head["tensors"]), len(kept) + len(kv)))
        for span in kept:
            copy(*span)
        for key, value in kv.items():
            dst.write(enc(key) + struct.pack("<I", _STRING) + enc(value))
        copy(*head["infos"])
        dst.write(b"\0" * (-dst.tell() % head["alignment"]))
        src.seek(head["data"])
        shutil.copyfileobj(src, dst, 1 << 24)
    tmp.replace(path)
    return path


def record_written_types(path: str | Path, kind: str, patterns: dict[str, str], user: dict[str, str] | None,
                         fallback: str) -> dict[str, str]:
    """Read the quantized file back and write what it holds into its metadata (see written_types_kv)."""
    kv = written_types_kv(matrix_types(path), kind, patterns, user or {}, fallback)
    set_string_kv(path, kv)
    for value in kv.values():
        logger.info("GGUF %s: %s", kind, value)
    return kv


def quantize_recorded(src: str | Path, dst: str | Path, kind: str, widths: dict[str, int], imatrix: dict | None,
                      user: dict[str, str] | None, fallback: str) -> dict[str, str]:
    """llama.cpp's quantizer on `src` with the user's --gguf-tensor-type patterns first, then the fallback's
    (llamacpp.fallback_overrides on the {GGUF name: row width} `widths`), and the written types recorded in `dst`."""
    from reasontune.export.llamacpp import fallback_overrides, quantize

    patterns = fallback_overrides(widths, kind, fallback, user=user)
    quantize(src, dst, kind, imatrix=imatrix, tensor_types=patterns)
    return record_written_types(dst, kind, patterns, user, fallback)
