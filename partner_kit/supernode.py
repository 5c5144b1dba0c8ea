"""Flower's SuperNode, polling its SuperLink every fraction of a second instead of every 3 s.

Flower 1.42's SuperNode loop (`flwr.supernode.start_client_internal`) sleeps a fixed 3 s whenever a pull
finds no message, and 0.5 s while it waits for the ClientApp's reply: on average ~2 s added to every message,
the largest fixed cost of a deployed round once the ClientApp process starts warm (`partner_kit.warm_exec`).
This entry point is `flower-supernode` with that module's `time.sleep` capped at `--poll-interval` and the
object-pull backoff shortened (`consortium.flower_tuning`); nothing else changes (same arguments, same protocol,
same node). A pull is one small HTTP call to the SuperLink, so a few per second per partner is still light.

    python -m partner_kit.supernode [--poll-interval 0.2] <flower-supernode arguments>
"""

from __future__ import annotations

import argparse
import sys

from consortium.flower_tuning import cap_supernode_waits, shorten_object_pull_backoff

DEFAULT_POLL_S = 0.2


def split_poll_interval(argv: list[str]) -> tuple[float, list[str]]:
    """Take `--poll-interval S` out of the argument list; the rest is flower-supernode's."""
    ap = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    ap.add_argument("--poll-interval", type=float, default=DEFAULT_POLL_S)
    known, rest = ap.parse_known_args(argv)
    if not known.poll_interval > 0:
        raise SystemExit("--poll-interval must be a positive number of seconds")
    return known.poll_interval, rest


def main() -> None:
    cap, rest = split_poll_interval(sys.argv[1:])
    from flwr.supernode.cli.flower_supernode import flower_supernode

    cap_supernode_waits(cap)
    shorten_object_pull_backoff()
    sys.argv = ["flower-supernode", *rest]
    flower_supernode()


if __name__ == "__main__":
    main()
