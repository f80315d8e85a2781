#!/usr/bin/python3
"""bench/node_mem.py -- where an antenna process's resident memory is
(docs/benchmarks.md, "Cluster: where a node's memory goes").

    bench/node_mem.py [--malloc] [--json] PID...

From /proc/PID/smaps, each process's RSS by kind of mapping:
  heap      the main malloc arena ([heap]: the main thread's and the
            workers' allocations until they get an arena of their own)
  arenas    other malloc arenas (anonymous read-write mappings aligned to
            64 MB: glibc's per-thread arenas, one per thread that allocated
            while the others were busy, up to 8 per core)
  stacks    thread stacks (anonymous 8 MB read-write mappings after a
            guard page) and [stack]
  mmap      other anonymous mappings: blocks malloc gave from mmap (above
            its threshold: tables, Bloom filters, big buffers)
  file      the binary and the libraries
With --malloc, also malloc_info(3) of each process (through gdb -batch,
which stops the process for a moment): the bytes malloc holds free in its
arenas (fast bins and the rest) and the arenas' system bytes, i.e. heap
kept after it was freed.  With --trim, malloc_trim(0) is called in each
process first (gdb -batch): what the figures are once malloc gives its free
pages back.  Several PIDs: one line each and the sum.
"""
import json
import os
import re
import subprocess
import sys
import tempfile

KINDS = ("heap", "arenas", "stacks", "mmap", "file")


def smaps(pid):
    out = dict.fromkeys(KINDS, 0)
    prev = None  # (end, perms, path) of the previous mapping
    cur = None
    with open("/proc/%d/smaps" % pid) as f:
        for line in f:
            m = re.match(r"^([0-9a-f]+)-([0-9a-f]+) (\S+) \S+ \S+ \S+\s*(.*)$", line)
            if m:
                start, end = int(m.group(1), 16), int(m.group(2), 16)
                perms, path = m.group(3), m.group(4).strip()
                if path == "[heap]":
                    cur = "heap"
                elif path == "[stack]":
                    cur = "stacks"
                elif path.startswith("["):
                    cur = None  # vdso, vvar
                elif path:
                    cur = "file"
                elif "rw" in perms and start % (64 << 20) == 0:
                    cur = "arenas"
                elif ("rw" in perms and end - start == (8 << 20) and prev is not None
                      and prev[0] == start and prev[1].startswith("---")):
                    cur = "stacks"
                else:
                    cur = "mmap"
                prev = (end, perms, path)
                continue
            if line.startswith("Rss:") and cur:
                out[cur] += int(line.split()[1])
    return out


def status(pid):
    d = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "RssAnon", "RssFile", "Threads"):
                d[k] = int(v.split()[0])
    return d


def malloc_info(pid):
    """{"free": bytes free in the arenas, "system": the arenas' bytes, "arenas": n}"""
    fd, path = tempfile.mkstemp(prefix="antenna-mi.", suffix=".xml")
    os.close(fd)
    os.chmod(path, 0o666)
    try:
        subprocess.run(
            ["gdb", "-batch", "-nx", "-p", str(pid),
             "-ex", 'set $f = ((void *(*)(const char *, const char *))fopen)("%s", "w")' % path,
             "-ex", "call ((int (*)(int, void *))malloc_info)(0, $f)",
             "-ex", "call ((int (*)(void *))fclose)($f)"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60, check=False)
        xml = open(path).read()
    finally:
        os.unlink(path)
    # the totals after the last </heap>
    tail = xml[xml.rfind("</heap>"):] if "</heap>" in xml else xml
    free = sum(int(s) for s in re.findall(r'<total type="(?:fast|rest)" count="\d+" size="(\d+)"', tail))
    system = re.search(r'<system type="current" size="(\d+)"', tail)
    mmap = re.search(r'<total type="mmap" count="\d+" size="(\d+)"', tail)
    return {"free": free, "system": int(system.group(1)) if system else 0,
            "mmap": int(mmap.group(1)) if mmap else 0, "arenas": xml.count("<heap nr=")}


def trim(pid):
    subprocess.run(["gdb", "-batch", "-nx", "-p", str(pid),
                    "-ex", "call ((int (*)(unsigned long))malloc_trim)(0)"],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60, check=False)


def main(argv):
    want_malloc = "--malloc" in argv
    as_json = "--json" in argv
    pids = [int(a) for a in argv if not a.startswith("--")]
    rows = []
    for pid in pids:
        if "--trim" in argv:
            trim(pid)
        r = {"pid": pid}
        r.update(status(pid))
        r.update(smaps(pid))
        if want_malloc:
            mi = malloc_info(pid)
            r.update({"malloc_" + k: v for k, v in mi.items()})
        rows.append(r)
    if as_json:
        print(json.dumps(rows))
        return 0
    cols = ["VmRSS"] + list(KINDS) + (["malloc_system", "malloc_free", "malloc_mmap", "malloc_arenas"]
                                      if want_malloc else [])
    print("pid      " + " ".join("%13s" % c for c in cols) + "   (kB; malloc_* bytes/1024, arenas a count)")
    tot = dict.fromkeys(cols, 0)
    for r in rows:
        vals = []
        for c in cols:
            v = r.get(c, 0)
            if c.startswith("malloc_") and c != "malloc_arenas":
                v //= 1024
            tot[c] += v
            vals.append(v)
        print("%-8d " % r["pid"] + " ".join("%13d" % v for v in vals))
    if len(rows) > 1:
        print("sum      " + " ".join("%13d" % tot[c] for c in cols))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
