from __future__ import annotations

from pathlib import Path

from causeway.data_pipeline.prepare.corpus import builtin_documents

LONG = "x" * 250


def _write(root: Path, relative: str, source: str) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(source, encoding="utf-8")


def _fake_stdlib(root: Path) -> None:
    _write(root, "zeta.py", f'"""Zeta module. {LONG}"""\n')
    _write(
        root,
        "alpha.py",
        f'"""Alpha module. {LONG}"""\n'
        f'class Thing:\n    """Thing class. {LONG}"""\n'
        f'    def method(self):\n        """Method. {LONG}"""\n'
        f'async def run():\n    """Run. {LONG}"""\n'
        'def tiny():\n    """Too short."""\n'
        f'def copy():\n    """Alpha module. {LONG}"""\n',  # duplicate of the module docstring
    )
    _write(root, "pkg/__init__.py", f'"""Package. {LONG}"""\n')
    _write(root, "test/test_x.py", f'"""Test suite. {LONG}"""\n')
    _write(root, "idlelib/shell.py", f'"""Idle. {LONG}"""\n')
    _write(root, "site-packages/lib.py", f'"""Installed. {LONG}"""\n')
    _write(root, "lib2to3/tests/data/py2.py", f'"""Py2 data. {LONG}"""\nprint "x"\n')
    _write(root, "broken.py", f'"""Broken. {LONG}"""\ndef (:\n')


def test_docstrings_are_extracted_sorted_filtered_and_deduplicated(tmp_path: Path) -> None:
    _fake_stdlib(tmp_path)
    docs = builtin_documents(root=tmp_path)
    heads = [doc.split(".")[0] for doc in docs]
    # sorted by (file, qualified name): alpha.py's "<module>" < "Thing" < ...; pkg; zeta
    assert heads == ["Alpha module", "Thing class", "Method", "Run", "Package", "Zeta module"]


def test_docstrings_are_cleaned_of_indentation(tmp_path: Path) -> None:
    _write(tmp_path, "m.py", f'def f():\n    """First line.\n\n    Indented body {LONG}\n    """\n')
    (doc,) = builtin_documents(root=tmp_path)
    assert doc == f"First line.\n\nIndented body {LONG}"


def test_real_stdlib_corpus_is_substantial(builtin_corpus: list[str]) -> None:
    docs = builtin_corpus
    assert len(docs) > 1000
    assert sum(map(len, docs)) > 500_000
    assert min(map(len, docs)) >= 200
    assert len(set(docs)) == len(docs)
