"""The docs' own promises that need no server: every block is tagged and parses, every `tested by`
names a test that exists, every relative link resolves, and the tables copied from the code are the
code's. tests/e2e/test_docs.py runs the commands themselves."""

from __future__ import annotations

import ast
import re
import shlex
from pathlib import Path

import pytest

from sms_core import settings
from tests import doc_blocks
from tests.conftest import PROJECT_ROOT

LINK = re.compile(r"\[[^\]]*\]\((?P<target>[^)\s]+)\)")
EXTERNAL = ("http://", "https://", "mailto:")
README_MAX_LINES = 200


def page_text_outside_blocks(path: Path) -> list[str]:
    """The page's lines, those inside fenced blocks left out."""
    kept, inside = [], False
    for line in path.read_text(encoding="utf-8").splitlines():
        if doc_blocks.FENCE.match(line) or (inside and line == "```"):
            inside = not inside
            continue
        if not inside:
            kept.append(line)
    return kept


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    return {slug(line.lstrip("#")) for line in page_text_outside_blocks(path) if re.match(r"#{1,6} ", line)}


def test_the_matcher_reads_placeholders_and_elided_lines() -> None:
    expected = ("$ is not here", "model <model version>, p=<p>", "...", "end")
    assert doc_blocks.matches(expected[1:], "model 0fc0116bb6c3d228, p=0.000\nmore\nlines\nend\n")
    assert doc_blocks.matches(expected[1:], "model a, p=1  \nend\n\n")
    assert not doc_blocks.matches(expected[1:], "model a, p=1\nend\nafter\n")
    assert not doc_blocks.matches(expected[1:], "model a p=1\nend\n")
    # A placeholder stays within its line; `...` alone stands for lines.
    assert not doc_blocks.matches(("a<x>b",), "a\nb\n")
    assert doc_blocks.matches(("...",), "")
    assert doc_blocks.matches(("x", "..."), "x\n")
    # Regex characters in the docs are literal.
    assert doc_blocks.matches(("p(spam)=[0.5]*",), "p(spam)=[0.5]*\n")
    assert not doc_blocks.matches(("p(spam)=[0.5]*",), "pspam=0.5\n")


def test_a_console_block_reads_as_commands_with_their_output(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "<!-- tested by tests/a.py::test_b, tests/c.py::test_d -->\n```bash\nmake run\n```\n\n"
        "```console\n$ curl -s x \\\n    -d '{}'\n{}\n$ true\n```\n"
        "```console one-command\n$ sms-assets run\n$ dg launch\n```\n"
    )
    bash, console, one = doc_blocks.blocks(page)
    assert (bash.tag, bash.tested_by) == ("bash", ("tests/a.py::test_b", "tests/c.py::test_d"))
    first, second = doc_blocks.commands(console)
    assert (first.command, first.expected, first.line) == ("curl -s x -d '{}'", ("{}",), 7)
    assert (second.command, second.expected) == ("true", ())
    [only] = doc_blocks.commands(one)
    assert (only.command, only.expected, one.options) == (
        "sms-assets run",
        ("$ dg launch",),
        ("one-command",),
    )


def test_every_block_has_a_tag_that_says_how_it_is_tested() -> None:
    untagged = [
        f"{block.where}: ```{block.tag}"
        for block in doc_blocks.all_blocks()
        if block.tag not in doc_blocks.TAGS
    ]
    assert untagged == [], f"tag each block {sorted(doc_blocks.TAGS)}"
    options = {
        f"{block.where}: ```{block.tag} {' '.join(block.options)}"
        for block in doc_blocks.all_blocks()
        if block.options and (block.tag, block.options) != (doc_blocks.RUN, (doc_blocks.ONE_COMMAND,))
    }
    assert options == set(), f"the one option is ```{doc_blocks.RUN} {doc_blocks.ONE_COMMAND}"


def test_every_console_block_is_commands_a_test_can_run() -> None:
    commands = doc_blocks.all_commands()
    assert commands
    for command in commands:
        # A placeholder is for output only: a command holding one could not be run as written.
        assert not doc_blocks.PLACEHOLDER.search(command.command), command.id
        assert command.command, command.id


def _defined_tests(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            names.add(node.name)
        elif isinstance(node, ast.ClassDef):
            names |= {
                f"{node.name}::{item.name}"
                for item in node.body
                if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef)
            }
    return {name for name in names if name.split("::")[-1].startswith("test_")}


