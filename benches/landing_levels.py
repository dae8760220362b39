#!/usr/bin/env python3
"""How landing blocks (1 MiB of event lines each) compress at a few zstd levels: ratio,
compression and decompression speed, best of 3.

    python3 -m venv /tmp/zvenv && /tmp/zvenv/bin/pip install zstandard
    /tmp/zvenv/bin/python benches/landing_levels.py bench-out/events-1000000-seed42.ndjson

Reads the first 200 MiB of the file.
"""

import sys
import time

import zstandard as zs


def main(path: str) -> None:
    with open(path, "rb") as f:
        data = f.read(200 << 20)
    blocks = [data[i:i + (1 << 20)] for i in range(0, len(data), 1 << 20)]
    for level in (1, -1, -3, -5):
        c, d = zs.ZstdCompressor(level=level), zs.ZstdDecompressor()
        best_c = best_d = float("inf")
        for _ in range(3):
            t = time.perf_counter()
            outs = [c.compress(b) for b in blocks]
            best_c = min(best_c, time.perf_counter() - t)
            t = time.perf_counter()
            for o in outs:
                d.decompress(o)
            best_d = min(best_d, time.perf_counter() - t)
        ratio = len(data) / sum(map(len, outs))
        print(f"level {level}: ratio {ratio:.2f}, compress {len(data) / best_c / 1e6:.0f} MB/s, "
              f"decompress {len(data) / best_d / 1e6:.0f} MB/s")


if __name__ == "__main__":
    main(sys.argv[1])
