#!/usr/bin/env python3
"""An independent lm:// client, standard library only, that speaks LMCache's original protocol.

Written from the byte layouts of lmcache/v1/protocol.py (not from our C# code):
  request  ClientMetaMessage  struct "iiiiiiiii150s": command, length, fmt, dtype, location, shape0..3, key (space-padded)
  reply    ServerMetaMessage  struct "iiiiiiiii":     code, length, fmt, dtype, shape0..3, location
Commands PUT=1 (no reply), GET=2, EXIST=3, LIST=4, HEALTH=5; codes 200 = success, 400 = fail.

Usage: python3 lm_client.py HOST PORT SCENARIO
  against our server: basic, concurrent, malformed, readback, spellings, newest, all
  against original_server.py (a stand-in for the original's server): keyless
Prints one line per check and exits non-zero on the first failure. The C# test suite runs it against a real server.
"""
import hashlib
import os
import socket
import struct
import sys
import threading

import original_keys

PUT, GET, EXIST, LIST, HEALTH = 1, 2, 3, 4, 5
SUCCESS, FAIL = 200, 400
REQUEST = struct.Struct("iiiiiiiii150s")
REPLY = struct.Struct("iiiiiiiii")
assert REQUEST.size == 186 and REPLY.size == 36


def make_key(i, model="py/model"):
    """A target-era key string: fmt@model@world_size@worker_id@hash_hex@dtype."""
    return "vllm@%s@1@0@%s@bfloat16" % (model, hashlib.sha256(str(i).encode()).hexdigest()[:16])


def pack_request(command, key, length=0, fmt=1, dtype=2, shape=(0, 0, 0, 0), location=0):
    encoded = key.encode("utf-8")
    assert len(encoded) <= 150
    return REQUEST.pack(command, length, fmt, dtype, location, *shape, encoded.ljust(150, b" "))


