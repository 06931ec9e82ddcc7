#!/usr/bin/env python3
"""Generates test/Golden/chunk_hashes.json: golden prefix-chained chunk hashes for LMCache.NET.

Standard library only (no cbor2, no vLLM), so it runs anywhere python3 does:

    python3 test/Golden/make_golden.py > test/Golden/chunk_hashes.json

What it computes (the sha256_cbor scheme of vLLM that LMCache.NET implements, reference section 3.3):

* ``NONE_HASH = sha256(cbor(text seed))`` with the seed ``"0"`` (what vLLM computes for ``PYTHONHASHSEED=0``).
* chunk ``i`` covers tokens ``[i*C, min((i+1)*C, n))``; with ``save_unfull_chunk`` off the token list is first
  truncated to a multiple of ``C``.
* ``h_i = sha256(cbor((h_{i-1} as 32 bytes, tokens_i)))``; on the first chunk only, a cache salt enters as a third
  element, a one-element tuple holding the salt text: ``sha256(cbor((h_0, tokens_0, (salt,))))``.

The CBOR encoder below is a minimal canonical (RFC 8949 section 4.2.1, "core deterministic") encoder for the types
the hash needs: unsigned and negative integers, byte strings, text strings and arrays (tuples and lists), every head
in its shortest form. It is written independently of the C# encoder on purpose: the C# test
(``ChunkHashGoldenTests``) compares ``ChunkedTokenDatabase`` output with this file byte for byte, and since this file
was produced by a different process and a different language, it also proves the hashes do not depend on the process.

Cross-checks built in: the script asserts the worked example of the reference (tokens ``[1, 500, 70000]`` encode as
``83 01 19 01 F4 1A 00 01 11 70``) and the CBOR test vectors of RFC 8949 Appendix A that its encoder covers.
"""

import hashlib
import json
import struct
import sys


def _head(major, value):
    """A CBOR head: major type in the top 3 bits, the argument in its shortest form."""
    if value < 0:
        raise ValueError("head argument must be non-negative")
    if value < 24:
        return bytes([(major << 5) | value])
    if value <= 0xFF:
        return bytes([(major << 5) | 24, value])
    if value <= 0xFFFF:
        return bytes([(major << 5) | 25]) + struct.pack(">H", value)
    if value <= 0xFFFFFFFF:
        return bytes([(major << 5) | 26]) + struct.pack(">I", value)
    if value <= 0xFFFFFFFFFFFFFFFF:
        return bytes([(major << 5) | 27]) + struct.pack(">Q", value)
    raise ValueError("integer too large for this encoder")


def cbor(value):
    """Canonical CBOR of ints, bytes, str, and tuples/lists of those."""
    if isinstance(value, bool):
        raise TypeError("booleans are not used by the chunk hash")
    if isinstance(value, int):
        return _head(0, value) if value >= 0 else _head(1, -1 - value)
    if isinstance(value, (bytes, bytearray)):
        return _head(2, len(value)) + bytes(value)
    if isinstance(value, str):
        encoded = value.encode("utf-8")
        return _head(3, len(encoded)) + encoded
    if isinstance(value, (tuple, list)):
        return _head(4, len(value)) + b"".join(cbor(item) for item in value)
    raise TypeError(f"unsupported type {type(value).__name__}")


def sha256(data):
    return hashlib.sha256(data).digest()


