"""The command lines of README.md and docs/**/*.md, found and classified; the conventions are in
docs/architecture.md ("Commands in the docs") and tests/docs/test_doc_commands.py checks them.

- Shell blocks: fenced blocks with no info string or `sh`/`shell`/`bash`/`console`, and indented
  code blocks. Every line in them is a command (a trailing `\\` continues it); a block that holds
  something else (a diagram, output, a file) gets another info string such as `text` or `toml`.
- Inline code spans in prose are commands when they start with `tbd ` (or `.venv/bin/tbd `),
  `pytest `, `make `, `srun `, `pip install ` or `python3 bench/` (environment assignments such as
  `PYTHONPATH=src` may come first).
- A block line's comment may start with a tag: `# [GPU] ...` or `# [not run: REASON] ...`.
"""

from __future__ import annotations

import functools
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SHELL_INFO = {"", "sh", "shell", "bash", "console"}
PROGRAMS = ("tbd", "pytest", "make", "srun", "pip")
INLINE_START = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*=\S*\s+)*((\.venv/bin/)?(tbd|pytest|make|srun|pip install)\s+\S|python3? bench/)")
TAG = re.compile(r"^\[(GPU|not run: [^\]]+)\]")
METAVAR = re.compile(r"^[A-Z][A-Z0-9_]*$")  # ID, NAME, A, OUT, KEY=VALUE (as in --help's usage lines)
FENCE = re.compile(r"^(\s*)(```+|~~~+)\s*([^\s`]*)")


def doc_files(root: Path = ROOT) -> list[Path]:
    """README.md and every Markdown file under docs/: a new doc is covered without edits here."""
    return [root / "README.md", *sorted((root / "docs").rglob("*.md"))]


@dataclass(frozen=True)
class DocCommand:
    """One command line of the docs: its words, where it is, and its tag."""

    text: str
    path: Path
    line: int
    inline: bool
    tag: str = ""  # "GPU", "not run: REASON" or ""

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"

    @property
    def env(self) -> dict[str, str]:
        return split_env(words_of(self.text))[0]

    @property
    def words(self) -> list[str]:
        """The command's words without leading environment assignments, `.venv/bin/tbd` as `tbd`."""
        return split_env(words_of(self.text))[1]


def words_of(text: str) -> list[str]:
    try:
        words = shlex.split(text)
    except ValueError:  # an unbalanced quote in prose: the plain words
        words = text.split()
    return [w.removeprefix(".venv/bin/") for w in words]


def split_env(words: list[str]) -> tuple[dict[str, str], list[str]]:
    env = {}
    while words and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", words[0]):
        key, _, value = words[0].partition("=")
        env[key] = value
        words = words[1:]
    return env, words


def split_comment(line: str) -> tuple[str, str]:
    """'cmd  # comment' -> ('cmd', 'comment'); a # inside quotes or inside a word is not a comment."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].strip(), line[i + 1:].strip()
    return line.strip(), ""


def code_regions(lines: list[str]) -> list[tuple[int, int, str | None]]:
    """(start, end, info) of each code block, 0-based and end-exclusive, including the fences;
    info is the fence's info string, None for an indented block."""
    regions = []
    i = 0
    while i < len(lines):
        fence = FENCE.match(lines[i])
        if fence:
            marker = fence.group(2)
            end = i + 1
            while end < len(lines) and not lines[end].strip().startswith(marker):
                end += 1
            regions.append((i, min(end + 1, len(lines)), fence.group(3).lower()))
            i = end + 1
            continue
        if lines[i].startswith("    ") and lines[i].strip() and (i == 0 or not lines[i - 1].strip()) and not _continues_list(lines, i):
            start = i
            while i < len(lines) and (lines[i].startswith("    ") or not lines[i].strip()):
                i += 1
            end = i
            while end > start and not lines[end - 1].strip():
                end -= 1
            regions.append((start, end, None))
            continue
        i += 1
    return regions


def _continues_list(lines: list[str], i: int) -> bool:
    """Whether indented line i belongs to a list item above it (its text, not a code block)."""
    for j in range(i - 1, -1, -1):
        if not lines[j].strip() or lines[j].startswith("    "):
            continue
        return bool(re.match(r"^\s*([-*+]|\d+\.)\s", lines[j])) or lines[j].startswith("  ")
    return False


def block_commands(path: Path, lines: list[str]) -> list[DocCommand]:
    out = []
    for start, end, info in code_regions(lines):
        if info is not None and info not in SHELL_INFO:
            continue
        body = range(start + 1, end - 1) if info is not None else range(start, end)
        pending, first = "", 0
        for i in body:
            text, comment = split_comment(lines[i])
            if not text:  # blank or a comment line
                continue
            if text.endswith("\\"):
                pending, first = pending + text[:-1] + " ", first or i + 1
                continue
            tag = TAG.match(comment)
            out.append(DocCommand(pending + text, path, first or i + 1, inline=False, tag=tag.group(1) if tag else ""))
            pending, first = "", 0
    return out


def inline_commands(path: Path, lines: list[str]) -> list[DocCommand]:
    """Code spans of the prose (code blocks blanked out) that start like a command; a span may
    wrap onto the next line, as Markdown allows."""
    prose = list(lines)
    for start, end, _ in code_regions(lines):
        prose[start:end] = [""] * (end - start)
    text = "\n".join(prose)
    out = []
    for match in re.finditer(r"(?<!`)`([^`]+)`(?!`)", text):
        span = " ".join(match.group(1).split())
        if "\n\n" not in match.group(1) and INLINE_START.match(span):
            out.append(DocCommand(span, path, text.count("\n", 0, match.start()) + 1, inline=True))
    return out