class LmClient:
    def __init__(self, host, port, timeout=30.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def close(self):
        self.sock.close()

    def recv_exact(self, n):
        chunks, got = [], 0
        while got < n:
            chunk = self.sock.recv(min(n - got, 1 << 20))
            if not chunk:
                raise ConnectionError("server closed the connection after %d of %d bytes" % (got, n))
            chunks.append(chunk)
            got += len(chunk)
        return b"".join(chunks)

    def reply(self):
        code, length, fmt, dtype, s0, s1, s2, s3, location = REPLY.unpack(self.recv_exact(REPLY.size))
        return code, length, fmt, dtype, (s0, s1, s2, s3), location

    def put(self, key, payload, fmt=1, dtype=3, shape=None):
        shape = shape or (len(payload), 0, 0, 0)
        self.sock.sendall(pack_request(PUT, key, len(payload), fmt, dtype, shape) + payload)

    def get(self, key):
        self.sock.sendall(pack_request(GET, key))
        code, length, fmt, dtype, shape, location = self.reply()
        if code != SUCCESS:
            check(length == 0 and (fmt, dtype, shape, location) == (1, 2, (0, 0, 0, 0), 0), "miss header is the original's")
            return None
        return self.recv_exact(length), fmt, dtype, shape

    def exist(self, key):
        self.sock.sendall(pack_request(EXIST, key))
        return self.reply()[0] == SUCCESS

    def health(self, key=""):
        self.sock.sendall(pack_request(HEALTH, key))
        return self.reply()[0] == SUCCESS

    def list(self):
        self.sock.sendall(pack_request(LIST, ""))
        code, length = self.reply()[:2]
        check(code == SUCCESS, "LIST answers 200")
        return [k for k in self.recv_exact(length).decode("utf-8").split("\n") if k]


def check(condition, what):
    if not condition:
        raise AssertionError("FAILED: " + what)


def chunk(i, layers=2, tokens=16, hidden=64):
    """A bf16 KV_2LTD chunk [2, layers, tokens, hidden] with content derived from i."""
    size = 2 * layers * tokens * hidden * 2
    seed = hashlib.sha256(b"chunk%d" % i).digest()
    return (seed * (size // len(seed) + 1))[:size], (2, layers, tokens, hidden)


def scenario_basic(host, port):
    c = LmClient(host, port)
    check(c.health(), "HEALTH answers 200")
    key = make_key(1)
    check(not c.exist(key), "EXIST of an absent key is 400")
    check(c.get(key) is None, "GET of an absent key is a miss")
    payload, shape = chunk(1)
    c.put(key, payload, fmt=1, dtype=3, shape=shape)
    check(c.exist(key), "EXIST after PUT is 200")
    data, fmt, dtype, got_shape = c.get(key)
    check(data == payload, "GET returns the stored bytes")
    check((fmt, dtype, got_shape) == (1, 3, shape), "GET returns the stored fmt, dtype and shape")
    # PUT overwrites, as the original does.
    other, _ = chunk(2)
    c.put(key, other, fmt=1, dtype=3, shape=shape)
    check(c.get(key)[0] == other, "a second PUT overwrites")
    # dtype code 1 is float16 and comes back as 2, like the original's encoder.
    key16 = make_key(3)
    c.put(key16, payload, fmt=1, dtype=1, shape=shape)
    check(c.get(key16)[2] == 2, "dtype 1 comes back as 2")
    # An opaque buffer (cachegen output): fmt BINARY_BUFFER, dtype None, shape [n,0,0,0].
    keyb = make_key(4)
    blob = os.urandom(1000)
    c.put(keyb, blob, fmt=5, dtype=0, shape=(1000, 0, 0, 0))
    check(c.get(keyb) == (blob, 5, 0, (1000, 0, 0, 0)), "opaque buffers round-trip")
    keys = c.list()
    check({key, key16, keyb} <= set(keys), "LIST returns the stored keys")
    c.close()
    # Another connection sees the same store.
    c2 = LmClient(host, port)
    check(c2.get(key)[0] == other, "a second connection reads what the first wrote")
    c2.close()
    print("OK basic")


def scenario_concurrent(host, port, clients=8, rounds=10):
    errors = []

    def worker(n):
        try:
            c = LmClient(host, port)
            for r in range(rounds):
                i = 1000 + n * rounds + r
                key = make_key(i, model="py/concurrent")
                payload, shape = chunk(i, tokens=8 + (i % 5))
                c.put(key, payload, shape=shape)
                got = c.get(key)
                check(got is not None and got[0] == payload, "client %d round %d reads its own bytes" % (n, r))
                check(c.exist(key), "client %d round %d EXIST" % (n, r))
            c.close()
        except Exception as e:  # reported below
            errors.append("%s: %s" % (type(e).__name__, e))

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    check(not errors, "; ".join(errors))
    print("OK concurrent %d clients x %d rounds" % (clients, rounds))


def expect_closed(c, what):
    """The server must close this connection: a read returns EOF (or the socket resets)."""
    try:
        c.sock.settimeout(30)
        data = c.sock.recv(1)
        check(data == b"", what + ": connection closed")
    except (ConnectionResetError, BrokenPipeError):
        pass
    c.close()


def scenario_malformed(host, port):
    good = LmClient(host, port)   # stays open the whole time: others' errors must not touch it
    key = make_key(77)
    payload, shape = chunk(77)
    good.put(key, payload, shape=shape)

    c = LmClient(host, port)
    c.sock.sendall(pack_request(9, make_key(1)))
    expect_closed(c, "unknown command 9")

    c = LmClient(host, port)
    c.sock.sendall(pack_request(PUT, make_key(2), length=0x7FFFFFFF, dtype=3, shape=(1, 0, 0, 0)))
    expect_closed(c, "oversized PUT length")

    c = LmClient(host, port)
    c.sock.sendall(pack_request(PUT, make_key(2), length=-5, dtype=3, shape=(1, 0, 0, 0)))
    expect_closed(c, "negative PUT length")

    c = LmClient(host, port)
    c.sock.sendall(pack_request(GET, "not-a-cache-key"))
    expect_closed(c, "bad key (the original crashes the connection here)")

    c = LmClient(host, port)
    c.sock.sendall(REQUEST.pack(GET, 0, 1, 2, 0, 0, 0, 0, 0, b"\xff\xfe" + b" " * 148))
    expect_closed(c, "key that is not UTF-8")

    c = LmClient(host, port)
    c.sock.sendall(pack_request(GET, make_key(3))[:100])
    c.sock.shutdown(socket.SHUT_WR)
    expect_closed(c, "half a header then EOF")

    c = LmClient(host, port)
    c.sock.sendall(pack_request(PUT, make_key(5), length=4096, dtype=3, shape=(2, 1, 16, 64)) + b"x" * 1000)
    c.sock.shutdown(socket.SHUT_WR)
    expect_closed(c, "disconnect in the middle of a payload")

    check(good.health(), "the untouched connection still answers HEALTH")
    got = good.get(key)
    check(got is not None and got[0] == payload, "the untouched connection still reads its bytes")
    check(good.get(make_key(5)) is None, "the interrupted PUT was not stored")
    good.close()
    fresh = LmClient(host, port)
    check(fresh.health(), "new connections are still accepted")
    fresh.close()
    print("OK malformed")


def scenario_readback(host, port):
    """Reads keys written by the C# connector (named on stdin as 'key hexsha256 fmt dtype s0 s1 s2 s3')."""
    c = LmClient(host, port)
    count = 0
    for line in sys.stdin:
        parts = line.split()
        if not parts:
            continue
        key, digest = parts[0], parts[1]
        fmt, dtype, s0, s1, s2, s3 = (int(p) for p in parts[2:8])
        got = c.get(key)
        check(got is not None, "key %s written by C# is found" % key)
        data, gfmt, gdtype, gshape = got
        check(hashlib.sha256(data).hexdigest() == digest, "bytes of %s match" % key)
        check((gfmt, gdtype, gshape) == (fmt, dtype, (s0, s1, s2, s3)), "metadata of %s matches" % key)
        count += 1
    # And write one back for C# to read.
    payload, shape = chunk(4242)
    c.put(make_key(4242, model="py/writer"), payload, fmt=1, dtype=3, shape=shape)
    check(c.health(), "HEALTH after PUT (the PUT was consumed in order)")
    c.close()
    print("OK readback %d" % count)


# What LMCache.NET's HEALTH and LIST carry: a valid key of the mid/late-2025 form with hash 0 (LmWire.KeylessRequestKey,
# also in make_golden.py), because the original server parses the key of every request.
KEYLESS = "vllm@lmcache-keyless@1@0@0@half"


def scenario_keyless(host, port):
    """Against original_server.py: an empty-key HEALTH is refused as the original refuses it; a valid key is answered."""
    c = LmClient(host, port)
    c.sock.sendall(pack_request(HEALTH, ""))
    expect_closed(c, "HEALTH with an empty key (the original parses every key and closes on this one)")
    c = LmClient(host, port)
    c.sock.sendall(pack_request(LIST, ""))
    expect_closed(c, "LIST with an empty key")
    c = LmClient(host, port)
    check(c.health(KEYLESS), "HEALTH carrying %s is answered 200" % KEYLESS)
    key = original_keys.key_2025("vllm", "py/model", 1, 0, 0x0abc, "bfloat16")
    payload, shape = chunk(5)
    c.put(key, payload, shape=shape)
    check(c.exist(key), "EXIST of the key just PUT is 200 (the confirmation our connector sends)")
    check(c.health(key), "HEALTH carrying a data key is answered 200")
    c.close()
    print("OK keyless")


def spellings(value):
    """Every way the original or we have written this hash value: format(int, 'x') and zero-padded forms."""
    text = format(value, "x")
    sign, digits = ("-", text[1:]) if text.startswith("-") else ("", text)
    return [sign + digits, sign + "0" + digits, sign + digits.rjust(64, "0")]


def spelled_key(hash_text, dtype, tags, layer):
    """A mid/late-2025 key whose hash field is exactly hash_text."""
    text = "vllm@py/spell@1@0@%s@%s" % (hash_text, dtype)
    if layer is not None:
        text += "@%d" % layer
    if tags:
        text += "@" + "@".join("%s%%%s" % (k, v) for k, v in tags)
    return text


def scenario_spellings(host, port):
    """Against our server: every spelling of one hash names one entry, as in the original server."""
    c = LmClient(host, port)
    cases = [
        (0x0abc, "bfloat16", (), None),
        (0x0fedcba987654321, "half", (), None),
        (-0x1a2b, "half", (), None),
        (0, "float", (), None),
        (0x7, "bfloat16", (("user", "alice"),), None),
        (0x42, "bfloat16", (), 3),
    ]
    n = 0
    for value, dtype, tags, layer in cases:
        forms = [spelled_key(h, dtype, tags, layer) for h in spellings(value)]
        check(forms[0] == original_keys.key_2025("vllm", "py/spell", 1, 0, value, dtype, tags, layer), "the first form is the original's")
        if value == 0:
            forms.append(spelled_key("-0", dtype, tags, layer))
        for put_form in forms:
            payload, shape = chunk(100 + n)
            n += 1
            c.put(put_form, payload, shape=shape)
            for get_form in forms:
                check(c.exist(get_form), "EXIST %s finds the PUT of %s" % (get_form, put_form))
                got = c.get(get_form)
                check(got is not None and got[0] == payload, "GET %s returns the bytes PUT as %s" % (get_form, put_form))
    keys = [k for k in c.list() if k.startswith("vllm@py/spell@")]
    check(len(keys) == len(cases), "one entry per hash value, not one per spelling: %s" % keys)
    c.close()
    print("OK spellings %d" % len(cases))


def scenario_newest(host, port):
    """Against our server: keys of the newest upstream (no fmt field) are served, with layers and tags."""
    c = LmClient(host, port)
    keys = [
        original_keys.key_2026("Qwen/Qwen3-8B", 1, 0, 0x2783dafec1b4e9f0, "bfloat16"),
        original_keys.key_2026("Qwen/Qwen3-8B", 2, 1, -0x1a2b, "half"),
        original_keys.key_2026("Qwen/Qwen3-8B", 1, 0, 0x2783dafec1b4e9f0, "bfloat16", layer=5),
        original_keys.key_2026("Qwen/Qwen3-8B", 1, 0, 0xabc, "bfloat16", tags=(("user", "alice"), ("lang", "en"))),
    ]
    for i, key in enumerate(keys):
        original_keys.parse_2026(key)   # the newest original parses what we send
        check(not c.exist(key), "EXIST of absent %s is 400" % key)
        payload, shape = chunk(200 + i)
        c.put(key, payload, shape=shape)
        check(c.exist(key), "EXIST of %s after PUT is 200" % key)
        got = c.get(key)
        check(got is not None and got[0] == payload, "GET of %s returns the bytes" % key)
    padded = keys[3].replace("@abc@", "@0abc@")
    check(c.get(padded) is not None, "another spelling of a newest-format key finds it")
    check(set(keys) <= set(c.list()), "LIST shows the newest-format keys as written")
    c.close()
    print("OK newest %d" % len(keys))


def main():
    if len(sys.argv) != 4:
        print(__doc__, file=sys.stderr)
        return 2
    host, port, scenario = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    scenarios = {
        "basic": scenario_basic,
        "concurrent": scenario_concurrent,
        "malformed": scenario_malformed,
        "readback": scenario_readback,
        "keyless": scenario_keyless,
        "spellings": scenario_spellings,
        "newest": scenario_newest,
    }
    names = ["basic", "concurrent", "malformed"] if scenario == "all" else [scenario]
    for name in names:
        scenarios[name](host, port)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except AssertionError as e:
        print(e, file=sys.stderr)
        sys.exit(1)
