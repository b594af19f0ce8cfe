"""Seeded random mutations for the C++ fuzz test (tests/test_cpp.py::test_fuzz_mp_infer): of a sidecar (values,
types, deleted and added fields, raw text) and of image bytes (truncation, bit flips, header edits). Each
returns the mutated bytes and a short description, so a failure names the case that caused it."""
import json
import random
import struct
import zlib

# Values that break types, ranges, patterns and names. No NaN / Infinity: Python's json reads those tokens and
# C++'s does not, a difference that is not a bug in either (both refuse them wherever a number is checked).
VALUES = [-1, 0, 1, 3, 63, 64, 65, 128, 2 ** 31, 2 ** 63, 2 ** 64 + 1, 1e308, -1e-9, 0.5, 64.0, 10, True, False,
          None, "", "banana", "seg", "../x.so", "/abs/x.so", ".hidden", "x" * 5000, "\u00e9\u2028", "64", [], {},
          [1, 2, 3], [64, 64, 64], {"a": 1}, {"name": "x.so", "sha256": "0" * 64}]


def paths(node, prefix=()):
    """Every path (a tuple of keys / indices) into a JSON document, the root included."""
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from paths(value, prefix + (key,))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from paths(value, prefix + (i,))


def _get(node, path):
    for key in path:
        node = node[key]
    return node


def _name(path) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".") or "<root>"


def _retyped(value):
    """The same value in another JSON type (64 -> 64.0 -> "64", a list -> an object...)."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return float(value)
    if isinstance(value, float):
        return int(value) if value == int(value) and abs(value) < 2 ** 53 else str(value)
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return {str(i): v for i, v in enumerate(value)}
    return [value]


def mutate_sidecar(rng: random.Random, meta: dict) -> tuple[bytes, str]:
    """A mutated copy of the sidecar `meta`, as the bytes of the file, and what was done."""
    doc = json.loads(json.dumps(meta))
    kind = rng.choice(["value", "value", "retype", "delete", "add", "text"])
    if kind == "text":
        text = bytearray(json.dumps(doc, indent=2).encode())
        how = rng.choice(["truncate", "flip", "duplicate key"])
        if how == "truncate":
            cut = rng.randrange(len(text))
            return bytes(text[:cut]), f"text truncated at {cut}"
        if how == "flip":
            i = rng.randrange(len(text))
            text[i] ^= 1 << rng.randrange(8)
            return bytes(text), f"text bit flip at {i}"
        key = rng.choice(sorted(doc))
        return (b'{"' + key.encode() + b'": ' + json.dumps(rng.choice(VALUES)).encode() + b", " + bytes(text[1:]),
                f"duplicate key {key} (first)")
    every = list(paths(doc))
    if kind == "add":
        parents = [p for p in every if isinstance(_get(doc, p), (dict, list))]
        path = rng.choice(parents)
        parent, value = _get(doc, path), rng.choice(VALUES)
        if isinstance(parent, dict):
            parent[f"zz_{rng.randrange(100)}"] = value
        else:
            parent.append(value)
        return json.dumps(doc).encode(), f"added {value!r:.40} to {_name(path)}"
    path = rng.choice([p for p in every if p])
    parent, key = _get(doc, path[:-1]), path[-1]
    if kind == "delete":
        del parent[key]
        return json.dumps(doc).encode(), f"deleted {_name(path)}"
    old = parent[key]
    parent[key] = _retyped(old) if kind == "retype" else rng.choice(VALUES)
    return json.dumps(doc).encode(), f"{_name(path)}: {old!r:.40} -> {parent[key]!r:.40}"


def _png_chunks(data: bytes):
    """(offset, length, type) of each chunk of a PNG."""
    pos = 8
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        yield pos, length, kind
        pos += 12 + length


def _png_header_edit(rng: random.Random, data: bytearray) -> str:
    """A new IHDR field (size, bit depth, colour type, interlace), its CRC fixed or not."""
    field, fmt, offset = rng.choice([("width", ">I", 16), ("height", ">I", 20), ("bit depth", ">B", 24),
                                     ("colour type", ">B", 25), ("interlace", ">B", 28)])
    if fmt == ">I":
        value = rng.choice([0, 1, 32, 63, 65, 4000, 5793, 10000, 2 ** 31 - 1, 2 ** 32 - 1])
    else:
        value = rng.choice([0, 1, 2, 3, 4, 6, 8, 16, 255])
    data[offset:offset + struct.calcsize(fmt)] = struct.pack(fmt, value)
    fixed = rng.random() < 0.8
    if fixed:
        data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return f"PNG IHDR {field} = {value}" + ("" if fixed else " (CRC not fixed)")


def jpeg_frame(data) -> int:
    """Offset of a JPEG's frame header (an SOFn marker: baseline, progressive...), found segment by segment."""
    pos = 2
    while pos + 4 <= len(data) and data[pos] == 0xFF:
        marker = data[pos + 1]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            return pos
        pos += 2 + struct.unpack(">H", data[pos + 2:pos + 4])[0]
    raise ValueError("no JPEG frame header")


def _jpeg_header_edit(rng: random.Random, data: bytearray) -> str:
    """A new frame header (SOFn) field: size, precision or component count."""
    sof = jpeg_frame(data)
    field, fmt, offset = rng.choice([("height", ">H", 5), ("width", ">H", 7), ("precision", ">B", 4),
                                     ("components", ">B", 9)])
    value = rng.choice([0, 1, 3, 12, 16, 255, 5793, 10000, 65535] if fmt == ">H" else [0, 1, 2, 3, 4, 8, 12, 16, 255])
    value = min(value, 255) if fmt == ">B" else value
    data[sof + offset:sof + offset + struct.calcsize(fmt)] = struct.pack(fmt, value)
    return f"JPEG frame {field} = {value}"


def mutate_image(rng: random.Random, data: bytes) -> tuple[bytes, str]:
    """A mutated copy of a PNG or JPEG file's bytes, and what was done."""
    out = bytearray(data)
    png = data.startswith(b"\x89PNG")
    kind = rng.choice(["truncate", "flip", "flip", "header", "header", "chunk length" if png else "marker"])
    if kind == "truncate":
        cut = rng.randrange(len(out))
        return bytes(out[:cut]), f"truncated at {cut} of {len(out)}"
    if kind == "flip":
        flips = [rng.randrange(len(out)) for _ in range(rng.choice([1, 1, 2, 8]))]
        for i in flips:
            out[i] ^= 1 << rng.randrange(8)
        return bytes(out), f"bit flips at {flips}"
    if kind == "header":
        what = (_png_header_edit if png else _jpeg_header_edit)(rng, out)
        return bytes(out), what
    if png:  # a chunk that claims another length
        pos, length, name = rng.choice(list(_png_chunks(data)))
        new = rng.choice([v for v in (0, 1, length + 1, length * 2 + 1, 2 ** 31 - 1, 2 ** 32 - 1) if v != length])
        out[pos:pos + 4] = struct.pack(">I", new)
        return bytes(out), f"PNG {name.decode(errors='replace')} chunk length {length} -> {new}"
    markers = [i for i in range(len(out) - 1) if out[i] == 0xFF and out[i + 1] not in (0x00, 0xFF)]
    i = rng.choice(markers)
    out[i + 1] = rng.choice([0xC0, 0xC2, 0xC4, 0xD9, 0xDA, 0xDB, 0xDD, 0xFE])
    return bytes(out), f"JPEG marker at {i} -> FF{out[i + 1]:02X}"