INVALID_TOML_TAG = re.compile(r"^#\s*\[invalid: [^\]]+\]")  # a ```toml block that shows broken TOML on purpose


@dataclass(frozen=True)
class DocToml:
    """One ```toml block of the docs: its text (without the fences) and where it starts."""

    text: str
    path: Path
    line: int

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"

    @property
    def invalid_on_purpose(self) -> bool:
        return bool(INVALID_TOML_TAG.match(self.text.lstrip()))


def find_toml_blocks(root: Path = ROOT) -> list[DocToml]:
    """Every fenced ```toml block of README.md and docs/**/*.md."""
    out = []
    for path in doc_files(root):
        lines = path.read_text().splitlines()
        for start, end, info in code_regions(lines):
            if info == "toml":
                out.append(DocToml("\n".join(lines[start + 1 : end - 1]), path, start + 1))
    return out


def find_commands(root: Path = ROOT) -> list[DocCommand]:
    """Every command line of the docs in document order; `a && b` gives two commands."""
    out = []
    for path in doc_files(root):
        lines = path.read_text().splitlines()
        for cmd in block_commands(path, lines) + inline_commands(path, lines):
            for part in cmd.text.split("&&"):
                out.append(DocCommand(part.strip(), cmd.path, cmd.line, cmd.inline, cmd.tag))
    return sorted(out, key=lambda c: (str(c.path), c.line))


def is_synopsis(words: list[str]) -> bool:
    """A usage line, not a command: metavariables (ID, NAME, KEY=VALUE), '...', [optional] parts
    or a|b choices."""
    for word in words[1:]:
        if "..." in word or word.startswith("[") or (word.endswith("]") and "[" not in word):
            return True
        if "|" in word and word != "|":
            return True
        value = word.split("=", 1)[1] if word.startswith("-") and "=" in word else word
        if value.startswith("-"):
            continue
        if METAVAR.match(value) or any(METAVAR.match(part) for part in re.split(r"[=:,./]", value)):
            return True  # A, ID, KEY=VALUE, FILE.py:OBJECT
    return False


def classify(cmd: DocCommand) -> tuple[str, str]:
    """(kind, detail): how the test checks the command.

    run       executed on the CPU (tests/docs/test_doc_commands.py says how it is shortened)
    gpu       `--device cuda`, `--devices cuda` or a `[GPU]` tag (for srun, on its tbd command):
              fails here with one line, exit 2
    synopsis  a usage line: the command and each of its flags exist
    mention   an inline `tbd COMMAND` (or `tbd GROUP COMMAND`, as `tbd data check`) naming a command: it exists
    static    bench scripts, make targets, pip extras, pytest paths: what they name exists
    not-run   a `[not run: REASON]` tag
    unknown   none of these: the test fails, naming the line
    """
    words = cmd.words
    if cmd.tag.startswith("not run"):
        return "not-run", cmd.tag.split(":", 1)[1].strip()
    if not words:
        return "unknown", "no command"
    program = words[0]
    if program == "tbd":
        if is_synopsis(words):
            return "synopsis", ""
        if cmd.tag == "GPU" or needs_cuda(words):
            return "gpu", ""
        if cmd.inline and names_a_command(words):
            return "mention", ""
        return "run", ""
    if program in ("python", "python3") and len(words) > 1 and words[1].startswith("bench/"):
        return "static", "bench"
    if program == "srun" and "tbd" in words:  # SLURM starts tbd on GPU nodes: its tbd command is checked as GPU-only
        inner = words[words.index("tbd"):]
        if cmd.tag == "GPU" or needs_cuda(inner):
            return "gpu", "srun"
        return "unknown", "an srun line starts tbd on a cluster: give its tbd command --device cuda or tag it # [GPU]"
    if program in ("make", "pytest") or words[:2] == ["pip", "install"]:
        return "static", program
    return "unknown", f"'{program}' is not a command the docs test knows; tag it # [not run: REASON] or teach tests/docs"


def names_a_command(words: list[str]) -> bool:
    """`tbd COMMAND`, or `tbd GROUP COMMAND` of a command with commands of its own (`tbd data check`)."""
    if len(words) == 2:
        return not words[1].startswith("-")
    return len(words) == 3 and words[2] in command_groups().get(words[1], ())


def subcommands(parser) -> dict:
    """The commands of an argparse parser ({} if it has none): tbd's, or those of `tbd data`."""
    return next((a.choices for a in parser._actions if a.__class__.__name__ == "_SubParsersAction"), {})


@functools.cache
def command_groups() -> dict[str, tuple[str, ...]]:
    """tbd's commands that have commands of their own, from its parser: {'data': ('make', ...), ...}."""
    from tbd import cli

    return {name: tuple(subcommands(sub)) for name, sub in subcommands(cli.build_parser()).items() if subcommands(sub)}


def needs_cuda(words: list[str]) -> bool:
    """`--device cuda`, or `--devices` listing cuda only (a sweep over cpu,cuda runs its CPU points here)."""
    for i, word in enumerate(words):
        flag, _, value = word.partition("=")
        if flag in ("--device", "--devices"):
            value = value or (words[i + 1] if i + 1 < len(words) else "")
            if set(value.split(",")) == {"cuda"}:
                return True
    return False


if __name__ == "__main__":  # python -m tests.docs.doc_commands: every command with its kind
    from collections import Counter

    kinds = Counter()
    for command in find_commands():
        kind, detail = classify(command)
        kinds[kind] += 1
        print(f"{command.where:28} {kind:9} {command.text}" + (f"   ({detail})" if kind in ("not-run", "unknown") else ""))
    print(", ".join(f"{n} {kind}" for kind, n in kinds.most_common()))
