"""What every benchmark prints about the machine it ran on: the load average.

These machines are shared and noisy, so each bench prints the load average at its start and
end beside its figures; this module is where it is read (the benches import it as a sibling).

Usage::

    .venv/bin/python bench/host.py    # prints the 1, 5 and 15 minute load averages
"""

from __future__ import annotations

import argparse
import os


def load_average() -> str:
    """The 1, 5 and 15 minute load averages, as ``/proc/loadavg`` prints them."""
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(description=__doc__.split("\n\n")[0]).parse_args(argv)
    print(f"load average: {load_average()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
