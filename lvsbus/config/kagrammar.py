"""keepalived.conf's grammar, as keepalived reads it (keepalived.conf(5): "Quoted strings",
"Conditional configuration", "Parameter substitution", "Sequence blocks", "List blocks", and
``include``), into a tree of statements that remember their file and line. No meaning is given
to any keyword here: lvsbus/config/keepalived.py maps the tree onto the model.

What a line goes through, in keepalived's order:

1. a line ending in ``\\`` continues on the next (a ``$NAME=`` definition so continued keeps its
   lines: it expands to several);
2. comments: ``#`` or ``!`` to the end of the line, anywhere outside quotes;
3. ``@ID`` / ``@^ID`` at its start: kept only when ID is (is not) the config id (``--config-id``,
   by default the host name up to its first dot);
4. ``$NAME=VALUE`` (only whitespace before ``$``) defines a parameter; no statement;
5. ``~SEQ(var, start, step, end)``, ``~SEQx(...)`` and ``~LST(var, v1, v2...)`` /
   ``~LST({a, b}, {1, 2}, ...)`` at its start repeat the rest of the line;
6. ``$NAME`` (followed by whitespace or the end) and ``${NAME}`` are replaced, recursively at
   use; an undefined one stays as it is (so ``$`` in a script is untouched); pre-defined:
   ``${_PWD}`` (the current file's directory), ``${_INSTANCE}`` (the config id), ``${_HASH}``,
   ``${_BANG}``, ``${_ENV NAME}``; ``${_RANDOM}`` is refused (a config must read the same twice);
7. words: whitespace separates, ``"`` and ``'`` quote (the quote characters removed, the
   whitespace inside kept; shell escapes \\n, \\t, \\xXX, \\nnn...), ``{`` and ``}`` are words
   of their own outside quotes;
8. ``include PATTERN`` (and includer/includem/includew/includeb/includef): every file the glob
   (with csh braces) matches, in name order, relative to the including file's directory.

A statement is a keyword, its arguments, and the statements of its block when a ``{`` follows
(on the same line or the next). Errors (an unclosed block, a stray ``}``, an include that matches
nothing readable or loops, a bad ~SEQ) raise ConfigError naming the file and line, every one found.
"""
from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass, field
from typing import Protocol

from lvsbus.config.model import ConfigError, Issue, Severity

#: include depth and the lines a config may expand to (~SEQ / ~LST / multi-line parameters)
MAX_INCLUDE_DEPTH = 32
MAX_LINES = 200_000
#: substitution rounds on one line (a parameter that names itself would never end)
MAX_SUBSTITUTIONS = 1000

INCLUDES = ("include", "includer", "includem", "includew", "includeb", "includef")

_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_DEFINE = re.compile(rf"^\s*\$({_NAME})=(.*)$", re.S)
_BRACED = re.compile(rf"\$\{{({_NAME})(?:\s+([^}}]*))?\}}")
_BARE = re.compile(rf"\$({_NAME})(?=\s|$)")
_BLOCK_OP = re.compile(r"^\s*~(SEQx?|LST)\(")


@dataclass
class Statement:
    """One keyword line: ``keyword args...``, and its block's statements when it has one."""

    keyword: str
    args: list[str]
    file: str
    line: int
    block: list[Statement] | None = None

    def find(self, keyword: str) -> list[Statement]:
        return list(self.by_keyword().get(keyword, ()))

    def by_keyword(self) -> dict[str, list[Statement]]:
        """The block's statements by keyword, in order (built once the block is whole: a mapping
        asks a block for some thirty keywords; do not change the lists)."""
        block = self.block or ()
        index = self.__dict__.get("_index")
        if index is None or index[0] != len(block):
            by: dict[str, list[Statement]] = {}
            for s in block:
                by.setdefault(s.keyword, []).append(s)
            index = self.__dict__["_index"] = (len(block), by)
        return index[1]

    def words(self) -> list[str]:
        """Every word of the block's statements, in order (a list block: ``{ a b }`` or one a line)."""
        return [w for s in self.block or () for w in (s.keyword, *s.args)]

    def dump(self, indent: int = 0) -> str:
        """The tree as text (tests, ``lvsbus config show --format keepalived``)."""
        words = " ".join([self.keyword, *(_quote(a) for a in self.args)])
        out = " " * indent + words
        if self.block is not None:
            out += " {\n" + "".join(s.dump(indent + 4) for s in self.block) + " " * indent + "}"
        return out + "\n"


