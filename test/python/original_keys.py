#!/usr/bin/env python3
"""The original LMCache's cache-key strings, standard library only, written from its documented behaviour.

Not from our C# code: from lmcache/utils.py as the reference document describes it (section 2) and as its
CacheEngineKey reads in the versions described there.

  mid/late 2025 (the era LMCache.NET writes):  fmt@model@world_size@worker_id@{chunk_hash:x}@dtype[@layer_id][@name%value...]
  2026 (newest, no fmt field):                 model@world_size@worker_id@{chunk_hash:x}@dtype[@layer_id][@name%value...]

The hash is a Python int rendered with format(int, 'x'): lower-case, no padding, a leading '-' when negative.
from_string parses it back with int(text, 16), so every spelling of one value (leading zeros, '-0') is one key, and
the original server indexes its entries by that parsed identity.

Used as a module by original_server.py and lm_client.py; as a script it checks a Redis server:

  python3 original_keys.py redis HOST PORT    (stdin: one line per chunk 'fmt model world_size worker_id hash64 dtype length')

For each chunk it computes the key text the original computes for that hash value and checks, over a plain RESP
socket, that '<key>kv_bytes' holds `length` bytes and '<key>metadata' is the original's 28-byte RemoteMetadata
(7 little-endian int32, the first being the length), optionally followed by our 16-byte checksum trailer.
"""
import socket
import struct
import sys

# The dtype tokens of the original's TORCH_DTYPE_TO_STR_DTYPE (mid-2025 and newest tables together).
DTYPES = {
    "half", "bfloat16", "float", "double", "fp8", "fp8_e4m3", "fp8_e5m2", "int8", "uint8", "int16", "int32", "int64",
    "bool", "fp8_e4m3fn", "fp8_e4m3fnuz", "fp8_e5m2fnuz",
}


def key_2025(fmt, model, world_size, worker_id, chunk_hash, dtype, tags=(), layer=None):
    """CacheEngineKey.to_string() of the mid/late-2025 original (LayerCacheEngineKey when layer is given)."""
    text = "%s@%s@%d@%d@%s@%s" % (fmt, model, world_size, worker_id, format(chunk_hash, "x"), dtype)
    if layer is not None:
        text += "@%d" % layer
    if tags:
        text += "@" + "@".join("%s%%%s" % (k, v) for k, v in tags)
    return text


def key_2026(model, world_size, worker_id, chunk_hash, dtype, tags=(), layer=None):
    """CacheEngineKey.to_string() of the newest original: the 2025 form without the fmt field."""
    return key_2025("", model, world_size, worker_id, chunk_hash, dtype, tags, layer)[1:]


def _tags(parts, what):
    result = []
    for part in parts:
        kv = part.split("%", 1)
        if len(kv) != 2:
            raise ValueError("Invalid key string: %s (%s)" % (part, what))
        result.append((kv[0], kv[1]))
    return tuple(result) or None


def parse_2025(text):
    """CacheEngineKey.from_string of the mid/late-2025 original (what its server applies to every request's key):
    its identity tuple, or ValueError/KeyError as the original raises them. That from_string takes no layer keys (a
    layer id is not a name%value tag), and the server closes the connection on any of these errors."""
    parts = text.split("@")
    if len(parts) < 6:
        raise ValueError("Invalid key string: %s" % text)
    if parts[5] not in DTYPES:
        raise KeyError(parts[5])
    return (parts[0], parts[1], int(parts[2]), int(parts[3]), int(parts[4], 16), parts[5], None, _tags(parts[6:], text))


def parse_2026(text):
    """parse_cache_key of the newest original (no fmt field)."""
    parts = text.strip().split("@")
    layer = None
    if len(parts) >= 6 and parts[5].isdigit():
        layer, tag_parts = int(parts[5]), parts[6:]
    else:
        if len(parts) < 5:
            raise ValueError("Invalid key string: %s" % text)
        tag_parts = parts[5:]
    if parts[4] not in DTYPES:
        raise KeyError(parts[4])
    return ("", parts[0], int(parts[1]), int(parts[2]), int(parts[3], 16), parts[4], layer, _tags(tag_parts, text))


class Resp:
    """A minimal RESP2 client over a plain socket (standard library only)."""

    def __init__(self, host, port):
        self.sock = socket.create_connection((host, port), timeout=30)
        self.file = self.sock.makefile("rb")

    def command(self, *args):
        out = [b"*%d\r\n" % len(args)]
        for arg in args:
            data = arg if isinstance(arg, bytes) else str(arg).encode("utf-8")
            out.append(b"$%d\r\n%s\r\n" % (len(data), data))
        self.sock.sendall(b"".join(out))
        return self._read()

    def _read(self):
        line = self.file.readline()
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RuntimeError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = self.file.read(n + 2)
            return data[:-2]
        if kind == b"*":
            return [self._read() for _ in range(int(rest))]
        raise RuntimeError("unexpected RESP reply %r" % line)

    def close(self):
        self.file.close()
        self.sock.close()


def check(condition, what):
    if not condition:
        raise AssertionError("FAILED: " + what)


def redis_check(host, port):
    redis = Resp(host, port)
    count = 0
    for line in sys.stdin:
        fields = line.split()
        if not fields:
            continue
        fmt, model, world_size, worker_id, hash64, dtype, length = fields
        key = key_2025(fmt, model, int(world_size), int(worker_id), int(hash64, 16), dtype)
        check(redis.command("STRLEN", key + "kv_bytes") == int(length),
              "the original's key %skv_bytes holds the %s-byte payload" % (key, length))
        metadata = redis.command("GET", key + "metadata")
        check(metadata is not None and len(metadata) in (28, 44), "the original's key %smetadata exists (28 or 44 bytes)" % key)
        check(struct.unpack_from("<i", metadata)[0] == int(length), "the metadata of %s names the payload length" % key)
        print("found %s" % key)
        count += 1
    redis.close()
    print("OK redis %d" % count)


def main():
    if len(sys.argv) == 4 and sys.argv[1] == "redis":
        redis_check(sys.argv[2], int(sys.argv[3]))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    try:
        sys.exit(main())
    except AssertionError as e:
        print(e, file=sys.stderr)
        sys.exit(1)