def test_every_bash_block_names_tests_that_exist() -> None:
    missing = []
    for block in doc_blocks.all_blocks():
        if block.tag != doc_blocks.TESTED_ELSEWHERE:
            continue
        if not block.tested_by:
            missing.append(f"{block.where}: no <!-- tested by tests/...py::test_name --> before it")
        for test_id in block.tested_by:
            path, _, name = test_id.partition("::")
            file = PROJECT_ROOT / path
            if not (
                path.startswith("tests/") and file.is_file() and name.split("[")[0] in _defined_tests(file)
            ):
                missing.append(f"{block.where}: {test_id} does not exist")
    assert missing == []


def test_every_relative_link_resolves_to_a_file_and_its_heading() -> None:
    broken = []
    for page in doc_blocks.doc_files():
        for line in page_text_outside_blocks(page):
            for link in LINK.finditer(line):
                target = link["target"]
                if target.startswith(EXTERNAL):
                    continue
                file, _, anchor = target.partition("#")
                resolved = (page.parent / file).resolve() if file else page
                if not resolved.exists():
                    broken.append(f"{page.relative_to(PROJECT_ROOT)}: {target}")
                elif anchor and (resolved.suffix != ".md" or anchor not in anchors(resolved)):
                    broken.append(f"{page.relative_to(PROJECT_ROOT)}: {target} (no such heading)")
    assert broken == []


