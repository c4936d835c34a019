"""The ``napari-svi`` command line: degrade, restore, info, and the subcommands of other modules.

Each extra subcommand lives in its own module exposing ``add_parser(subparsers)``; the parser it
adds sets ``func`` (called with the parsed namespace, returning an exit code). List the module in
``_SUBCOMMAND_MODULES`` to register it.
"""

from __future__ import annotations

import argparse
import importlib
import sys

_SUBCOMMAND_MODULES: tuple[str, ...] = ()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="napari-svi", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in _SUBCOMMAND_MODULES:
        importlib.import_module(name).add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError) as err:
        print(f"napari-svi {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"napari-svi {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
