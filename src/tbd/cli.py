"""The `tbd` command line: `tbd list | run | results | export | demo` (and later commands).

Each command lives in `tbd/commands/<name>.py` with `register(subparsers)`; this file holds the
parser that turns bad input into one line naming the fix (exit code 2, no traceback). An option
that another command has points there (`tbd run --json`: the stored record is `tbd results show
latest --json`) rather than at this command's nearest spellings.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import threading

from tbd.errors import TbdError, Terminated, closest
from tbd.results.store import one_warning
from tbd.version import __version__

# An option of other commands given to one without it: where what was meant is, by (option, command);
# command None for any other. Options without an entry name the commands that take them.
ELSEWHERE = {
    ("--json", "export"): "the whole records: tbd export --format json",
    ("--json", None): "the stored record: tbd results show latest --json",
}
COMMAND_MODULES = ("listing", "run", "demo", "results", "export", "sweep", "compare", "report", "memory", "analyze", "scale", "tune", "env", "data")


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors that suggest the nearest valid option."""

    def error(self, message: str) -> None:  # type: ignore[override]
        if message.startswith("unrecognized arguments:"):
            words = message.split(":", 1)[1].split()
            flags = [w for w in words if w.startswith("-")]
            bad = (flags or words)[0].split("=")[0]
            prog, options = self._command_options()
            if bad.startswith("-"):
                message = self._unknown_option(bad, prog, options)
            else:  # a word no argument takes: most often a file given without its flag
                as_file = "--file" in options and (bad.endswith(".toml") or os.path.isfile(bad))
                message = f"unexpected argument '{bad}'" + (f"; a file goes with --file: {prog} --file {bad}" if as_file else f"; see '{prog} --help'")
        else:
            message = f"{message}; see '{self.prog} --help'"
        sys.stderr.write(f"tbd: error: {message}\n")
        sys.exit(2)

    def parse_known_args(self, args=None, namespace=None):
        self._argv = list(sys.argv[1:] if args is None else args)  # the words, for error(): main(argv) is not sys.argv
        return super().parse_known_args(args, namespace)

    def _unknown_option(self, bad: str, prog: str, options: list[str]) -> str:
        """The line for an option this command lacks: where another command has it, point there
        (its near misses here only when very near, e.g. --batch-size for sweep's --batch-sizes)."""
        command = prog.removeprefix(f"{self.prog} ") if prog != self.prog else None
        others = [name for name, sub in self._subcommands().items() if name != command and bad in _options_of(sub)]
        if not others:
            return f"unknown option '{bad}'{closest(bad, options)}; see '{prog} --help'"
        takers = ", ".join(f"{self.prog} {name}" for name in others) + (" takes it" if len(others) == 1 else " take it")
        where = ELSEWHERE.get((bad, command)) or ELSEWHERE.get((bad, None)) or takers
        return f"{prog} has no {bad}{closest(bad, options, cutoff=0.8)}; {where}"

    def _subcommands(self) -> dict[str, argparse.ArgumentParser]:
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction):
                return dict(action.choices)
        return {}

    def _command_options(self) -> tuple[str, list[str]]:
        """(prog, option strings) of the subcommand named on the command line, else of this parser."""
        subcommands = self._subcommands()
        for word in getattr(self, "_argv", sys.argv[1:]):
            if word in subcommands:
                return subcommands[word].prog, _options_of(subcommands[word])
        return self.prog, _options_of(self)


def _options_of(parser: argparse.ArgumentParser) -> list[str]:
    return [o for action in parser._actions for o in action.option_strings]


def build_parser() -> Parser:
    parser = Parser(
        prog="tbd",
        description="Benchmark and analyze neural-network training: throughput, utilization, memory.",
        epilog=(
            "examples:\n"
            "  tbd list\n"
            "  tbd run resnet50 --flavor tiny\n"
            "  tbd run resnet50 --device cuda --flavor paper --batch-size 256 --precision bf16 --channels-last --compile\n"
            "  tbd results\n"
            "  tbd export --format csv --output runs.csv"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"tbd {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for name in COMMAND_MODULES:
        importlib.import_module(f"tbd.commands.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    previous = _handle_sigterm()
    try:
        with one_warning():  # unreadable stored runs are named once, however many queries met them
            code = int(args.func(args) or 0)
        sys.stdout.flush()  # inside the try: a reader that left shows up here, not at exit
        return code
    except TbdError as exc:
        sys.stderr.write(f"tbd: error: {exc}\n")
        return exc.exit_code
    except Terminated:
        sys.stderr.write("tbd: terminated (SIGTERM); runs that finished are stored, the one in flight was stopped\n")
        return 143
    except KeyboardInterrupt:
        sys.stderr.write("tbd: interrupted; runs that finished are stored, the one in flight was dropped\n")
        return 130
    except BrokenPipeError:  # `tbd results --json | head`: the reader left; that is not an error
        _quiet_stdout()
        return 0
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _handle_sigterm():
    """SIGTERM is handled like Ctrl-C: raised as `Terminated` (a KeyboardInterrupt) in the main
    thread, so children are stopped and the store stays consistent; a second SIGTERM during that
    cleanup is ignored. Returns the previous handler (None off the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def terminate(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise Terminated()

    return signal.signal(signal.SIGTERM, terminate)


def _quiet_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush does not fail on the closed pipe."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


if __name__ == "__main__":
    sys.exit(main())
