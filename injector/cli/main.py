"""`mesher-injector`: serve, inject, check-template, certs, status, restart, diff.

Bad input gets a one-line error on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from injector import __version__
from injector.cli import cluster, diff, files, serve
from injector.cli.flags import CliError
from injector.core.names import PRODUCT

EXIT_INVALID = 1


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:  # argparse keeps its subparsers only there
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PRODUCT,
        description="Inject the ServiceComb mesher sidecar into Kubernetes pods.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    serve.add_parser(sub)
    files.add_parsers(sub)
    cluster.add_parsers(sub)
    diff.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # say it with the subcommand's usage, not the top-level one
        sub = _subparsers(parser).get(args.command, parser)
        sub.error(f"unrecognized arguments: {' '.join(extra)}")
    handlers = {
        "serve": serve.run_serve,
        "inject": files.run_inject,
        "check-template": files.run_check_template,
        "certs": files.run_certs,
        "status": cluster.run_status,
        "restart": cluster.run_restart,
        "diff": diff.run_diff,
    }
    try:
        return handlers[args.command](args)
    except CliError as exc:
        print(f"mesher-injector {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_INVALID
    except cluster.ClusterError as exc:
        print(f"mesher-injector {args.command}: error: {exc}", file=sys.stderr)
        return cluster.EXIT_ERROR
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `... | head` closed the pipe: not an error of ours
        sys.stderr.close()
        return 0
