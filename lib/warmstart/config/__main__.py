"""``python -m warmstart.config``: typed, validated study parameters (params.yaml).

One section per DVC stage plus a ``shared`` block. Every stage calls
:func:`load_params` first, so a bad value stops the stage before it writes
anything, with a message that names the key and what is allowed.

CLI::

    python -m warmstart.config check [params.yaml]
    python -m warmstart.config apply-profile smoke [params.yaml]
"""

from __future__ import annotations

import argparse
import sys

from warmstart.config.load import ParamsError, apply_profile, load_params
from warmstart.data.sources import check_languages


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m warmstart.config", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("check", help="validate a params file")
    c.add_argument("params", nargs="?", default="params.yaml")
    a = sub.add_parser("apply-profile", help="overlay a profile (a name, or a .yaml path) onto a params file in place")
    a.add_argument("name")
    a.add_argument("params", nargs="?", default="params.yaml")
    args = ap.parse_args(argv)
    try:
        if args.cmd == "check":
            params = load_params(args.params)
            try:
                check_languages(params)
            except ValueError as err:
                raise ParamsError(f"{args.params}: {err}") from None
            print(f"{args.params}: ok")
        else:
            apply_profile(args.name, args.params)
            print(f"{args.params}: applied profile {args.name}")
    except ParamsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