def self_check():
    # RFC 8949 Appendix A vectors covered by this encoder.
    vectors = [
        (0, "00"), (1, "01"), (10, "0a"), (23, "17"), (24, "1818"), (25, "1819"), (100, "1864"),
        (1000, "1903e8"), (1000000, "1a000f4240"), (1000000000000, "1b000000e8d4a51000"),
        (18446744073709551615, "1bffffffffffffffff"), (-1, "20"), (-10, "29"), (-100, "3863"), (-1000, "3903e7"),
        (b"", "40"), (b"\x01\x02\x03\x04", "4401020304"), ("", "60"), ("a", "6161"), ("IETF", "6449455446"),
        ("\u00fc", "62c3bc"), ([], "80"), ([1, 2, 3], "83010203"),
        ([1, [2, 3], [4, 5]], "8301820203820405"),
        (list(range(1, 26)), "98190102030405060708090a0b0c0d0e0f101112131415161718181819"),
    ]
    for value, expected in vectors:
        actual = cbor(value).hex()
        assert actual == expected, f"cbor({value!r}) = {actual}, expected {expected}"
    # The worked example of the reference, section 3.3.
    assert cbor([1, 500, 70000]).hex().upper() == "83011901F41A00011170", cbor([1, 500, 70000]).hex()


def chunk_hashes(tokens, chunk_size, save_unfull_chunk, salt, seed):
    none_hash = sha256(cbor(seed))
    keyed = len(tokens) if save_unfull_chunk else len(tokens) - len(tokens) % chunk_size
    previous = none_hash
    chunks = []
    for start in range(0, keyed, chunk_size):
        end = min(start + chunk_size, keyed)
        part = tuple(tokens[start:end])
        if start == 0 and salt is not None:
            encoded = cbor((previous, part, (salt,)))
        else:
            encoded = cbor((previous, part))
        previous = sha256(encoded)
        chunk = {"start": start, "end": end, "hash": previous.hex()}
        if start == 0:
            chunk["cbor"] = encoded.hex()   # the full encoding of the first chunk, for debugging a mismatch
        chunks.append(chunk)
    return none_hash, chunks


def main():
    self_check()
    cases = []

    def case(name, tokens, chunk_size, save_unfull_chunk=False, salt=None, seed="0"):
        none_hash, chunks = chunk_hashes(tokens, chunk_size, save_unfull_chunk, salt, seed)
        cases.append({
            "name": name,
            "seed": seed,
            "none_hash": none_hash.hex(),
            "chunk_size": chunk_size,
            "save_unfull_chunk": save_unfull_chunk,
            "salt": salt,
            "tokens": tokens,
            "chunks": chunks,
        })

    small = list(range(10))                                      # ids < 24: one-byte items
    case("small ids, C=4, partial tail dropped", small, 4)
    case("small ids, C=4, partial tail kept", small, 4, save_unfull_chunk=True)
    case("ids >= 24 (0x18 items)", [24, 25, 100, 255, 23, 200, 30, 99], 4)
    case("ids >= 256 (0x19 items)", [256, 1000, 65535, 300, 4096, 512, 777, 60000], 4)
    case("ids >= 65536 (0x1A items)", [65536, 70000, 128000, 2147483647, 1, 500, 70000, 151643], 4)
    case("worked example [1, 500, 70000] kept as a partial chunk", [1, 500, 70000], 4, save_unfull_chunk=True)
    case("salt on the first chunk", small, 4, salt="tenant-a")
    case("another salt", small, 4, salt="tenant-b")
    case("non-ASCII salt (UTF-8 text)", small, 4, salt="t\u00e9nant-\u00fc")
    case("seed 12345", small, 4, seed="12345")
    case("C=30: 0x98 array header", [(i * 7919) % 200000 for i in range(75)], 30, save_unfull_chunk=True)
    long_tokens = [(i * 104729 + 17) % 152064 for i in range(600)]
    case("C=256: 0x99 array header, tail dropped", long_tokens, 256)
    case("C=256: 0x99 array header, tail kept", long_tokens, 256, save_unfull_chunk=True)
    case("C=256 with a salt", long_tokens, 256, salt="s")
    case("fewer tokens than one chunk, tail dropped", [5, 6, 7], 4)

    json.dump({
        "generator": "test/Golden/make_golden.py (python3 standard library only)",
        "scheme": "sha256_cbor: NONE_HASH = sha256(cbor(seed text)); h_i = sha256(cbor((h_{i-1}, tokens_i[, (salt,)])))",
        "cases": cases,
    }, sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
