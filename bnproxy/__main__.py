"""``python -m bnproxy COMMAND``: helper commands (the proxy itself runs
under ``twistd bnproxy``)."""

import sys


def main(argv: list[str]) -> int:
    commands = {"freqtrade-config"}
    if not argv or argv[0] not in commands:
        print("usage: python -m bnproxy freqtrade-config --url URL [--futures]",
              file=sys.stderr)
        return 2
    from bnproxy import freqtrade

    return freqtrade.main(argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
