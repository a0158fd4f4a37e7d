"""Check a DCASE S5 ``dev_set`` tree and print what is missing or malformed.

    python -m s5lib.bin.verify_data --db_root /path/to/dev_set --year 2025 [--no_audio]

Exit status 0 when the tree is usable, 1 when it is not (the report says why).
"""
import argparse
import sys

from s5lib import constants
from s5lib.data.layout import verify_dev_set


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db_root", required=True, help="the dev_set directory")
    parser.add_argument("--year", type=int, default=2025, choices=constants.YEARS)
    parser.add_argument("--no_audio", action="store_true",
                        help="skip reading wav headers (sample rate, channels)")
    parser.add_argument("--num_threads", type=int, default=8, help="threads reading wav headers")
    parser.add_argument("--max_per_kind", type=int, default=20,
                        help="list at most this many problems of each kind")
    args = parser.parse_args(argv)
    report = verify_dev_set(args.db_root, args.year, check_audio=not args.no_audio,
                            num_threads=args.num_threads, progress=sys.stderr.isatty())
    print(report.format(max_per_kind=args.max_per_kind))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
