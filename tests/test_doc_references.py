"""Every docs/*.md a walship message names exists (a user told to read a missing
page is stuck: backup-push once pointed to a docs/setup.md that never existed)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = re.compile(r"(?<![\w/.])docs/[\w.-]+?\.md")


def _docstrings(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                ids.add(id(body[0].value))
    return ids


def message_doc_references() -> dict[str, set[str]]:
    """docs/X.md -> the files whose string literals (not docstrings or comments) name it."""
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / "walship").rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        skip = _docstrings(tree)
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and id(node) not in skip
            ):
                for ref in DOC.findall(node.value):
                    found.setdefault(ref, set()).add(str(path.relative_to(ROOT)))
    return found


def test_finder_sees_messages_and_not_docstrings() -> None:
    refs = message_doc_references()
    assert "docs/exit-codes.md" in refs  # the --help epilog of walship/cli.py
    assert "docs/backups.md" in refs


def test_every_doc_a_message_names_exists() -> None:
    missing = {
        ref: sorted(where)
        for ref, where in message_doc_references().items()
        if not (ROOT / ref).is_file()
    }
    assert not missing, f"messages name docs that do not exist: {missing}"
