"""`riffle-train` command line."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="riffle-train", description="riffle training path")
    sub = ap.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("digits", help="train and export the digits bases, adapters and held-out sets")
    d.add_argument("--out", default="models/digits")
    g = sub.add_parser("golden", help="write golden JSON files for the Rust tests")
    g.add_argument("--models", default="models/digits")
    g.add_argument("--out", default="tests/data/golden")
    args = ap.parse_args(argv)
    if args.cmd == "digits":
        from .digits import build_all
        build_all(args.out)
    elif args.cmd == "golden":
        from .golden import write_golden
        write_golden(args.models, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