def _quote(word: str) -> str:
    return word if word and not re.search(r"[\s\"'{}#!\\]", word) else '"' + word.replace("\\", "\\\\").replace('"', '\\"') + '"'


class Files(Protocol):
    """The file system as the grammar sees it (injected: this module does no I/O, so its tests and
    the console's editor run it on text alone). lvsbus/host/configfiles.py is the host's."""

    def read(self, path: str) -> str:
        """A file's text; OSError or ValueError (too big) when it cannot be read."""
        ...

    def glob(self, pattern: str) -> list[str]:
        """The regular files an absolute pattern (no braces) names, any order."""
        ...

    def realpath(self, path: str) -> str:
        ...

    def env(self, name: str) -> str:
        ...


class NoFiles:
    """Text alone (the console's editor, a test): an include is an error, ``${_ENV}`` empty."""

    def read(self, path: str) -> str:
        raise OSError(f"{path}: this text is read without files: includes are not followed here")

    def glob(self, pattern: str) -> list[str]:
        return [pattern] if not any(c in pattern for c in "*?[") else []

    def realpath(self, path: str) -> str:
        return posixpath.normpath(path)

    def env(self, name: str) -> str:
        return ""


@dataclass
class _Line:
    text: str
    file: str
    line: int


@dataclass
class _Reader:
    config_id: str
    files: Files
    errors: list[Issue] = field(default_factory=list)
    warnings: list[Issue] = field(default_factory=list)
    params: dict[str, list[str]] = field(default_factory=dict)
    lines_out: int = 0

    def err(self, file: str, line: int, msg: str) -> None:
        self.errors.append(Issue(key="", message=msg, file=file, line=line))

    def warn(self, file: str, line: int, msg: str) -> None:
        self.warnings.append(Issue(key="", message=msg, file=file, line=line, severity=Severity.WARNING))

    # -- files ------------------------------------------------------------------------------
    def lines_of(self, path: str, text: str, stack: tuple[str, ...]) -> list[_Line]:
        """The logical lines of one file, includes expanded, parameters substituted."""
        out: list[_Line] = []
        physical = text.split("\n")
        i = 0
        while i < len(physical):
            start = i + 1
            raw = physical[i]
            i += 1
            joined = [raw]
            while _continued(joined[-1]) and i < len(physical):
                joined[-1] = joined[-1].rstrip()[:-1]
                joined.append(physical[i])
                i += 1
            if len(joined) > 1:
                head = self._conditional_ok(_strip_comment(joined[0]), path, start)
                d = _DEFINE.match(head) if head is not None else None
                if head is None:
                    continue  # the whole continued line is for another config id
                if d is not None:  # a multi-line definition keeps its lines
                    first = d.group(2).strip()
                    self.params[d.group(1)] = ([first] if first else []) + [_strip_comment(x) for x in joined[1:]]
                    continue
            self.logical(" ".join(joined), path, start, stack, out)
        return out

    def logical(self, text: str, path: str, line: int, stack: tuple[str, ...], out: list[_Line], depth: int = 0) -> None:
        """One logical line: conditional, definition, ~SEQ/~LST, substitution (a multi-line
        parameter's lines each go through here again, in order, so a definition among them applies
        to the lines after it), include, or a line of words."""
        text = self._conditional_ok(_strip_comment(text) if depth == 0 else text, path, line) or ""
        rounds = 0
        while True:
            if not text.strip():
                return
            d = _DEFINE.match(text) if "$" in text else None
            if d is not None:
                self.params[d.group(1)] = [d.group(2).strip()]
                return
            if "~" in text and _BLOCK_OP.match(text) is not None:
                self._repeat(text, path, line, stack, out)
                return
            m = self._next_param(text)
            if m is None:
                break
            rounds += 1
            if rounds > MAX_SUBSTITUTIONS or depth > MAX_SUBSTITUTIONS:
                self.err(path, line, "parameter substitution does not end (a parameter that names itself?)")
                return
            start, end, value = m
            if len(value) != 1:  # a multi-line parameter: its lines, the first and last joined to their surroundings
                parts = list(value) or [""]
                parts[0] = text[:start] + parts[0]
                parts[-1] = parts[-1] + text[end:]
                for part in parts:
                    self.logical(part, path, line, stack, out, depth + 1)
                return
            text = self._conditional_ok(text[:start] + value[0] + text[end:], path, line) or ""
        if "${_RANDOM" in text:
            self.err(path, line, "${_RANDOM} is not supported: lvsbus reads a config the same way every time "
                                 "(replay and config diff depend on it); write the value")
            return
        words = text.split(None, 1)
        if words[0] in INCLUDES:
            self.include(words[1] if len(words) > 1 else "", path, line, stack, out)
            return
        self.lines_out += 1
        if self.lines_out > MAX_LINES:
            if self.lines_out == MAX_LINES + 1:
                self.err(path, line, f"the config expands to more than {MAX_LINES:,} lines "
                                     "(~SEQ, ~LST or parameters): refused")
            return
        out.append(_Line(text, path, line))

    def include(self, arg: str, path: str, line: int, stack: tuple[str, ...], out: list[_Line]) -> None:
        arg = arg.strip()
        words = _words(arg, path, line, self) if arg[:1] in "\"'" else arg.split()  # braces are the glob's
        if len(words) != 1:
            self.err(path, line, "include takes one file name or pattern")
            return
        base = posixpath.dirname(path) if path and not path.startswith("<") else "."
        pattern = posixpath.normpath(words[0] if posixpath.isabs(words[0]) else posixpath.join(base, words[0]))
        found: list[str] = []
        for p in _braces(pattern):
            found += self.files.glob(p)
        files = sorted(dict.fromkeys(found))
        if not files:
            # keepalived goes on without it; a missing file is more often a mistake: warn
            self.warn(path, line, f"include {words[0]}: no file matches (nothing included)")
            return
        if len(stack) >= MAX_INCLUDE_DEPTH:
            self.err(path, line, f"includes nest deeper than {MAX_INCLUDE_DEPTH}")
            return
        for f in files:
            real = self.files.realpath(f)
            if real in stack:
                self.err(path, line, f"include {f}: it includes itself (through {' -> '.join(stack)})")
                continue
            try:
                text = self.files.read(f)
            except OSError as exc:
                self.err(path, line, f"include {f}: cannot read it: {exc.strerror or exc}")
                continue
            except ValueError as exc:
                self.err(path, line, f"include {f}: {exc}")
                continue
            saved = self.params.get("_PWD")
            self.params["_PWD"] = [posixpath.dirname(f)]
            out.extend(self.lines_of(f, text, (*stack, real)))
            if saved is None:
                self.params.pop("_PWD", None)
            else:
                self.params["_PWD"] = saved

    # -- conditionals, parameters, sequences -----------------------------------------------
    def _conditional_ok(self, text: str, path: str, line: int) -> str | None:
        """The line without its ``@ID`` / ``@^ID`` when it applies here, None when it does not."""
        stripped = text.lstrip()
        if not stripped.startswith("@"):
            return text
        m = re.match(r"@(\^?)(\S*)\s*(.*)$", stripped, re.S)
        assert m is not None
        negate, ident, rest = m.group(1) == "^", m.group(2), m.group(3)
        if not ident:
            self.err(path, line, "'@' must be followed by a config id, e.g. '@lvs1 priority 150'")
            return None
        return rest if (ident == self.config_id) != negate else None

    def _next_param(self, text: str) -> tuple[int, int, list[str]] | None:
        """The first replaceable parameter in ``text``: (start, end, its value's lines)."""
        if "$" not in text:
            return None
        best: tuple[int, int, list[str]] | None = None
        for m in _BRACED.finditer(text):
            value = self._value(m.group(1), m.group(2))
            if value is not None:
                best = (m.start(), m.end(), value)
                break
        for m in _BARE.finditer(text):
            if best is not None and m.start() > best[0]:
                break
            if m.group(1) in self.params and not m.group(1).startswith("_"):
                best = (m.start(), m.end(), self.params[m.group(1)])
                break
        return best

    def _value(self, name: str, arg: str | None) -> list[str] | None:
        if name == "_HASH":
            return ["#"]
        if name == "_BANG":
            return ["!"]
        if name == "_INSTANCE":
            return [self.config_id]
        if name == "_ENV":
            return [self.files.env((arg or "").strip())]
        if name == "_RANDOM":
            return None  # left as it is; the mapper's checks then name it
        return self.params.get(name) if arg is None else None

    def _repeat(self, text: str, path: str, line: int, stack: tuple[str, ...], out: list[_Line]) -> None:
        """~SEQ / ~SEQx / ~LST: the rest of the line once for each value (nested ones recurse)."""
        m = _BLOCK_OP.match(text)
        assert m is not None
        op = m.group(1)
        close = _matching_paren(text, m.end() - 1)
        if close is None:
            self.err(path, line, f"~{op}( has no closing ')'")
            return
        inner, rest = text[m.end():close], text[close + 1:]
        try:
            names, rows = (_seq(inner, hexa=op == "SEQx") if op.startswith("SEQ") else _lst(inner))
        except ValueError as exc:
            self.err(path, line, f"~{op}({inner}): {exc}")
            return
        if len(rows) > MAX_LINES:
            self.err(path, line, f"~{op} repeats {len(rows):,} times: at most {MAX_LINES:,}")
            return
        saved = {n: self.params.get(n) for n in names}
        for row in rows:
            for n, v in zip(names, row):
                self.params[n] = [v]
            self.logical(rest, path, line, stack, out)
            if self.lines_out > MAX_LINES:
                break
        for n, old in saved.items():
            if old is None:
                self.params.pop(n, None)
            else:
                self.params[n] = old


