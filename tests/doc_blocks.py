"""The fenced blocks of the docs (README.md, CHANGELOG.md, docs/*.md), as the doc tests read them.

- ```console: `$ command` lines, each followed by the output it prints. In the output, a line `...`
  matches any number of lines (none included), and `<placeholder>` matches any text within a line.
  tests/e2e/test_docs.py runs every command and matches what it prints (stdout and stderr together).
- ```bash: commands that cannot run in a test's slice (a Docker engine, a cluster, a package manager,
  `make run` and `make test` themselves). Each is preceded by `<!-- tested by tests/...py::test_name -->`
  naming the test(s) that run what it says, comma-separated; tests/unit/test_docs_links.py checks that
  every named test exists.
- ```text, ```yaml, ```tsv: pictures, formats and configuration shown as they are, never commands.

A command spans several lines when a line ends with a backslash, as in a shell. A console block whose
output itself holds `$ ` lines (`sms-assets run` prints the command it launches) is tagged
```console one-command: its first line is the one command, every line after it output.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
RUN = "console"
TESTED_ELSEWHERE = "bash"
SHOWN = frozenset({"text", "yaml", "tsv"})
TAGS = frozenset({RUN, TESTED_ELSEWHERE, *SHOWN})
ONE_COMMAND = "one-command"
ANY_LINES = "..."
PROMPT = "$ "
# `<model version>`, `<seconds>`: a lower-case word or words between angle brackets.
PLACEHOLDER = re.compile(r"<[a-z][a-z0-9 _./-]*>")
TESTED_BY = re.compile(r"^<!-- tested by (?P<tests>[^>]+?) -->$")
FENCE = re.compile(r"^```(?P<tag>\S*)(?:[ \t]+(?P<options>.*?))?[ \t]*$")


def doc_files() -> list[Path]:
    """Every page the docs are made of, the front door first."""
    pages = [PROJECT_ROOT / "README.md", PROJECT_ROOT / "CHANGELOG.md"]
    return [*pages, *sorted((PROJECT_ROOT / "docs").glob("**/*.md"))]


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # of the opening fence, counted from 1
    tag: str
    options: tuple[str, ...]  # the words after the tag
    lines: tuple[str, ...]
    tested_by: tuple[str, ...]  # the test ids of the comment before it, if any

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(PROJECT_ROOT)}:{self.line}"


@dataclass(frozen=True)
class Command:
    block: Block
    line: int
    command: str
    expected: tuple[str, ...]

    @property
    def id(self) -> str:
        return f"{self.block.path.relative_to(PROJECT_ROOT)}:{self.line}"


def blocks(path: Path) -> Iterator[Block]:
    """The fenced blocks of a page, each with the test ids of the `tested by` comment just before it."""
    lines = path.read_text(encoding="utf-8").splitlines()
    index = 0
    while index < len(lines):
        fence = FENCE.match(lines[index])
        if not fence:
            index += 1
            continue
        start = index
        index += 1
        body = []
        while index < len(lines) and lines[index] != "```":
            body.append(lines[index])
            index += 1
        if index == len(lines):
            raise ValueError(f"{path}:{start + 1}: a fenced block that never closes")
        before = next((lines[i] for i in range(start - 1, -1, -1) if lines[i].strip()), "")
        named = TESTED_BY.match(before.strip())
        tested_by = tuple(t.strip() for t in named["tests"].split(",")) if named else ()
        options = tuple((fence["options"] or "").split())
        yield Block(path, start + 1, fence["tag"], options, tuple(body), tested_by)
        index += 1


def all_blocks() -> list[Block]:
    return [block for path in doc_files() for block in blocks(path)]


def commands(block: Block) -> list[Command]:
    """The `$ command` lines of a console block, each with the output lines that follow it."""
    if not block.lines or not block.lines[0].startswith(PROMPT):
        raise ValueError(f"{block.where}: a console block starts with a `$ command` line")
    found: list[Command] = []
    index = 0
    while index < len(block.lines):
        first = index
        command = block.lines[index].removeprefix(PROMPT)
        while command.endswith("\\"):
            index += 1
            command = command[:-1] + block.lines[index].strip()
        index += 1
        output = []
        while index < len(block.lines) and (
            ONE_COMMAND in block.options or not block.lines[index].startswith(PROMPT)
        ):
            output.append(block.lines[index])
            index += 1
        found.append(Command(block, block.line + 1 + first, command.strip(), tuple(output)))
    return found


def all_commands() -> list[Command]:
    return [command for block in all_blocks() if block.tag == RUN for command in commands(block)]


def _line_pattern(line: str) -> str:
    parts, last = [], 0
    for placeholder in PLACEHOLDER.finditer(line):
        parts.append(re.escape(line[last : placeholder.start()]))
        parts.append(".*?")
        last = placeholder.end()
    parts.append(re.escape(line[last:]))
    return "".join(parts)


def output_pattern(expected: tuple[str, ...]) -> re.Pattern[str]:
    """A pattern for a whole output, one line of it per expected line (trailing spaces aside)."""
    pattern = "".join(
        r"(?:[^\n]*\n)*?" if line == ANY_LINES else _line_pattern(line.rstrip()) + r"\n" for line in expected
    )
    return re.compile(pattern)


def normalized(output: str) -> str:
    """Output as the pattern reads it: trailing spaces and blank lines at the end dropped, each line
    ended by a newline."""
    lines = [line.rstrip() for line in output.splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    return "".join(f"{line}\n" for line in lines)


def matches(expected: tuple[str, ...], output: str) -> bool:
    return output_pattern(expected).fullmatch(normalized(output)) is not None
