"""Subcommands of `tbd`; each module has `register(subparsers)`."""

import argparse


def add_home(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--home", help="results store folder (default: $TBD_HOME or ~/.local/share/tbd)")


EXAMPLES = argparse.RawDescriptionHelpFormatter