def _continued(line: str) -> bool:
    if "\\" not in line:
        return False
    s = line.rstrip()
    return s.endswith("\\") and not s.endswith("\\\\")


def _strip_comment(text: str) -> str:
    """``text`` up to its first ``#`` or ``!`` outside quotes."""
    if '"' not in text and "'" not in text:  # the usual line: no quotes, the first mark ends it
        h, b = text.find("#"), text.find("!")
        if h < 0 and b < 0:
            return text
        return text[:b if h < 0 else h if b < 0 else min(h, b)]
    quote = None
    i = 0
    while i < len(text):
        c = text[i]
        if c == "\\" and quote is not None:
            i += 2
            continue
        if quote is None and c in "#!":
            return text[:i]
        if c in "\"'":
            quote = None if quote == c else (c if quote is None else quote)
        i += 1
    return text


def _matching_paren(text: str, open_at: int) -> int | None:
    depth = 0
    for i in range(open_at, len(text)):
        if text[i] == "(":
            depth += 1
        elif text[i] == ")":
            depth -= 1
            if depth == 0:
                return i
    return None


def _int(word: str) -> int:
    w = word.strip()
    try:
        return int(w, 0)
    except ValueError:
        raise ValueError(f"{w!r} is not an integer") from None


def _seq(inner: str, hexa: bool) -> tuple[list[str], list[list[str]]]:
    parts = [p.strip() for p in inner.split(",")]
    if not 2 <= len(parts) <= 4 or not re.fullmatch(_NAME, parts[0]):
        raise ValueError("give ~SEQ(var, [start, [step,]] end)")
    nums = [_int(p) for p in parts[1:]]
    if len(nums) == 1:
        end = nums[0]
        start = 1 if end > 0 else -1
        step = 1 if end >= start else -1
    elif len(nums) == 2:
        start, end = nums
        step = 1 if end >= start else -1
    else:
        start, step, end = nums
    if step == 0 or (end - start) * step < 0:
        raise ValueError("the step never reaches the end")
    count = (end - start) // step + 1
    if count > MAX_LINES:
        raise ValueError(f"{count:,} values: at most {MAX_LINES:,}")
    return [parts[0]], [[format(v, "x") if hexa else str(v)] for v in range(start, end + (1 if step > 0 else -1), step)]


