"""The code-health yardstick of station/ (issue 19), kept by a test so it does not drift back.

* No module in station/ over MAX_MODULE_LINES lines.  The aim is ~600 (one idea a module); the hard limit is
  650 so a module that holds one idea and sits a little over the aim is not cut in two for a number, while a
  700-line module — the size every god module of the first review had outgrown — fails.
* No function over MAX_FUNCTION_LINES lines (its docstring not counted: a long explanation is not a long
  function) unless a ``# long: <reason>`` comment stands next to its ``def`` — on the line above it (or
  above its decorators) or on its signature.
* IN_SPLIT lists the files other engineers are splitting in this very session; the integrator empties the
  list when their branches are merged.  Nothing else is exempt.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

STATION = Path(__file__).resolve().parents[2] / "station"
MAX_MODULE_LINES = 650
MAX_FUNCTION_LINES = 60
LONG_MARKER = "# long:"

# Being split on other branches right now (issue 19 round 3: engine, service and `station ca` engineers).
# The integrator removes each entry when that branch is merged; the test then holds those files too.
IN_SPLIT: frozenset[str] = frozenset()


@dataclass(frozen=True)
class LongFunction:
    where: str
    name: str
    lines: int


def _modules(root: Path) -> list[Path]:
    return sorted(root.rglob("*.py"))


def _relative(path: Path, root: Path) -> str:
    return path.relative_to(root.parent).as_posix()


def _line_count(path: Path) -> int:
    return len(path.read_text(encoding="utf-8").splitlines())


def _docstring_lines(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    first = node.body[0]
    if (
        isinstance(first, ast.Expr)
        and isinstance(first.value, ast.Constant)
        and isinstance(first.value.value, str)
    ):
        return (first.end_lineno or first.lineno) - first.lineno + 1
    return 0


def _marked(node: ast.FunctionDef | ast.AsyncFunctionDef, lines: list[str]) -> bool:
    """A ``# long:`` comment on the line above the def (or its decorators) or on the signature's lines."""
    top = min([node.lineno, *(decorator.lineno for decorator in node.decorator_list)])
    signature_end = node.body[0].lineno - 1
    candidates = [lines[top - 2]] if top >= 2 else []
    candidates += lines[node.lineno - 1 : signature_end]
    return any(LONG_MARKER in line for line in candidates)


def long_functions(path: Path, root: Path = STATION) -> list[LongFunction]:
    """The functions of ``path`` over MAX_FUNCTION_LINES lines (docstring excluded) without a ``# long:``."""
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    found = []
    for node in ast.walk(ast.parse(text)):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        length = (node.end_lineno or node.lineno) - node.lineno + 1 - _docstring_lines(node)
        if length > MAX_FUNCTION_LINES and not _marked(node, lines):
            found.append(LongFunction(f"{_relative(path, root)}:{node.lineno}", node.name, length))
    return found


def oversized_modules(root: Path = STATION, exempt: frozenset[str] = IN_SPLIT) -> dict[str, int]:
    """The modules below ``root`` over MAX_MODULE_LINES lines, by path (``station/…``), with their length."""
    sizes = {_relative(path, root): _line_count(path) for path in _modules(root)}
    return {name: size for name, size in sizes.items() if name not in exempt and size > MAX_MODULE_LINES}


def test_no_module_in_station_is_over_the_limit() -> None:
    over = oversized_modules()
    assert over == {}, f"split these by idea (aim ~600 lines, limit {MAX_MODULE_LINES}): {over}"


def test_no_function_in_station_is_long_without_a_reason() -> None:
    found = [
        function
        for path in _modules(STATION)
        if _relative(path, STATION) not in IN_SPLIT
        for function in long_functions(path)
    ]
    assert found == [], (
        f"split these where an idea separates cleanly, or write `{LONG_MARKER} <reason>` next to the def: "
        + "; ".join(f"{f.where} {f.name} ({f.lines} lines)" for f in found)
    )


def test_the_files_in_split_are_real_files() -> None:
    """A stale entry (a file renamed or already emptied into a package) must be taken off the list."""
    assert sorted(name for name in IN_SPLIT if not (STATION.parent / name).is_file()) == []


def test_a_700_line_module_fails_the_yardstick_and_only_a_listed_one_is_let_through(tmp_path: Path) -> None:
    root = tmp_path / "station"
    (root / "sub").mkdir(parents=True)
    (root / "god.py").write_text("".join(f"VALUE_{n} = {n}\n" for n in range(700)), encoding="utf-8")
    (root / "sub" / "fine.py").write_text("VALUE = 1\n" * 600, encoding="utf-8")
    assert oversized_modules(root, frozenset()) == {"station/god.py": 700}
    assert oversized_modules(root, frozenset({"station/god.py"})) == {}


@pytest.mark.parametrize(
    ("source", "flagged"),
    [
        ("def f():\n" + "    x = 1\n" * 61, True),
        ("def f():\n" + "    x = 1\n" * 59, False),
        ('def f():\n    """Doc.\n\n' + "    more\n" * 20 + '    """\n' + "    x = 1\n" * 50, False),
        ("# long: one table of cases, read top to bottom\ndef f():\n" + "    x = 1\n" * 80, False),
        ("@decorator\ndef f(  # long: a reason\n    a: int,\n):\n" + "    x = 1\n" * 80, False),
        ("# long: not this function's\nx = 0\ndef f():\n" + "    x = 1\n" * 80, True),
        ("class C:\n    def m(self):\n" + "        x = 1\n" * 70, True),
    ],
)
def test_the_function_checker_sees_length_docstrings_and_markers(
    tmp_path: Path, source: str, flagged: bool
) -> None:
    module = tmp_path / "station" / "module.py"
    module.parent.mkdir()
    module.write_text(source, encoding="utf-8")
    assert bool(long_functions(module, tmp_path / "station")) is flagged
