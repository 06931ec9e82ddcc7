#!/usr/bin/env python3
"""Writes the golden lm:// messages as Python LMCache packs them (standard library only).

Mirrors lmcache/v1/protocol.py: ClientMetaMessage = struct "iiiiiiiii150s" (command, length, fmt, dtype, location,
shape0..3, key space-padded to 150 bytes) and ServerMetaMessage = struct "iiiiiiiii" (code, length, fmt, dtype,
shape0..3, location). Usage: python3 test/python/make_golden.py > test/LMCache.Protocol.Tests/Golden/lm_messages.txt
"""
import struct

KEY = "vllm@meta-llama/Llama-3.1-8B-Instruct@1@0@2783dafec1b4e9f0@bfloat16"
KEY5 = "vllm@test/model@1@0@" + "ab" * 32
# HEALTH and LIST name no chunk, but the original server parses every request's key (and closes the connection on an
# empty one): they carry a valid key of the mid/late-2025 form with hash 0 (LmWire.KeylessRequestKey).
KEYLESS = "vllm@lmcache-keyless@1@0@0@half"
SHAPE = (2, 32, 256, 1024)


def request(command, length, fmt, dtype, location, shape, key):
    encoded = key.encode("utf-8")
    assert len(encoded) <= 150
    return struct.pack("iiiiiiiii150s", command, length, fmt, dtype, location, *shape, encoded.ljust(150, b" "))


def reply(code, length, fmt, dtype, shape, location):
    return struct.pack("iiiiiiiii", code, length, fmt, dtype, *shape, location)


messages = [
    ("request put_llama", request(1, 33554432, 1, 3, 0, SHAPE, KEY)),
    ("request get_llama", request(2, 0, 1, 2, 0, (0, 0, 0, 0), KEY)),
    ("request exist_llama", request(3, 0, 1, 2, 0, (0, 0, 0, 0), KEY)),
    ("request list", request(4, 0, 1, 2, 0, (0, 0, 0, 0), KEYLESS)),
    ("request health", request(5, 0, 1, 2, 0, (0, 0, 0, 0), KEYLESS)),
    ("request put_small", request(1, 2048, 1, 3, 0, (2, 2, 4, 64), KEY5)),
    ("request get_small", request(2, 0, 1, 2, 0, (0, 0, 0, 0), KEY5)),
    ("reply hit_llama", reply(200, 33554432, 1, 3, SHAPE, 0)),
    ("reply miss", reply(400, 0, 1, 2, (0, 0, 0, 0), 0)),
    ("reply ok", reply(200, 0, 1, 2, (0, 0, 0, 0), 0)),
]
for name, data in messages:
    print(name, data.hex())
