"""Rebuild the embedded Fashion-MNIST subset (supernet/data/fashion_subset.npz) from the original IDX
files: ``apt-get install dataset-fashion-mnist`` then

    python -m experiments.make_fashion_subset [/usr/share/datasets/fashion-mnist]
"""
from __future__ import annotations

import sys

from supernet.data.fashion import EMBEDDED, build_subset


def main() -> None:
    root = sys.argv[1] if len(sys.argv) > 1 else "/usr/share/datasets/fashion-mnist"
    out = build_subset(root)
    print(f"wrote {out} ({out.stat().st_size / 2**20:.2f} MiB)" if out == EMBEDDED else f"wrote {out}")


if __name__ == "__main__":
    main()