def _lst(inner: str) -> tuple[list[str], list[list[str]]]:
    groups = re.findall(r"\{([^}]*)\}|([^,{}]+)", inner)
    items = [[x.strip() for x in g.split(",")] if g else [s.strip()] for g, s in groups if (g or s.strip())]
    if len(items) < 2:
        raise ValueError("give ~LST(var, value, ...) or ~LST({var1, var2}, {v1, v2}, ...)")
    names, rows = items[0], items[1:]
    if not all(re.fullmatch(_NAME, n) for n in names):
        raise ValueError(f"{', '.join(names)}: not parameter names")
    for row in rows:
        if len(row) != len(names):
            raise ValueError(f"{{{', '.join(row)}}} has {len(row)} values for {len(names)} names")
    return names, rows


def _braces(pattern: str) -> list[str]:
    """csh brace expansion: ``a{b,c{d,e}}f`` -> abf, acdf, acef."""
    m = None
    depth = 0
    for i, c in enumerate(pattern):
        if c == "{":
            if depth == 0:
                m = i
            depth += 1
        elif c == "}" and depth:
            depth -= 1
            if depth == 0 and m is not None:
                body = pattern[m + 1:i]
                alts, cur, d = [], "", 0
                for ch in body:
                    if ch == "," and d == 0:
                        alts.append(cur)
                        cur = ""
                        continue
                    d += ch == "{"
                    d -= ch == "}"
                    cur += ch
                alts.append(cur)
                return [x for a in alts for x in _braces(pattern[:m] + a + pattern[i + 1:])]
    return [pattern]


