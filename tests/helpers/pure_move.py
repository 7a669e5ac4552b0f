"""Pure-move check: every non-blank line of the OLD file (git REV:path) stands in one of the new modules.

Import statements are compared by the names they bind (a moved function takes its imports along, so the
statement is re-cut): every name the old file imported is imported (or defined) by one of the new modules.

usage: .venv/bin/python -m tests.helpers.pure_move REV OLD_PATH NEW_MODULE...  (exit 1 when a line is missing)
"""

from __future__ import annotations

import ast
import collections
import subprocess
import sys
from pathlib import Path


def _imports(text: str) -> tuple[set[int], set[tuple[str | None, str]]]:
    """The line numbers of the import statements of ``text`` and the (module, name) pairs they import."""
    numbers: set[int] = set()
    names: set[tuple[str | None, str]] = set()
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Import | ast.ImportFrom):
            numbers.update(range(node.lineno, (node.end_lineno or node.lineno) + 1))
            names.update((getattr(node, "module", None), alias.name) for alias in node.names)
    return numbers, names


def main(rev: str, old: str, new: list[str]) -> int:
    old_text = subprocess.run(
        ["git", "show", f"{rev}:{old}"], capture_output=True, text=True, check=True
    ).stdout
    old_import_lines, old_names = _imports(old_text)
    have: collections.Counter[str] = collections.Counter()
    new_names: set[tuple[str | None, str]] = set()
    for path in new:
        text = Path(path).read_text()
        new_names |= _imports(text)[1]
        have.update(line.strip() for line in text.splitlines() if line.strip())
    old_lines = [(n, line.strip()) for n, line in enumerate(old_text.splitlines(), 1) if line.strip()]
    missing = [line for n, line in old_lines if n not in old_import_lines and not have[line]]
    lost = sorted(f"{module}.{name}" for module, name in old_names - new_names)
    print(
        f"{old}: {len(old_lines)} non-blank lines; missing in the new modules: {len(missing)}; "
        f"imported names lost: {len(lost)}"
    )
    for line in missing:
        print("   MISSING:", line)
    for name in lost:
        print("   IMPORT LOST:", name)
    return 1 if missing or lost else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2], sys.argv[3:]))
