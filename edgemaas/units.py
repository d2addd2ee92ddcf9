"""How sizes read in everything edgemaas prints: one formatter for the CLI, deploy plans, build tables and benchmarks."""

from __future__ import annotations

KB, MB, GB = 1 << 10, 1 << 20, 1 << 30


def human_size(size: int | None, missing: str = "-") -> str:
    """Bytes as KB or MB with one decimal, GB with two; `missing` for None or 0."""
    if not size:
        return missing
    if size < MB:
        return f"{size / KB:.1f} KB"
    if size < GB:
        return f"{size / MB:.1f} MB"
    return f"{size / GB:.2f} GB"
