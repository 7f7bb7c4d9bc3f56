"""Reading a documentation page into the shell steps it shows, in order.

The conventions (what a doc writer may rely on) are in the README's "Docs that run"
section. In short:

* ` ```console ` blocks: each line starting with ``$ `` is a command (a line ending in
  ``\\`` or leaving a single quote open continues it); the lines after it, up to the
  next command, are its shown output. A comment ``# exits N`` on a command's last line
  says it exits with status N.
* ` ```sh ` (or ``bash``/``shell``) blocks run as one script; a ` ```text ` block that
  follows with nothing but blank lines between is its shown output.
* ``<!-- docs-test: skip (reason) -->`` right before a block leaves it out; the reason
  is required.
* ``<!-- docs-test: exit N -->`` right before a block says its last command (for
  ``console``) or the script (for ``sh``) exits with status N.
* ``<!-- docs-test: server-config -->`` right before a ` ```yaml ` block: the server the
  page runs against is started with it (the blocks are merged into ``imprint.yaml``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

SHELL_LANGUAGES = frozenset({"sh", "bash", "shell", "console"})
_FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,})(?P<info>[^`]*)$")
_DIRECTIVE = re.compile(r"^<!--\s*docs-test:\s*(?P<body>.*?)\s*-->\s*$")
_SKIP = re.compile(r"^skip\s*\((?P<reason>[^)]+)\)$")
_EXIT = re.compile(r"^exit\s+(?P<status>\d+)$")
_EXITS_COMMENT = re.compile(r"#\s*exits (?P<status>\d+)\b")


class PageError(ValueError):
    """The page breaks a convention (a skip without a reason, an unknown directive)."""


@dataclass(frozen=True)
class Command:
    """One command as a reader would type it, and what the page shows it printing."""

    line: int
    text: str
    expected: tuple[str, ...] | None  # None: the page shows no output for it
    exit_status: int = 0
    script: bool = False  # a sh block: run with `set -e`


@dataclass(frozen=True)
class Block:
    """A fenced block of the page: its language, where it starts, its text."""

    line: int
    language: str
    lines: tuple[str, ...]
    directives: tuple[str, ...] = ()
    #: Nothing but blank lines between the previous block and this one.
    adjacent: bool = False


@dataclass
class Page:
    """What a page asks for: the steps to run, the blocks it leaves out and why."""

    path: Path
    steps: list[Command] = field(default_factory=list)
    skipped: list[tuple[int, str]] = field(default_factory=list)
    server_config: list[str] = field(default_factory=list)


def fenced_blocks(text: str) -> list[Block]:
    """Every fenced block of a Markdown text, with the docs-test directives before it."""
    blocks: list[Block] = []
    lines = text.splitlines()
    pending: list[str] = []
    adjacent = False
    index = 0
    while index < len(lines):
        line = lines[index]
        directive = _DIRECTIVE.match(line.strip())
        if directive:
            pending.append(directive.group("body"))
            adjacent = False
            index += 1
            continue
        opening = _FENCE.match(line)
        if opening is None:
            if line.strip():
                pending, adjacent = [], False
            index += 1
            continue
        first = index + 1
        fence, indent = opening.group("fence"), len(opening.group("indent"))
        language = opening.group("info").strip().split(" ")[0].lower()
        body: list[str] = []
        index += 1
        while index < len(lines) and not (
            lines[index].strip().startswith(fence) and lines[index].strip().strip("`") == ""
        ):
            body.append(lines[index][indent:] if lines[index][:indent].isspace() else lines[index])
            index += 1
        blocks.append(Block(first, language, tuple(body), tuple(pending), adjacent))
        pending, adjacent = [], True
        index += 1
    return blocks


def _continues(command: str) -> bool:
    """Whether a console command goes on on the next line."""
    if command.endswith("\\"):
        return True
    unquoted = re.sub(r'"(?:[^"\\]|\\.)*"', "", command)  # a ' inside "..." opens nothing
    return unquoted.count("'") % 2 == 1


def console_commands(block: Block, exit_status: int) -> list[Command]:
    """The commands of a ``console`` block, each with the output shown after it."""
    commands: list[Command] = []
    current: list[str] | None = None
    output: list[str] = []
    start = block.line

    def flush() -> None:
        if current is not None:
            status = _EXITS_COMMENT.search(current[-1])
            commands.append(
                Command(
                    start,
                    "\n".join(current),
                    tuple(output) or None,
                    int(status.group("status")) if status else 0,
                )
            )

    for offset, line in enumerate(block.lines):
        if current is not None and not output and _continues("\n".join(current)):
            current.append(line)
            continue
        if line.startswith("$ ") or line == "$":
            flush()
            current, output, start = [line[2:]], [], block.line + 1 + offset
        elif current is not None:
            output.append(line)
    flush()
    if commands and exit_status:
        last = commands[-1]
        commands[-1] = Command(last.line, last.text, last.expected, exit_status)
    return commands


def read_page(path: Path) -> Page:
    """The steps of one page, in the order the page gives them."""
    page = Page(path)
    blocks = fenced_blocks(path.read_text(encoding="utf-8"))
    for position, block in enumerate(blocks):
        exit_status, skip = 0, None
        for directive in block.directives:
            if directive == "server-config":
                if block.language != "yaml":
                    raise PageError(f"{path}:{block.line}: server-config marks a yaml block")
                page.server_config.append("\n".join(block.lines))
                continue
            skipped, status = _SKIP.match(directive), _EXIT.match(directive)
            if skipped:
                skip = skipped.group("reason").strip()
            elif status:
                exit_status = int(status.group("status"))
            else:
                raise PageError(
                    f"{path}:{block.line}: unknown docs-test directive {directive!r} "
                    "(skip (reason), exit N, server-config)"
                )
        if block.language not in SHELL_LANGUAGES:
            continue
        if skip is not None:
            page.skipped.append((block.line, skip))
            continue
        if block.language == "console":
            page.steps.extend(console_commands(block, exit_status))
            continue
        following = blocks[position + 1] if position + 1 < len(blocks) else None
        shown = None
        if following is not None and following.language == "text" and following.adjacent:
            shown = following.lines
        page.steps.append(
            Command(block.line, "\n".join(block.lines), shown, exit_status, script=True)
        )
    return page
