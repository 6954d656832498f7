"""``python -m bnproxy COMMAND``: helper commands (the proxy itself runs
under ``twistd bnproxy``). ``python -m bnproxy --help`` shows every command's
usage."""

from __future__ import annotations

import argparse
import sys

from bnproxy.tools import freqtrade_config, status

COMMANDS = {"freqtrade-config": freqtrade_config, "status": status}


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="python -m bnproxy",
        description="Helper commands for bnproxy. The proxy itself runs as "
                    "'twistd -n bnproxy --port 8080' (see 'twistd bnproxy --help').",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = top.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module in COMMANDS.items():
        p = sub.add_parser(name, help=module.DESCRIPTION, description=module.DESCRIPTION)
        module.add_arguments(p)
        p.set_defaults(run=module.run, parser=p)
    top.epilog = "commands:\n" + "\n".join(
        "  " + p.format_usage().removeprefix("usage: ").rstrip()
        for p in sub.choices.values())
    return top


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    return int(args.run(args, args.parser))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
