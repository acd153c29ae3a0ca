"""redis-py against a running ringkv node: what an application using redis-py would do.

Usage: python3 redis_py_check.py HOST PORT
Exits non-zero (with the failing assertion) when anything is off.
"""
import sys

import redis


def main() -> None:
    host, port = sys.argv[1], int(sys.argv[2])
    for protocol in (2, 3):
        r = redis.Redis(host=host, port=port, protocol=protocol, socket_timeout=10)
        assert r.ping() is True
        prefix = f"py{protocol}:"
        assert r.set(prefix + "a", b"1") is True
        assert r.get(prefix + "a") == b"1"
        assert r.get(prefix + "missing") is None
        assert r.mset({prefix + "b": b"2", prefix + "c": b"\x00\xff binary"}) is True
        assert r.mget([prefix + "a", prefix + "b", prefix + "c", prefix + "nope"]) == [
            b"1",
            b"2",
            b"\x00\xff binary",
            None,
        ]
        assert r.exists(prefix + "a", prefix + "nope") == 1
        assert r.delete(prefix + "a", prefix + "nope") == 1
        assert r.get(prefix + "a") is None
        # Keys are bytes: non-UTF-8 keys round-trip.
        key = prefix.encode() + b"\xfe\x00\xff"
        r.set(key, b"v")
        assert r.get(key) == b"v"
        # Unsupported SET options are refused, never ignored.
        try:
            r.set(prefix + "ttl", b"v", ex=10)
            raise AssertionError("SET EX was accepted")
        except redis.ResponseError as e:
            assert "not supported" in str(e), str(e)
        assert r.get(prefix + "ttl") is None
        info = r.info()
        assert "ringkv_version" in info, info
        assert info.get("durability") in ("sync", "periodic"), info
        # Pipelines.
        p = r.pipeline(transaction=False)
        for i in range(100):
            p.set(f"{prefix}p{i}", i)
        for i in range(100):
            p.get(f"{prefix}p{i}")
        out = p.execute()
        assert out[:100] == [True] * 100
        assert out[100:] == [str(i).encode() for i in range(100)]
        # Contexts through ringkv's own commands: two writers over one read -> siblings.
        ctx = r.execute_command("RINGKV.GET", prefix + "doc")[0]
        r.execute_command("RINGKV.PUT", prefix + "doc", b"left", "CONTEXT", ctx)
        r.execute_command("RINGKV.PUT", prefix + "doc", b"right", "CONTEXT", ctx)
        got = r.execute_command("RINGKV.GET", prefix + "doc")
        assert sorted(got[1:]) == [b"left", b"right"], got
        r.execute_command("RINGKV.PUT", prefix + "doc", b"merged", "CONTEXT", got[0])
        got = r.execute_command("RINGKV.GET", prefix + "doc")
        assert got[1:] == [b"merged"], got
        r.close()
    print("redis-py: all checks passed")


if __name__ == "__main__":
    main()
