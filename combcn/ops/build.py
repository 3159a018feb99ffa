"""``python -m combcn.ops.build``: build (or confirm the cache of) the native masked_conv3d op.

Exit status 0 when the native op loads, 1 otherwise (``install/setup.sh`` then warns and carries on
with the pure-PyTorch reference).
"""

from __future__ import annotations

import argparse
import sys
import time

from combcn.ops import _ext


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m combcn.ops.build", description=__doc__.splitlines()[0])
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="show the compiler commands (default: off)"
    )
    args = parser.parse_args(argv)
    start = time.perf_counter()
    print(
        f"combcn: building or checking the native op in {_ext.cache_dir()} (first build ~30 s)",
        file=sys.stderr,
    )
    ok = _ext.load(verbose=args.verbose, warn=False)
    st = _ext.state()
    if not ok:
        print(f"combcn: native op not built: {st['error']}", file=sys.stderr)
        return 1
    what = "cpu + cuda" if st["cuda"] else "cpu"
    print(f"combcn: native op ready ({what}) in {time.perf_counter() - start:.1f} s: {st['path']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