_ESCAPES = {"a": "\a", "b": "\b", "E": "\x1b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}


def _words(text: str, path: str, line: int, rd: _Reader | None) -> list[str]:
    """Split a line into words: whitespace separates, quotes group (removed), ``{`` and ``}`` stand
    alone outside quotes, escapes as the shell's inside quotes."""
    if '"' not in text and "'" not in text:
        return text.split()  # no quotes, no escapes: whitespace alone separates ("{" alone is a word)
    out: list[str] = []
    cur: list[str] = []
    has = False
    quote = None
    i = 0
    n = len(text)
    while i < n:
        c = text[i]
        if quote is not None:
            if c == quote:
                quote = None
            elif c == "\\" and i + 1 < n:
                i += 1
                e = text[i]
                if e in _ESCAPES:
                    cur.append(_ESCAPES[e])
                elif e == "x":
                    m = re.match(r"[0-9A-Fa-f]{1,2}", text[i + 1:])
                    if m:
                        cur.append(chr(int(m.group(), 16)))
                        i += len(m.group())
                    else:
                        cur.append("x")
                elif e in "01234567":
                    m = re.match(r"[0-7]{1,3}", text[i:])
                    assert m is not None
                    cur.append(chr(int(m.group(), 8)))
                    i += len(m.group()) - 1
                elif e == "c" and i + 1 < n:
                    i += 1
                    cur.append(chr(ord(text[i].upper()) ^ 0x40))
                else:
                    cur.append(e)
            else:
                cur.append(c)
            i += 1
            continue
        if c in "\"'":
            quote = c
            has = True
        elif c.isspace():
            if has or cur:
                out.append("".join(cur))
            cur, has = [], False
        elif c in "{}" and not cur and not has and (i + 1 == n or text[i + 1].isspace()):
            out.append(c)  # a brace is a word of its own when whitespace stands around it
        else:
            cur.append(c)
        i += 1
    if quote is not None and rd is not None:
        rd.err(path, line, f"a {quote} quote is not closed on this line")
    if has or cur:
        out.append("".join(cur))
    return out


def _tree(lines: list[_Line], rd: _Reader) -> list[Statement]:
    """Statements from the words of the lines: ``{`` opens the block of the statement before it
    (on its line or the one before), ``}`` closes the innermost."""
    root: list[Statement] = []
    stack: list[tuple[list[Statement], Statement | None]] = [(root, None)]
    last: Statement | None = None  # the statement a following "{" opens
    for ln in lines:
        words = _words(ln.text, ln.file, ln.line, rd)
        if "{" not in words and "}" not in words:  # most lines: one statement, no block opened or closed
            if words:
                last = Statement(words[0], words[1:], ln.file, ln.line)
                stack[-1][0].append(last)
            continue
        cur: list[str] = []

        def flush() -> None:
            nonlocal last
            if cur:
                st = Statement(cur[0], cur[1:], ln.file, ln.line)
                stack[-1][0].append(st)
                last = st
                cur.clear()

        for w in words:
            if w == "{":
                flush()
                if last is None or last.block is not None:
                    rd.err(ln.file, ln.line, "'{' opens a block, but no keyword comes before it")
                    last = Statement("", [], ln.file, ln.line)
                last.block = []
                stack.append((last.block, last))
                last = None
            elif w == "}":
                flush()
                if len(stack) == 1:
                    rd.err(ln.file, ln.line, "'}' closes no block")
                else:
                    stack.pop()
                last = None
            else:
                cur.append(w)
        flush()
    for _body, owner in stack[1:]:
        assert owner is not None
        rd.err(owner.file, owner.line, f"the block of '{owner.keyword}' is not closed: a '}}' is missing")
    return root


def parse(text: str, filename: str = "keepalived.conf", config_id: str = "",
          files: Files | None = None) -> tuple[list[Statement], list[Issue]]:
    """The statements of a keepalived.conf (``filename`` absolute for relative includes; includes
    read through ``files``), and the warnings. ``config_id``: what ``@ID`` lines match
    (keepalived's ``-i``). Raises ConfigError with every error found (file and line)."""
    fs: Files = files if files is not None else NoFiles()
    rd = _Reader(config_id, fs)
    if filename and not filename.startswith("<"):
        rd.params["_PWD"] = [posixpath.dirname(filename)]
    top = (fs.realpath(filename),) if filename and not filename.startswith("<") else ()
    lines = rd.lines_of(filename, text, top)
    tree = _tree(lines, rd)
    if rd.errors:
        raise ConfigError(rd.errors)
    return tree, rd.warnings
