"""A GGUF file's header read by walking it: the metadata (less the tokenizer's arrays) and the tensors' types.

gguf-py's GGUFReader turns every vocabulary string into numpy views, seconds for SmolLM2's 49,152 tokens and 48,900
merges; sizing a model to serve (llm/llamacpp.resident_bytes) and counting an export's tensor types
(train/export.gguf_tensor_types) need neither, so the tokenizer's values are skipped unread (~20 ms a file).
"""

from __future__ import annotations

import struct
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hangjia.core.errors import HangjiaError

# GGUF's scalar value types → struct formats; 8 is a string, 9 an array (gguf-py's GGUFValueType).
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9


@dataclass(frozen=True)
class GgufHeader:
    metadata: dict[str, Any]
    """Every key-value pair but the tokenizer's (`tokenizer.*`)."""
    tensor_types: dict[str, int]
    """How many tensors of each type (F32, F16, Q8_0, Q4_K, ...), most common first."""


def read_gguf_header(path: Path) -> GgufHeader:
    import gguf

    with open(path, "rb") as f:

        def read(fmt: str) -> Any:
            return struct.unpack(fmt, f.read(struct.calcsize(fmt)))[0]

        def value(kind: int, keep: bool) -> Any:
            if kind == _STRING:
                size = read("<Q")
                return f.read(size).decode("utf-8") if keep else f.seek(size, 1)
            if kind == _ARRAY:
                inner, count = read("<I"), read("<Q")
                if inner in _SCALARS and not keep:
                    return f.seek(count * struct.calcsize(_SCALARS[inner]), 1)
                return [value(inner, keep) for _ in range(count)]
            return read(_SCALARS[kind])

        if f.read(4) != b"GGUF" or read("<I") not in (2, 3):
            raise HangjiaError(f"{path} is not a little-endian GGUF file of version 2 or 3.")
        n_tensors, n_kv = read("<Q"), read("<Q")
        metadata = {}
        for _ in range(n_kv):
            key = value(_STRING, keep=True)
            keep = not key.startswith("tokenizer.")
            kept = value(read("<I"), keep)
            if keep:
                metadata[key] = kept
        types: Counter[str] = Counter()
        for _ in range(n_tensors):
            value(_STRING, keep=False)  # the name
            f.seek(8 * read("<I"), 1)  # the dimensions
            types[gguf.GGMLQuantizationType(read("<I")).name] += 1
            f.seek(8, 1)  # the offset
    return GgufHeader(metadata, dict(types.most_common()))
