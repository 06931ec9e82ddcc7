#!/usr/bin/env python3
"""A stand-in for the original LMCache `lmcache_server` (lmcache/v1/server), standard library only.

Written from the documented byte layouts and the original server's loop (reference document section 7), not from our
C# code. Like the original it runs one thread per connection and, for every request:
  * reads exactly 186 bytes: struct "iiiiiiiii150s" = command, length, fmt, dtype, location, shape0..3, key;
  * decodes the key (UTF-8, stripped of whitespace) and parses it with CacheEngineKey.from_string of its era BEFORE
    it looks at the command -- so a HEALTH or LIST with an empty (all-space) key raises, and, as in the original, the
    exception ends the connection: it is closed;
  * PUT (1): reads `length` bytes, stores them under the parsed key (identity: the int hash, so every spelling of a
    hash is one entry), no reply; GET (2): 36-byte reply struct "iiiiiiiii" = code, length, fmt, dtype, shape0..3,
    location (+ payload on a hit); EXIST (3): 200/400; HEALTH (5): 200; LIST (4) and anything else: no reply (the
    original never implemented LIST).

Usage: python3 original_server.py HOST PORT [--era 2025|2026] [--refuse-health]
  --era 2025 (default): keys fmt@model@world_size@worker_id@hash@dtype[@tags] (what LMCache.NET writes)
  --era 2026: keys model@world_size@worker_id@hash@dtype[@layer][@tags] (the newest upstream)
  --refuse-health: close the connection on HEALTH too (a server that does not take our HEALTH at all)
Prints 'listening PORT' once bound (PORT 0 picks one), serves until stdin is closed, then prints one JSON line of
statistics (requests per command, connections closed and why, the key texts received) and exits.
"""
import json
import socket
import struct
import sys
import threading

import original_keys

PUT, GET, EXIST, LIST, HEALTH = 1, 2, 3, 4, 5
REQUEST = struct.Struct("iiiiiiiii150s")
REPLY = struct.Struct("iiiiiiiii")
MISS = REPLY.pack(400, 0, 1, 2, 0, 0, 0, 0, 0)
OK = REPLY.pack(200, 0, 1, 2, 0, 0, 0, 0, 0)


class Server:
    def __init__(self, host, port, era, refuse_health):
        self.parse = original_keys.parse_2026 if era == "2026" else original_keys.parse_2025
        self.refuse_health = refuse_health
        self.store = {}
        self.lock = threading.Lock()
        self.stats = {"put": 0, "get": 0, "hit": 0, "exist": 0, "health": 0, "list": 0, "closed": [], "keys": []}
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((host, port))
        self.listener.listen(64)

    def count(self, name, key_text=None):
        with self.lock:
            self.stats[name] += 1
            if key_text is not None:
                self.stats["keys"].append(key_text)

    def recv_exact(self, conn, n):
        data = bytearray()
        while len(data) < n:
            packet = conn.recv(n - len(data))
            if not packet:
                return None
            data.extend(packet)
        return bytes(data)

    def handle(self, conn):
        try:
            while True:
                header = self.recv_exact(conn, REQUEST.size)
                if header is None:
                    return
                command, length, fmt, dtype, location, s0, s1, s2, s3, raw_key = REQUEST.unpack(header)
                key_text = raw_key.decode("utf-8").strip()
                key = self.parse(key_text)   # raises on a bad key, the empty one included: the connection ends
                if command == PUT:
                    payload = self.recv_exact(conn, length)
                    if payload is None:
                        return
                    with self.lock:
                        self.store[key] = (payload, fmt, dtype, (s0, s1, s2, s3))
                    self.count("put", key_text)
                elif command == GET:
                    self.count("get")
                    with self.lock:
                        entry = self.store.get(key)
                    if entry is None:
                        conn.sendall(MISS)
                    else:
                        self.count("hit")
                        payload, pfmt, pdtype, shape = entry
                        conn.sendall(REPLY.pack(200, len(payload), pfmt, pdtype, *shape, 0))
                        conn.sendall(payload)
                elif command == EXIST:
                    self.count("exist")
                    with self.lock:
                        present = key in self.store
                    conn.sendall(OK if present else MISS)
                elif command == HEALTH:
                    self.count("health")
                    if self.refuse_health:
                        raise ValueError("HEALTH refused (--refuse-health)")
                    conn.sendall(OK)
                elif command == LIST:
                    self.count("list")   # no reply: the original never implemented LIST
        except Exception as e:  # the original's handler lets the exception end the connection
            with self.lock:
                self.stats["closed"].append("%s: %s" % (type(e).__name__, e))
        finally:
            conn.close()

    def serve(self):
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=self.handle, args=(conn,), daemon=True).start()


def main():
    args = sys.argv[1:]
    era = "2025"
    if "--era" in args:
        i = args.index("--era")
        era = args[i + 1]
        del args[i:i + 2]
    refuse_health = "--refuse-health" in args
    args = [a for a in args if a != "--refuse-health"]
    if len(args) != 2 or era not in ("2025", "2026"):
        print(__doc__, file=sys.stderr)
        return 2
    server = Server(args[0], int(args[1]), era, refuse_health)
    threading.Thread(target=server.serve, daemon=True).start()
    print("listening %d" % server.listener.getsockname()[1], flush=True)
    sys.stdin.read()   # until the test closes our stdin
    server.listener.close()
    with server.lock:
        print(json.dumps(server.stats), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
