#!/usr/bin/env python3
"""Splice real-world junk into a copy of a byte-level token shard at random offsets.

    data_faults_splice.py --shard IN.bin --out OUT.bin --share 0.01 --seed 7 \
        --other-language OTHER.bin [--manifest OUT.json]

The junk is taken from real files of the machine, six kinds in turn:
  binary      bytes of a compiled program (an ELF file of /usr/bin)
  compressed  bytes of a gzip file (/usr/share/doc/*/*.gz)
  markup      raw HTML with its tags (/usr/share/doc/**/*.html)
  repeated    a span of 1-13 bytes of the shard repeated
  empty       blank lines (newlines, some with spaces or tabs)
  language    text of another language: Chinese verse and prose of fortunes-zh when installed,
              else bytes of OTHER.bin (another channel's shard)
Each splice overwrites [offset, offset + length) of the shard's tokens (the file keeps its size;
a document index of the shard becomes stale, as it would for any edit after gyro-prep). Splices
are 1,024 to 8,192 tokens long, never overlap, and together cover `share` of the shard. The
manifest (JSON) lists every splice: kind, source file, offset and length in tokens — the ground
truth of bench/data_faults.sh.
"""
import argparse
import glob
import json
import os
import random
import struct
import sys

HEADER = 256 * 4
# Chinese verse and prose (fortunes-zh): text of another language for an English channel
LANGUAGE_FILES = ["/usr/share/games/fortunes/tang300", "/usr/share/games/fortunes/song100",
                  "/usr/share/games/fortunes/chinese"]
MAGIC = 20240520


def read_shard(path):
    b = open(path, "rb").read()
    hdr = struct.unpack_from("<256i", b, 0)
    if hdr[0] != MAGIC:
        sys.exit("%s: not a token shard (magic %d)" % (path, hdr[0]))
    n = hdr[2]
    return bytearray(b), n


def tokens_of(b, n):
    return struct.unpack_from("<%dH" % n, b, HEADER)


def is_elf(path):
    with open(path, "rb") as f:
        return f.read(4) == b"\x7fELF"


def pick(rng, pattern, minsize=4096, elf=False):
    files = sorted(f for f in glob.glob(pattern, recursive=True)
                   if os.path.isfile(f) and os.path.getsize(f) >= minsize and
                   (not elf or is_elf(f)))
    if not files:
        sys.exit("data_faults_splice: no file matches %s" % pattern)
    return rng.choice(files)


def junk(kind, n, rng, shard_tokens, other):
    """n bytes of junk of a kind, and where they come from."""
    if kind in ("binary", "compressed", "markup"):
        pattern = {"binary": "/usr/bin/*",
                   "compressed": "/usr/share/doc/*/*.gz",
                   "markup": "/usr/share/doc/**/*.html"}[kind]
        path = pick(rng, pattern, elf=kind == "binary")
        data = open(path, "rb").read()
        start = rng.randrange(0, max(1, len(data) - n))
        out = data[start:start + n]
        while len(out) < n:
            out += data[:n - len(out)]
        return out, path
    if kind == "repeated":
        k = rng.randint(1, 13)
        at = rng.randrange(0, len(shard_tokens) - k)
        unit = bytes(t & 0xFF for t in shard_tokens[at:at + k])
        return (unit * (n // k + 1))[:n], "span of %d bytes of the shard, repeated" % k
    if kind == "empty":
        lines = [b"\n", b"\n", b"\n", b" \n", b"\t\n", b"\r\n"]
        out = b""
        while len(out) < n:
            out += rng.choice(lines)
        return out[:n], "blank lines"
    if kind == "language":
        files = [f for f in LANGUAGE_FILES if os.path.isfile(f) and os.path.getsize(f) > n]
        if files:
            path = rng.choice(sorted(files))
            data = open(path, "rb").read()
            start = rng.randrange(0, len(data) - n)
            return data[start:start + n], path
        ob, on = other
        start = rng.randrange(0, on - n)
        return bytes(t & 0xFF for t in tokens_of(ob, on)[start:start + n]), "another channel's text"
    raise ValueError(kind)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shard", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--share", type=float, required=True)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--other-language", required=True)
    ap.add_argument("--manifest")
    ap.add_argument("--kinds", default="binary,compressed,markup,repeated,empty,language")
    a = ap.parse_args()
    rng = random.Random(a.seed)
    b, n = read_shard(a.shard)
    toks = tokens_of(b, n)
    ob, on = read_shard(a.other_language)
    kinds = a.kinds.split(",")
    want = int(a.share * n)
    splices, taken, used = [], [], 0
    i = 0
    while used < want:
        length = min(rng.randint(1024, 8192), max(1024, want - used))
        for _ in range(1000):
            off = rng.randrange(0, n - length)
            if all(off + length <= s or off >= e for s, e in taken):
                break
        else:
            sys.exit("data_faults_splice: no room for another splice")
        kind = kinds[i % len(kinds)]
        i += 1
        data, src = junk(kind, length, rng, toks, (ob, on))
        struct.pack_into("<%dH" % length, b, HEADER + 2 * off, *data)
        taken.append((off, off + length))
        splices.append({"kind": kind, "source": src, "offset": off, "length": length})
        used += length
    tmp = a.out + ".tmp"
    with open(tmp, "wb") as f:
        f.write(b)
    os.replace(tmp, a.out)
    m = {"shard": a.out, "tokens": n, "share": used / n, "seed": a.seed,
         "splices": sorted(splices, key=lambda s: s["offset"])}
    if a.manifest:
        json.dump(m, open(a.manifest, "w"), indent=1)
    print(json.dumps({"splices": len(splices), "tokens": used, "share": round(used / n, 5)}))


if __name__ == "__main__":
    main()
