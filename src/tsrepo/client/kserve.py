"""The KServe v2 HTTP body format with the binary tensor extension: encode requests, decode answers.

Sending them is the transport's job (transport_http.py) or the load loop's (loadgen.py).
"""

from __future__ import annotations

import json

import numpy as np

from tsrepo.dtypes import BY_WIRE, STRING


def encode_infer(
    inputs: dict[str, np.ndarray], outputs: list[str] | None = None, binary_outputs: bool = True
) -> tuple[bytes, int]:
    """A request body: JSON header then raw tensor bytes. Returns (body, header length)."""
    header: dict = {"inputs": []}
    blobs = []
    for name, arr in inputs.items():
        wire = next((d.wire for d in BY_WIRE.values() if d.numpy == str(arr.dtype)), None)
        if arr.dtype == np.object_:
            raw = b"".join(
                len(s).to_bytes(4, "little") + s
                for s in (x if isinstance(x, bytes) else str(x).encode() for x in arr.ravel())
            )
            wire = STRING.wire
        else:
            raw = np.ascontiguousarray(arr).tobytes()
        if wire is None:
            raise ValueError(f"input {name}: dtype {arr.dtype} has no KServe datatype")
        header["inputs"].append(
            {"name": name, "shape": list(arr.shape), "datatype": wire, "parameters": {"binary_data_size": len(raw)}}
        )
        blobs.append(raw)
    if outputs is not None:
        header["outputs"] = [{"name": o, "parameters": {"binary_data": binary_outputs}} for o in outputs]
    else:
        header["parameters"] = {"binary_data_output": binary_outputs}
    head = json.dumps(header, separators=(",", ":")).encode()
    return head + b"".join(blobs), len(head)


def decode_infer(body: bytes, header_length: int | None) -> dict[str, np.ndarray]:
    """Outputs of an infer response (binary or JSON data)."""
    head = json.loads(body[:header_length] if header_length else body)
    offset = header_length or 0
    out = {}
    for o in head.get("outputs", []):
        dtype = BY_WIRE[o["datatype"]]
        size = o.get("parameters", {}).get("binary_data_size")
        if size is not None:
            raw = body[offset : offset + size]
            offset += size
            if dtype is STRING:
                items, i = [], 0
                while i < len(raw):
                    n = int.from_bytes(raw[i : i + 4], "little")
                    items.append(raw[i + 4 : i + 4 + n])
                    i += 4 + n
                arr = np.array(items, dtype=np.object_)
            else:
                arr = np.frombuffer(raw, dtype=dtype.numpy)
        else:
            arr = np.array(o["data"], dtype=dtype.numpy if dtype is not STRING else np.object_)
        out[o["name"]] = arr.reshape(o["shape"])
    return out


def error_text(data: bytes) -> str:
    """Triton's error message from an error answer's body."""
    try:
        return json.loads(data).get("error", data.decode(errors="replace"))
    except (ValueError, AttributeError):
        return data.decode(errors="replace")[:300]
