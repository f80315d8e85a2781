#!/usr/bin/python3
"""bench/heap_chunks.py -- what the malloc chunks of a running process are
(docs/benchmarks.md, "Where the cluster's bytes per device were").

    bench/heap_chunks.py [--top N] [--samples K] [--min-count C] [--code] [--free] PID

Reads the process's malloc heaps through /proc/PID/mem (root, or the
process's owner with ptrace allowed): the main heap ([heap]) and every
other arena (anonymous read-write mappings aligned to 64 MB, glibc's
per-thread arenas), walks each heap's chunks from its first to its top
(the size field of each, glibc's x86-64 layout) and prints, per heap, the
bytes in use and free, and over all heaps the in-use chunks by size: count,
bytes and, for the commonest sizes, the printable strings of a few sampled
chunks (what they are: a key, a topic, a JSON text).  The process keeps
running; the walk reads a moving heap, so a chunk chain that breaks (a size
that leads outside the heap) ends that heap's walk and says so.  Chunks in
glibc's tcache and fast bins look in use (their next chunk's PREV_INUSE
bit is set): a size with many such chunks and no pattern in their strings
is likely those.  Big blocks malloc took with mmap are not in the heaps
(bench/node_mem.py counts them).
"""
import argparse
import collections
import re
import struct
import sys


# --free: chunk size bins (name, upper bound), kB in each
FREE_BINS = (("<256 B", 256), ("<1 kB", 1024), ("<4 kB", 4096), ("<16 kB", 16384),
             ("<64 kB", 65536), (">=64 kB", 1 << 62))


def heaps(pid):
    """[(name, start, end)] of the main heap and the arenas' read-write parts."""
    out = []
    with open("/proc/%d/maps" % pid) as f:
        for line in f:
            m = re.match(r"^([0-9a-f]+)-([0-9a-f]+) (\S+) \S+ \S+ \S+\s*(.*)$", line)
            if not m:
                continue
            start, end = int(m.group(1), 16), int(m.group(2), 16)
            perms, path = m.group(3), m.group(4).strip()
            if path == "[heap]":
                out.append(("heap", start, end))
            elif not path and perms.startswith("rw") and start % (64 << 20) == 0:
                out.append(("arena@%x" % start, start, end))
    return out


def walk(mem, start, end, first):
    """Chunks from `first` to the heap's top: [(addr, size, inuse)], ok."""
    mem.seek(start)
    data = mem.read(end - start)
    chunks = []
    p = first - start
    n = len(data)
    while p + 16 <= n:
        size = struct.unpack_from("<Q", data, p + 8)[0] & ~7
        if size < 32 or size % 16 or p + size > n:
            return chunks, data, p + 16 >= n - 32 and size >= 16
        nxt = p + size
        if nxt + 16 > n:  # the top chunk
            return chunks, data, True
        inuse = struct.unpack_from("<Q", data, nxt + 8)[0] & 1
        chunks.append((p, size, inuse))
        p = nxt
    return chunks, data, True


def first_chunk(mem, start, end):
    """The offset of the first chunk: the one from which the chain reaches
    the top (after heap_info and malloc_state in an arena's first heap)."""
    best = None
    for off in range(0, 0x1000, 16):
        chunks, _, ok = walk(mem, start, min(end, start + (1 << 20)), start + off)
        if len(chunks) > 16 or (ok and chunks):
            if best is None or len(chunks) > best[1]:
                best = (start + off, len(chunks))
            if len(chunks) > 64:
                break
    return best[0] if best else None


def exe_range(pid):
    """(start, end, load base) of the executable's mappings."""
    exe = None
    lo = hi = base = None
    with open("/proc/%d/maps" % pid) as f:
        for line in f:
            parts = line.split()
            if len(parts) < 6:
                continue
            if exe is None:
                exe = parts[5]
            if parts[5] != exe:
                continue
            a, b = (int(x, 16) for x in parts[0].split("-"))
            if base is None:
                base = a - int(parts[2], 16)
            lo = a if lo is None else min(lo, a)
            hi = b if hi is None else max(hi, b)
    return lo, hi, base


def code_words(buf, rng):
    """The words of buf that point into the executable, as offsets from its
    load base (addr2line -f -e BINARY OFFSET names them)."""
    lo, hi, base = rng
    out = []
    for i in range(0, len(buf) - 7, 8):
        v = struct.unpack_from("<Q", buf, i)[0]
        if lo <= v < hi:
            out.append("+%d:exe+0x%x" % (i, v - base))
    return out


def strings(buf, minlen=4):
    return [s.decode() for s in re.findall(rb"[\x20-\x7e]{%d,}" % minlen, buf)]


def main(argv):
    ap = argparse.ArgumentParser()
    ap.add_argument("pid", type=int)
    ap.add_argument("--top", type=int, default=12, help="sizes shown (by bytes)")
    ap.add_argument("--samples", type=int, default=3, help="chunks sampled a size")
    ap.add_argument("--min-count", type=int, default=1)
    ap.add_argument("--code", action="store_true",
                    help="also the sampled chunks' words that point into the executable")
    ap.add_argument("--free", action="store_true",
                    help="also each heap's free bytes by chunk size (holes: whole free "
                    "pages only in the big ones)")
    a = ap.parse_args(argv)
    by_size = collections.defaultdict(lambda: [0, []])  # size -> [count, samples]
    total_used = total_free = 0
    with open("/proc/%d/mem" % a.pid, "rb") as mem:
        for name, start, end in heaps(a.pid):
            first = first_chunk(mem, start, end)
            if first is None:
                print("%-20s no chunk chain found" % name)
                continue
            chunks, data, ok = walk(mem, start, end, first)
            used = sum(s for _, s, u in chunks if u)
            free = sum(s for _, s, u in chunks if not u)
            total_used += used
            total_free += free
            print("%-20s %8d kB mapped, %8d kB in %7d chunks in use, %8d kB free%s" %
                  (name, (end - start) >> 10, used >> 10, sum(1 for c in chunks if c[2]),
                   free >> 10, "" if ok else " (chain broken: the heap moved)"))
            if a.free:
                bins = collections.OrderedDict((b, [0, 0]) for b in FREE_BINS)
                for _, s, u in chunks:
                    if not u:
                        b = next(x for x in FREE_BINS if s < x[1])
                        bins[b][0] += 1
                        bins[b][1] += s
                print("%20s free: %s" % ("", ", ".join(
                    "%s %d in %d" % (b[0], v[1] >> 10, v[0]) for b, v in bins.items() if v[0])))
            for p, s, u in chunks:
                if not u:
                    continue
                e = by_size[s]
                e[0] += 1
                if len(e[1]) < a.samples and e[0] % 97 == 1:
                    e[1].append(data[p + 16:p + min(s, 256)])
    print("in use %d kB, free %d kB" % (total_used >> 10, total_free >> 10))
    print("%8s %9s %10s  samples (printable strings)" % ("chunk", "count", "kB"))
    rows = sorted(by_size.items(), key=lambda kv: -kv[0] * kv[1][0])
    rng = exe_range(a.pid) if a.code else None
    for size, (count, samples) in rows[:a.top]:
        if count < a.min_count:
            continue
        shown = " | ".join(" ".join(strings(b))[:60] for b in samples)
        if rng:
            shown += "  [" + " | ".join(" ".join(code_words(b, rng)) for b in samples) + "]"
        print("%8d %9d %10d  %s" % (size, count, size * count >> 10, shown))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
