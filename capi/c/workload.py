"""A Python workload for the LD_PRELOAD check: builds and drops large dicts and lists,
strings and tuples of many sizes, and prints checksums (the output must not depend on the
allocator)."""
import hashlib

digest = hashlib.sha256()
for round in range(6):
    d = {f"key{i}-{round}": [i] * (i % 17) for i in range(120_000)}
    lst = [str(i) * (i % 50) for i in range(150_000)]
    tuples = [(i, str(i), float(i)) for i in range(80_000)]
    sets = {frozenset(range(i % 30)) for i in range(20_000)}
    big = bytearray(8 << 20)
    big[::4096] = b"x" * len(big[::4096])
    total = sum(len(v) for v in d.values()) + sum(map(len, lst)) + len(tuples) + len(sets)
    digest.update(str(total).encode())
    digest.update(bytes(big[:: 1 << 16]))
    for k in list(d)[::3]:
        del d[k]
    lst = lst[::2]
    digest.update(str(len(d) + len(lst)).encode())
    del d, lst, tuples, sets, big
print("python workload", digest.hexdigest())
