"""The developers' guide's size limits on the library: no file over 500 lines, no function over 60."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "actionbert"
MAX_FILE_LINES, MAX_FUNCTION_LINES = 500, 60


def test_no_library_file_is_over_500_lines():
    long = {str(p.relative_to(PACKAGE)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_FILE_LINES}
    assert not long, f"split these along their seams: {long}"


def test_no_library_function_is_over_60_lines():
    long = {}
    for p in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(p.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long[f"{p.relative_to(PACKAGE)}:{node.name}"] = n
    assert not long, f"split these into named steps: {long}"
