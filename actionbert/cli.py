"""The `actionbert` command line.

This is the only module that parses arguments or prints progress; every command calls an importable function
of the library. Each sub-command is a pair of functions, `_args_<name>(parser)` and `_run_<name>(args)`,
listed in the `COMMANDS` dict literal at the bottom.
"""

from __future__ import annotations

import argparse
import sys


# --------------------------------------------------------------------------------------------- models
def _args_models(p: argparse.ArgumentParser) -> None:
    p.add_argument("--num-classes", type=int, default=51, help="class count used for the parameter counts")


def _run_models(args: argparse.Namespace) -> int:
    from actionbert.models import list_models

    rows = list_models(num_classes=args.num_classes)
    print(_table(rows))
    return 0


def _table(rows: list[dict]) -> str:
    """Format a list of same-keyed dicts as an aligned plain-text table."""
    if not rows:
        return "(nothing)"
    keys = list(rows[0])
    cells = [[_fmt(r[k]) for k in keys] for r in rows]
    widths = [max(len(k), *(len(c[i]) for c in cells)) for i, k in enumerate(keys)]
    line = lambda vals: "  ".join(v.rjust(w) if _numeric(v) else v.ljust(w) for v, w in zip(vals, widths))  # noqa: E731
    return "\n".join([line(keys), line(["-" * w for w in widths]), *(line(c) for c in cells)])


def _fmt(v) -> str:
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    return "-" if v is None else str(v)


def _numeric(s: str) -> bool:
    return s.replace(",", "").replace(".", "").replace("-", "").isdigit()


# --------------------------------------------------------------------------------------------- main
COMMANDS = {
    "models": (_args_models, _run_models, "list backbones, heads and reduction blocks with their sizes"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="actionbert", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (add_args, _, help_text) in COMMANDS.items():
        add_args(sub.add_parser(name, help=help_text, description=help_text))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _, run, _ = COMMANDS[args.command]
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
