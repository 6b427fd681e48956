"""README.md opens with the two commands, and CI runs exactly the README's test command."""

import configparser
import os
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FENCED_BLOCK = re.compile(r"^```[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)


def fenced_blocks(text):
    return [block.strip() for block in FENCED_BLOCK.findall(text)]


def readme_commands():
    """The first two fenced code blocks of README.md, each one command line."""
    blocks = fenced_blocks((ROOT / "README.md").read_text(encoding="utf-8"))
    assert len(blocks) >= 2, "README.md must open with two fenced commands"
    return blocks[:2]


def extras(command):
    return set(re.findall(r"\.\[([\w,-]+)\]", command)[0].split(",")) if "[" in command else set()


def test_readme_opens_with_two_commands():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    first_block_at = text.index("```")
    # Nothing but the title and a short line before the first command.
    assert len(text[:first_block_at].strip().splitlines()) <= 4
    commands = readme_commands()
    for command in commands:
        assert len(command.splitlines()) == 1, f"not a single command line: {command!r}"
        assert command.startswith("python3 -m venv"), "works on a fresh machine: makes its venv"
    reproduce = [c for c in commands if "keras-kd reproduce" in c]
    tests = [c for c in commands if "pytest" in c]
    assert len(reproduce) == 1 and len(tests) == 1 and reproduce != tests


def test_ci_runs_the_readme_test_command_verbatim():
    test_command = next(c for c in readme_commands() if "pytest" in c)
    ci_script = ROOT / ".ci" / "run"
    lines = [line.strip() for line in ci_script.read_text(encoding="utf-8").splitlines()]
    assert test_command in lines, f"{test_command!r} is not a line of .ci/run"
    assert os.access(ci_script, os.X_OK), ".ci/run must be executable"
    # pytest's "no tests collected" (exit code 5) is handled, not passed off as green.
    assert re.search(r"\brc\b.*\b5\b", ci_script.read_text(encoding="utf-8"))


def test_readme_commands_name_real_extras_and_entry_point():
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg", encoding="utf-8")
    declared_extras = set(config["options.extras_require"])
    for command in readme_commands():
        assert extras(command) <= declared_extras, (extras(command), declared_extras)
    scripts = config["options.entry_points"]["console_scripts"]
    assert re.search(r"^\s*keras-kd\s*=\s*keras_kd\.cli:main\s*$", scripts, re.MULTILINE)
    assert "pytest" in config["options.extras_require"]["test"]


MARKDOWN_LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def test_readme_is_a_short_front_door_linking_the_docs():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) < 200
    for page in ("docs/getting-started.md", "CHANGELOG.md", "CONTRIBUTING.md", "LICENSE"):
        assert f"({page})" in text, f"README.md does not link {page}"


def test_relative_links_of_readme_and_docs_lead_to_files():
    # mkdocs --strict checks the site's own links; this also covers README.md and
    # CONTRIBUTING.md, which GitHub and PyPI render outside the site.
    documents = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", ROOT / "CHANGELOG.md"]
    documents += sorted((ROOT / "docs").rglob("*.md"))
    for document in documents:
        for target in MARKDOWN_LINK.findall(document.read_text(encoding="utf-8")):
            if "://" in target or target.startswith("mailto:"):
                continue
            assert (document.parent / target).exists(), f"{document.name} links {target}"


def _bad_inputs_hook():
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "_bad_inputs_hook", ROOT / "docs" / "hooks" / "bad_inputs.py"
    )
    hook = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hook)
    return hook


def test_the_bad_input_tables_come_from_every_case_file_there_is(tmp_path):
    hook = _bad_inputs_hook()
    (tmp_path / "tests").mkdir()
    assert hook.bad_input_tables(root=tmp_path) == ""  # no case file yet: no table
    row = (
        "from typing import NamedTuple\n"
        "class Row(NamedTuple):\n"
        "    argument: str\n    bad_value: str\n    entry: str\n    call: object\n"
        "    error: str\n"
        "BAD_INPUTS = [Row('num_bins', '0', 'f', None, '`num_bins` must be >= 1, got 0'),\n"
        "              Row('num_bins', '-3', 'g', None, '`num_bins` must be >= 1, got -3')]\n"
    )
    (tmp_path / "tests" / "test_bad_inputs_extra.py").write_text(row)
    tables = hook.bad_input_tables(root=tmp_path)
    assert "From `tests/test_bad_inputs_extra.py` (2 cases)" in tables
    assert "| `num_bins` | 0, -3 | `f`, `g` | `num_bins` must be >= 1, got <value> |" in tables


def test_the_docs_bad_input_page_renders_every_case_file():
    hook = _bad_inputs_hook()
    page = hook.on_page_markdown(
        (ROOT / "docs" / "reference" / "bad-inputs.md").read_text(encoding="utf-8"),
        page=None, config=None, files=None,
    )
    assert hook.MARKER not in page
    case_files = sorted((ROOT / "tests").glob("test_bad_inputs*.py"))
    assert case_files
    for case_file in case_files:
        assert f"From `tests/{case_file.name}`" in page
    table_rows = [line for line in page.splitlines() if line.startswith("| `")]
    assert len(table_rows) >= 10
