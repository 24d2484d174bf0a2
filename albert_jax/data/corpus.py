"""A built-in English corpus made from text that ships with Python, so the demo needs no download.

The text is ``pydoc_data.topics.topics`` (the language reference sections ``help()`` shows) followed
by the docstrings of the standard library's modules, classes, functions and methods (one docstring or
topic = one document). Modules are walked in sorted order in a fresh interpreter and every docstring
is cleaned the same way (doctests, code blocks, headings and reST markup removed; only sentences that
read as prose kept), so the corpus is identical across runs on the same Python version. Modules with
import side effects (``antigravity``, ``this``, ``tkinter``, ...) or platform-specific content
(``posix``, ``winreg``, ...) are left out; a module this Python build lacks is skipped.

The format is the one of google-research/albert: a document is a list of sentences; on disk, one
sentence per line and a blank line between documents.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import inspect
import io
import json
import os
import pkgutil
import re
import subprocess
import sys
import tempfile
import warnings

# Import side effects (browser, printing, GUI, writing grammar caches, terminal escape codes, site
# running the .pth files of site-packages), only tests or generated boilerplate inside (codecs), or
# read separately (pydoc_data).
_SKIPPED = {
    "antigravity",
    "this",
    "__hello__",
    "__phello__",
    "idlelib",
    "tkinter",
    "_tkinter",
    "turtle",
    "turtledemo",
    "test",
    "lib2to3",
    "distutils",
    "readline",
    "rlcompleter",
    "site",
    "encodings",
    "ensurepip",
    "pydoc_data",
    "_bootsubprocess",
}
# Content that differs between operating systems.
_PLATFORM = {
    "posix",
    "nt",
    "msvcrt",
    "winreg",
    "winsound",
    "msilib",
    "_msi",
    "_winapi",
    "_overlapped",
    "_aix_support",
    "_osx_support",
    "_scproxy",
    "_posixsubprocess",
    "_posixshmem",
    "pwd",
    "grp",
    "spwd",
    "crypt",
    "_crypt",
    "nis",
    "termios",
    "tty",
    "pty",
    "fcntl",
    "resource",
    "syslog",
    "curses",
    "_curses",
    "_curses_panel",
    "ossaudiodev",
    "_dbm",
    "_gdbm",
}
_PLATFORM_PARTS = ("win", "mac", "osx", "popen_")

_ABBREVIATIONS = ("e.g.", "i.e.", "etc.", "vs.", "cf.", "Mr.", "Dr.", "No.", "approx.", "resp.")
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"'”)\]]*\s+(?=[\"'“(\[]?[A-Z0-9])")
_BULLET = re.compile(r"^(?:[*\-+•]|\d+\.|\(\d+\)|[a-z]\))\s+")
_UNDERLINE = re.compile(r"^([=\-~*^#+])\1{2,}$")
_ROLE = re.compile(r":[a-zA-Z:]+:`~?!?([^`<]*?)(?:\s*<[^>]*>)?`")
_LITERAL = re.compile(r"``([^`]+)``")
_BACKTICK = re.compile(r"`([^`<]+?)(?:\s*<[^>]*>)?`_{0,2}")
_STRONG = re.compile(r"\*\*(\S[^*]*?)\*\*")
_EMPHASIS = re.compile(r"(?<![\w*])\*(\S[^*]*?)\*(?![\w*])")
_FOOTNOTE = re.compile(r"\s*\[(?:\d+|#\w*|\*)\]_?")


def split_sentences(text: str) -> list[str]:
    """Split one paragraph (whitespace is collapsed first) into sentences with a simple regex.

    A sentence ends at ``.``/``!``/``?`` (plus closing quotes/brackets) followed by whitespace and
    an upper-case letter, digit or opening quote; common abbreviations ("e.g.", "etc.") never end one.
    """
    text = " ".join(text.split())
    if not text:
        return []
    sentences: list[str] = []
    for part in _SENTENCE_END.split(text):
        if sentences and sentences[-1].endswith(_ABBREVIATIONS):
            sentences[-1] += " " + part
        else:
            sentences.append(part)
    return sentences


def _strip_markup(text: str) -> str:
    """Removes reST roles, literals, emphasis and footnote references, keeping the words."""
    text = _ROLE.sub(r"\1", text)
    text = _LITERAL.sub(r"\1", text)
    text = _BACKTICK.sub(r"\1", text)
    text = _STRONG.sub(r"\1", text)
    text = _EMPHASIS.sub(r"\1", text)
    return _FOOTNOTE.sub("", text)


def _paragraphs(doc: str) -> list[str]:
    """Splits a docstring/topic into prose paragraphs, dropping doctests, code blocks and headings.

    Code is recognised the way reST and the rendered topics lay it out: a block indented deeper than
    a preceding paragraph that ends with ':' (or '::'), unless it is a nested list item.
    """
    paragraphs: list[tuple[int, list[str]]] = []  # (indent of the first line, lines)
    current: list[str] = []
    indent = 0
    in_doctest = False
    for line in inspect.cleandoc(doc).splitlines() + [""]:
        stripped = line.strip()
        if in_doctest or stripped.startswith(">>>"):
            in_doctest = bool(stripped)  # a doctest's output runs until the next blank line
            stripped = ""
        if _UNDERLINE.match(stripped):  # a heading: drop it with its title line
            current = current[:-1]
            stripped = ""
        if stripped.startswith(".. "):  # directives (versionadded, note, ...) carry no prose
            stripped = ""
        if not stripped or (current and _BULLET.match(stripped)):
            if current:
                paragraphs.append((indent, current))
            current = []
        if stripped:
            if not current:
                indent = len(line) - len(line.lstrip())
            current.append(stripped)
    kept: list[str] = []
    code_indent = None  # indentation of the code block being skipped
    prev_indent, prev_ends_colon = 0, False
    for par_indent, lines in paragraphs:
        if code_indent is not None and par_indent >= code_indent:
            continue
        code_indent = None
        is_item = bool(_BULLET.match(lines[0]))
        if prev_ends_colon and par_indent > prev_indent and not is_item:
            code_indent = par_indent
            continue
        text = _BULLET.sub("", " ".join(lines))
        prev_indent = par_indent + (len(lines[0]) - len(_BULLET.sub("", lines[0])))
        prev_ends_colon = text.endswith(":")
        kept.append(text[:-1] if text.endswith("::") else text)
    return kept


def _is_prose(sentence: str) -> bool:
    """True for a sentence that reads as English rather than code, a signature or a table row."""
    words = sentence.split()
    if not 4 <= len(words) <= 80 or any(code in sentence for code in (">>>", "::=", " -> ")):
        return False
    if not (words[0].strip("\"'“(").isalpha() and sentence.rstrip("\"'”)")[-1:] in ".!?:"):
        return False
    chars = sentence.replace(" ", "")
    return sum(c.isalpha() for c in chars) >= 0.75 * len(chars)


def clean_document(text: str) -> list[str]:
    """Turns one docstring/topic into a list of prose sentences (possibly empty)."""
    sentences = []
    for paragraph in _paragraphs(text):
        sentences.extend(s for s in split_sentences(_strip_markup(paragraph)) if _is_prose(s))
    return sentences


@contextlib.contextmanager
def _quiet():
    """Silences warnings and prints while stdlib modules are imported."""
    with (
        warnings.catch_warnings(),
        contextlib.redirect_stdout(io.StringIO()),
        contextlib.redirect_stderr(io.StringIO()),
    ):
        warnings.simplefilter("ignore")
        yield


def _import(name: str):
    """Imports a module quietly; None if this Python build lacks it."""
    with _quiet():
        try:
            return importlib.import_module(name)
        except Exception:  # noqa: BLE001 - optional C extensions missing in this build
            return None


def _module_names() -> list[str]:
    """The sorted stdlib modules and submodules walked for docstrings (private ones included: many
    public classes are defined, and documented, in C modules such as ``_io`` or ``_pickle``)."""
    names = []
    for name in sorted(sys.stdlib_module_names):
        if name in _SKIPPED or name in _PLATFORM:
            continue
        names.append(name)
        path = getattr(_import(name), "__path__", [])
        with _quiet():
            infos = list(pkgutil.walk_packages(path, name + ".", onerror=lambda _: None))
        for info in infos:
            parts = info.name.split(".")[1:]
            if not any(p.startswith(("__", "test")) or any(s in p for s in _PLATFORM_PARTS) for p in parts):
                names.append(info.name)
    return sorted(set(names))


def _docstrings(module) -> list[str]:
    """The module's docstring, then those of the classes/functions it defines (sorted by name), each
    class followed by its methods/properties. Dunders are skipped: their docstrings are generic."""
    docs = [module.__doc__]
    for name, obj in sorted(vars(module).items()):
        if name.startswith("__") or getattr(obj, "__module__", None) != module.__name__:
            continue
        if not (inspect.isclass(obj) or inspect.isroutine(obj)):
            continue
        docs.append(obj.__doc__)
        if inspect.isclass(obj):
            for attr_name, attr in sorted(vars(obj).items()):
                if not attr_name.startswith("__") and (
                    inspect.isroutine(attr)
                    or inspect.isdatadescriptor(attr)
                    or isinstance(attr, (classmethod, staticmethod))
                ):
                    docs.append(getattr(attr, "__doc__", None))
    return [d for d in docs if isinstance(d, str)]


def _build_corpus() -> list[list[str]]:
    """Imports the stdlib and collects the cleaned documents (run in a fresh interpreter)."""
    from pydoc_data.topics import topics

    texts = [topics[key] for key in sorted(topics)]
    for name in _module_names():
        module = _import(name)
        if module is not None:
            texts.extend(_docstrings(module))
    documents, seen = [], set()
    for text in texts:
        if text in seen:  # inherited / re-exported docstrings appear many times
            continue
        seen.add(text)
        sentences = clean_document(text)
        if len(sentences) >= 2:
            documents.append(sentences)
    return documents


@functools.cache
def _builtin_corpus() -> tuple[tuple[str, ...], ...]:
    # A fresh, isolated interpreter (-I -S: no site-packages, no PYTHON* variables) runs this file:
    # the caller's imports and monkeypatching (pytest and IPython replace sys hooks, for instance)
    # cannot change the text, and ~400 stdlib modules are not imported into the caller.
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "corpus.json")
        subprocess.run(
            [sys.executable, "-I", "-S", os.path.abspath(__file__), out],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        with open(out, encoding="utf-8") as f:
            return tuple(tuple(doc) for doc in json.load(f))


def builtin_corpus() -> list[list[str]]:
    """The built-in English corpus: a list of documents, each a list of sentence strings.

    Deterministic for a given Python version: built in a fresh interpreter (about 2 s), then cached
    per process. Every document has at least two sentences. On CPython 3.11: about 2,800 documents,
    12,800 sentences, 1.2 MB of text.
    """
    return [list(doc) for doc in _builtin_corpus()]


def write_corpus(documents: list[list[str]], path: str | os.PathLike) -> None:
    """Writes documents in the google-research/albert text format: one sentence per line, a blank
    line between documents (UTF-8). Newlines inside a sentence are replaced by spaces."""
    with open(path, "w", encoding="utf-8") as f:
        for i, doc in enumerate(documents):
            if i:
                f.write("\n")
            for sentence in doc:
                f.write(" ".join(sentence.split()) + "\n")


if __name__ == "__main__":  # the worker of _builtin_corpus: python corpus.py OUT.json
    with open(sys.argv[1], "w", encoding="utf-8") as f:
        json.dump(_build_corpus(), f)
