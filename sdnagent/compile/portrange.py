"""TCP/UDP port ranges as OpenFlow value/mask matches."""
from __future__ import annotations

FULL = 0xFFFF


def prefixes(lo: int, hi: int, bits: int = 16) -> list[tuple[int, int]]:
    """The fewest (value, mask) pairs whose union is exactly lo..hi.

    Greedy: from ``lo`` take the largest aligned block that fits, repeat.  A
    full mask means an exact match; 0..65535 is the one pair (0, 0).
    """
    top = (1 << bits) - 1
    assert 0 <= lo <= hi <= top, (lo, hi)
    out = []
    while lo <= hi:
        size = lo & -lo if lo else 1 << bits
        while lo + size - 1 > hi:
            size >>= 1
        out.append((lo, top & ~(size - 1)))
        lo += size
    return out
