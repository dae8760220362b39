#!/usr/bin/env python3
"""How well one partition's records compress one by one (as holdfast seals them) against
as one block, for a few dictionary sizes, training-set sizes and zstd levels.

    python3 -m venv /tmp/zvenv && /tmp/zvenv/bin/pip install zstandard
    /tmp/zvenv/bin/python benches/record_compression.py bench-out/events-1000000-seed42.ndjson

Takes the busiest (day, interaction type) partition among the first 200,000 lines, trains
on its first rows and compresses the next 5,000. Prints bytes per record, then what sealing
groups of records together would take.
"""

import sys

import zstandard as zs

from benchlib import lines_by_partition


def main(path: str) -> None:
    parts = lines_by_partition(path, 200_000)
    key = max(parts, key=lambda k: len(parts[k]))
    recs = parts[key]
    test = recs[1024:6024]
    print(f"partition {key}: {len(recs)} records, {sum(map(len, test)) / len(test):.0f} bytes each")
    print("dictionary bytes, training rows, level: bytes per record one by one")
    for dsize in (16384, 32768, 65536, 112640):
        for train in (256, 1024):
            d = zs.train_dictionary(dsize, recs[:train], level=3)
            for level in (3, 9, 19):
                c = zs.ZstdCompressor(level=level, dict_data=d, write_content_size=False,
                                      write_checksum=False, write_dict_id=False)
                total = sum(len(c.compress(r)) for r in test)
                print(f"{dsize:7d} {train:5d} {level:3d}: {total / len(test):6.1f}")
    for level in (3, 19):
        block = zs.ZstdCompressor(level=level).compress(b"\n".join(test))
        print(f"as one block, level {level}: {len(block) / len(test):6.1f}")
    # sealing groups of consecutive records together (a payload format holdfast does not
    # have): level 3, a 16 KiB dictionary trained on 1,024 records, and the 28 bytes of nonce
    # and tag once per group instead of once per record
    d = zs.train_dictionary(16384, recs[:1024], level=3)
    c = zs.ZstdCompressor(level=3, dict_data=d, write_content_size=False, write_checksum=False,
                          write_dict_id=False)
    print("group size: bytes per record with nonce and tag")
    for g in (1, 4, 16, 64, 256):
        total = sum(len(c.compress(b"\n".join(test[i:i + g]))) + 28
                    for i in range(0, len(test), g))
        print(f"{g:5d}: {total / len(test):6.1f}")


if __name__ == "__main__":
    main(sys.argv[1])