def test_the_readme_is_one_screen_and_links_every_page() -> None:
    readme = (PROJECT_ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= README_MAX_LINES
    linked = {link["target"].partition("#")[0] for link in LINK.finditer(readme)}
    pages = {str(path.relative_to(PROJECT_ROOT)) for path in doc_blocks.doc_files()} - {"README.md"}
    assert pages <= linked


def _make_targets() -> dict[str, tuple[list[str], list[str]]]:
    """Each Makefile target: its prerequisites and its recipe's commands."""
    targets: dict[str, tuple[list[str], list[str]]] = {}
    current = None
    for line in (PROJECT_ROOT / "Makefile").read_text().splitlines():
        rule = re.match(r"^([A-Za-z][\w.-]*):(?!=)(.*)$", line)
        if rule:
            current = rule[1]
            targets[current] = (rule[2].replace("|", " ").split(), [])
        elif line.startswith("\t") and current:
            targets[current][1].append(line.strip())
    return targets


def test_make_test_runs_every_check_the_docs_name() -> None:
    targets = _make_targets()
    prerequisites, recipe = targets["test"]
    assert "prerequisites" in prerequisites
    assert recipe == [
        ".venv/bin/ruff check .",
        ".venv/bin/ruff format --check .",
        ".venv/bin/pyright",
        ".venv/bin/lint-imports",
        ".venv/bin/pytest",
    ]
    assert targets["lint"][1] == [
        ".venv/bin/ruff check .",
        ".venv/bin/ruff format --check .",
        ".venv/bin/lint-imports",
    ]
    # test-fast is `make lint` and the unit tests, with the servers refused.
    assert "prerequisites" not in targets["test-fast"][0]
    assert targets["test-fast"][1] == [
        *targets["lint"][1],
        'SMS_TESTS_WITHOUT_SERVICES=1 .venv/bin/pytest -m "not integration and not e2e" tests/unit',
    ]
    assert targets["run"][1] == [".venv/bin/sms-assets run"]
    # Every `make X` the docs show is a target of the Makefile.
    named = {
        word
        for block in doc_blocks.all_blocks()
        if block.tag == doc_blocks.TESTED_ELSEWHERE
        for line in block.lines
        if line.startswith("make ")
        for word in shlex.split(line.split("#", 1)[0])[1:]
    }
    assert named and named <= set(targets)


def test_the_wrk_install_is_the_one_make_and_ci_use() -> None:
    readme = PROJECT_ROOT / "README.md"
    [block] = [b for b in doc_blocks.blocks(readme) if any("install wrk" in line for line in b.lines)]
    installs = [line.split("#", 1)[0].strip() for line in block.lines]
    makefile = (PROJECT_ROOT / "Makefile").read_text()
    [message] = re.findall(r"missing prerequisite: wrk \(([^)]*)\)", makefile)
    assert installs == [part.split(": ", 1)[1] for part in message.split("; ")]
    assert "apt-get install -y -qq wrk" in (PROJECT_ROOT / ".ci" / "run").read_text()


def _table_rows(path: Path) -> list[list[str]]:
    return [
        [cell.strip() for cell in line.strip().strip("|").split(" | ")]
        for line in page_text_outside_blocks(path)
        if line.startswith("| ") and not line.startswith("| ---")
    ]


def test_the_configuration_page_lists_every_setting_with_its_default() -> None:
    rows = {
        row[0].strip("`"): row[1]
        for row in _table_rows(PROJECT_ROOT / "docs" / "configuration.md")
        if row[0].startswith("`SMS_")
    }
    assert list(rows) == list(settings.NAMES)
    for name, field in settings.Settings.model_fields.items():
        default = field.default
        if default is not None and not isinstance(default, Path):
            if isinstance(default, bool):  # as an environment variable spells it
                shown = f"`{str(default).lower()}`"
            else:
                shown = f"`{default:g}`" if isinstance(default, float) else f"`{default}`"
            assert shown in rows[settings.variable(name)], name
    assert "`" + settings.DEFAULT_STATE_DIR.name + "`" in rows[settings.STATE_ENV]


def test_the_benchmarks_page_lists_the_suites_targets() -> None:
    from benchmarks.suite import TARGETS

    rows = [
        (row[0], row[1].strip("`"), row[2])
        for row in _table_rows(PROJECT_ROOT / "docs" / "benchmarks.md")
        if len(row) == 3 and row[0] != "target"
    ]
    assert rows == [(target.name, target.goal, target.part) for target in TARGETS]


@pytest.mark.parametrize("page", doc_blocks.doc_files(), ids=lambda path: path.name)
def test_no_page_names_a_model_version(page: Path) -> None:
    """A version is a hash a fresh run prints anew: the docs show `<model version>` instead."""
    text = page.read_text(encoding="utf-8")
    assert not re.search(r"\b[0-9a-f]{16}\b", text.replace("0000000000000000", ""))


def test_the_serving_page_states_the_apis_limits() -> None:
    from sms_api.errors import EXCERPT_CHARS, MAX_ERRORS_LISTED
    from sms_api.readiness import READY_TIMEOUT_S
    from sms_api.schemas import MAX_BATCH, MAX_BODY_BYTES, MAX_TEXT_CHARS

    page = (PROJECT_ROOT / "docs" / "serving-api.md").read_text(encoding="utf-8")
    for stated in (
        f"a body is at most {MAX_BODY_BYTES:,} bytes",
        f"1 to {MAX_TEXT_CHARS:,} characters",
        f"a batch holds 1 to {MAX_BATCH:,} items",
        f"at most {EXCERPT_CHARS} characters",
        f"up to {MAX_ERRORS_LISTED} errors",
        f"each asked within {READY_TIMEOUT_S:g} s",
    ):
        assert stated in page, stated


def test_the_model_page_states_the_gate_and_the_training_defaults() -> None:
    from sms_assets.defs.training.assets import TrainingConfig
    from sms_core.model.gate import DEFAULT_THRESHOLDS

    rows = {row[0]: row[1:] for row in _table_rows(PROJECT_ROOT / "docs" / "model.md")}
    shown = {row.split("`")[1] if "`" in row else row: cells for row, cells in rows.items()}
    gated = {"f1": "F1", "spam_caught": "spam_caught", "ham_blocked": "ham_blocked", "roc_auc": "ROC AUC"}
    for metric, name in gated.items():
        floor, target, margin = (None if cell == "none" else float(cell) for cell in shown[name][:3])
        assert (floor, target, margin) == (
            DEFAULT_THRESHOLDS.floors.get(metric),
            DEFAULT_THRESHOLDS.targets.get(metric),
            DEFAULT_THRESHOLDS.margins.get(metric),
        ), metric
    for field, default in TrainingConfig().model_dump().items():
        assert rows[f"`{field}`"][0] == f"`{default}`", field


def test_the_configuration_page_states_the_postgres_bounds() -> None:
    from sms_core import bounds, watchdog

    page = (PROJECT_ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    rows = {row[0]: row[1] for row in _table_rows(PROJECT_ROOT / "docs" / "configuration.md")}
    assert rows["`connect_timeout`"] == f"{bounds.CONNECT_TIMEOUT_S} s"
    assert rows["`statement_timeout` (`options`)"] == f"{bounds.STATEMENT_TIMEOUT_S} s"
    assert rows["`keepalives_idle`, `keepalives_interval`, `keepalives_count`"] == (
        f"{bounds.KEEPALIVES_IDLE_S} s, {bounds.KEEPALIVES_INTERVAL_S} s, {bounds.KEEPALIVES_COUNT}"
    )
    assert rows["`tcp_user_timeout`"] == f"{bounds.TCP_USER_TIMEOUT_MS // 1000} s"
    for stated in (
        f"has waited {watchdog.SILENT_AFTER_S:g} s for an answer",
        f"no answer within {watchdog.PROBE_TIMEOUT_S:g} s either",
        f"the step fails within {watchdog.SILENT_BOUND_S:g} s",
        f"silent fails within {watchdog.SILENT_BOUND_S + bounds.CONNECT_TIMEOUT_S:g} s",
    ):
        assert stated in " ".join(page.split()), stated
