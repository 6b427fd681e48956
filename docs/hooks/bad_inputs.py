"""MkDocs hook: renders the bad-input tables from the tests that check them.

Every `tests/test_bad_inputs*.py` defines `BAD_INPUTS`, rows of (argument, bad_value,
entry, call, error), each one parametrized test. This hook imports each such file and
replaces the `<!-- bad-inputs -->` marker of a page with one Markdown table per file,
so the documented messages are exactly the tested ones. A file that is not there yet
simply contributes no table.
"""

import importlib.util
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MARKER = "<!-- bad-inputs -->"


def _load(path):
    """Imports a test file by path, as pytest would (tests/ and the root on sys.path)."""
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    for folder in (ROOT, ROOT / "tests"):
        if str(folder) not in sys.path:
            sys.path.insert(0, str(folder))
    spec = importlib.util.spec_from_file_location(f"_docs_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except ImportError as error:
        raise ImportError(
            f"The bad-input page is generated from tests/{path.name}, which needs the "
            f"test dependencies ({error}): pip install '.[test,docs]'."
        ) from error
    return module


def markdown_table(rows):
    """Rows that differ only in the bad value are merged, `<value>` standing for it."""
    merged = {}
    for row in rows:
        error = row.error.replace(f"got {row.bad_value}", "got <value>")
        values, entries = merged.setdefault((row.argument, error), ([], []))
        for item, seen in ((row.bad_value, values), (row.entry, entries)):
            if item not in seen:
                seen.append(item)
    lines = [
        "| argument | bad value | where | error message (contains) |",
        "|---|---|---|---|",
    ]
    for (argument, error), (values, entries) in merged.items():
        where = ", ".join(f"`{entry}`" for entry in entries)
        cells = [f"`{argument}`", ", ".join(values), where, error]
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(lines)


def bad_input_tables(root=ROOT):
    """One section per tests/test_bad_inputs*.py file: its name, then its table."""
    sections = []
    for path in sorted((root / "tests").glob("test_bad_inputs*.py")):
        rows = _load(path).BAD_INPUTS
        sections.append(
            f"### From `tests/{path.name}` ({len(rows)} cases)\n\n{markdown_table(rows)}\n"
        )
    return "\n".join(sections)


def on_page_markdown(markdown, page, config, files):
    if MARKER not in markdown:
        return markdown
    return markdown.replace(MARKER, bad_input_tables())
