"""SOQL and SOSL as the emulated org reads them: a shared lexer, then a parser for each
(subsets, never ``eval``), following the SOQL and SOSL Reference. A query Salesforce would
refuse raises :class:`SyntaxProblem` with Salesforce's errorCode."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "SoqlQuery",
    "SoslQuery",
    "SyntaxProblem",
    "Term",
    "parse_soql",
    "parse_sosl",
]


class SyntaxProblem(ValueError):
    """A query the org would refuse; ``code`` is Salesforce's errorCode."""

    def __init__(self, message: str, code: str = "MALFORMED_QUERY") -> None:
        self.code = code
        super().__init__(message)


@dataclass(frozen=True)
class _Str:
    """A string literal: its text, and the regex it means after ``LIKE``."""

    text: str
    like: str


@dataclass(frozen=True)
class _Tok:
    kind: str  # word, str, num, op, punct
    value: Any
    raw: str


_LEX = re.compile(
    r"(?P<ws>\s+)"
    r"|(?P<str>'(?:[^'\\]|\\.)*')"
    r"|(?P<num>-?\d+(?:\.\d+)?(?![\w-]))"
    r"|(?P<date>\d{4}-\d{2}-\d{2})"
    r"|(?P<word>[A-Za-z_][A-Za-z0-9_.]*)"
    r"|(?P<op>!=|<>|<=|>=|=|<|>)"
    r"|(?P<punct>[(),])",
    re.DOTALL,
)
_SOQL_ESCAPES = {
    "n": "\n",
    "r": "\r",
    "t": "\t",
    "b": "\b",
    "f": "\f",
    '"': '"',
    "'": "'",
    "\\": "\\",
}


def _decode(raw: str) -> _Str:
    body = raw[1:-1]
    text: list[str] = []
    like: list[str] = []
    i = 0
    while i < len(body):
        ch = body[i]
        if ch != "\\":
            text.append(ch)
            like.append(".*" if ch == "%" else "." if ch == "_" else re.escape(ch))
            i += 1
            continue
        nxt = body[i + 1] if i + 1 < len(body) else ""
        if nxt in _SOQL_ESCAPES:
            value = _SOQL_ESCAPES[nxt]
            i += 2
        elif nxt in ("%", "_"):
            value = nxt
            i += 2
        elif nxt == "u" and re.fullmatch(r"[0-9a-fA-F]{4}", body[i + 2 : i + 6]):
            value = chr(int(body[i + 2 : i + 6], 16))
            i += 6
        else:
            raise SyntaxProblem(
                f"Invalid string literal {raw}. Illegal character sequence '\\{nxt}'"
            )
        text.append(value)
        like.append(re.escape(value))
    return _Str("".join(text), "".join(like))


def _lex(text: str) -> list[_Tok]:
    tokens: list[_Tok] = []
    pos = 0
    while pos < len(text):
        match = _LEX.match(text, pos)
        if match is None:
            if text[pos] == "'":
                raise SyntaxProblem("unterminated string literal")
            raise SyntaxProblem(f"unexpected character {text[pos]!r} at {pos}")
        pos = match.end()
        kind = match.lastgroup or ""
        raw = match.group(0)
        if kind == "ws":
            continue
        if kind == "str":
            tokens.append(_Tok("str", _decode(raw), raw))
        elif kind == "num":
            tokens.append(_Tok("num", float(raw), raw))
        elif kind == "date":
            tokens.append(_Tok("str", _Str(raw, re.escape(raw)), raw))
        else:
            tokens.append(_Tok(kind, raw, raw))
    return tokens


# -- conditions -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Cmp:
    field: str
    op: str  # = != < > <= >= IN NOTIN LIKE
    value: Any  # _Str | float | bool | None | list of those


@dataclass(frozen=True)
class _Bool:
    op: str  # AND OR NOT
    parts: tuple[Any, ...]


class _Parser:
    def __init__(self, tokens: Sequence[_Tok]) -> None:
        self.tokens = list(tokens)
        self.pos = 0

    def peek(self, offset: int = 0) -> _Tok | None:
        index = self.pos + offset
        return self.tokens[index] if index < len(self.tokens) else None

    def keyword(self, *words: str) -> bool:
        """Consume the keywords if they come next (case-insensitive)."""
        for offset, word in enumerate(words):
            tok = self.peek(offset)
            if tok is None or tok.kind != "word" or str(tok.value).upper() != word:
                return False
        self.pos += len(words)
        return True

    def expect_keyword(self, word: str) -> None:
        if not self.keyword(word):
            raise SyntaxProblem(f"expecting {word}, found {self._found()}")

    def punct(self, char: str) -> bool:
        tok = self.peek()
        if tok is not None and tok.kind == "punct" and tok.value == char:
            self.pos += 1
            return True
        return False

    def expect_punct(self, char: str) -> None:
        if not self.punct(char):
            raise SyntaxProblem(f"expecting '{char}', found {self._found()}")

    def name(self) -> str:
        tok = self.peek()
        if tok is None or tok.kind != "word":
            raise SyntaxProblem(f"expecting a name, found {self._found()}")
        self.pos += 1
        return str(tok.value)

    def integer(self) -> int:
        tok = self.peek()
        if tok is None or tok.kind != "num" or not float(tok.value).is_integer():
            raise SyntaxProblem(f"expecting a number, found {self._found()}")
        self.pos += 1
        return int(tok.value)

    def _found(self) -> str:
        tok = self.peek()
        return "end of query" if tok is None else f"'{tok.raw}'"

    def at_end(self) -> bool:
        return self.pos >= len(self.tokens)

    # condition := and (OR and)* ; and := unary (AND unary)* ; unary := NOT unary | (cond) | cmp
    def condition(self) -> Any:
        parts = [self._and()]
        while self.keyword("OR"):
            parts.append(self._and())
        return parts[0] if len(parts) == 1 else _Bool("OR", tuple(parts))

    def _and(self) -> Any:
        parts = [self._unary()]
        while self.keyword("AND"):
            parts.append(self._unary())
        return parts[0] if len(parts) == 1 else _Bool("AND", tuple(parts))

    def _unary(self) -> Any:
        if self.keyword("NOT"):
            return _Bool("NOT", (self._unary(),))
        if self.punct("("):
            inner = self.condition()
            self.expect_punct(")")
            return inner
        return self._comparison()

    def _comparison(self) -> _Cmp:
        name = self.name()
        if self.keyword("NOT", "IN"):
            return _Cmp(name, "NOTIN", self._list())
        if self.keyword("IN"):
            return _Cmp(name, "IN", self._list())
        if self.keyword("LIKE"):
            value = self._value()
            if not isinstance(value, _Str):
                raise SyntaxProblem("LIKE needs a string")
            return _Cmp(name, "LIKE", value)
        tok = self.peek()
        if tok is None or tok.kind != "op":
            raise SyntaxProblem(f"expecting an operator, found {self._found()}")
        self.pos += 1
        op = "!=" if tok.value == "<>" else str(tok.value)
        return _Cmp(name, op, self._value())

    def _list(self) -> list[Any]:
        self.expect_punct("(")
        values = [self._value()]
        while self.punct(","):
            values.append(self._value())
        self.expect_punct(")")
        return values

    def _value(self) -> Any:
        tok = self.peek()
        if tok is None:
            raise SyntaxProblem("expecting a value, found end of query")
        self.pos += 1
        if tok.kind in ("str", "num"):
            return tok.value
        if tok.kind == "word" and str(tok.value).lower() in ("null", "true", "false"):
            return {"null": None, "true": True, "false": False}[str(tok.value).lower()]
        raise SyntaxProblem(f"unexpected token: '{tok.raw}'")

    def field_list(self) -> list[str]:
        fields = [self.name()]
        while self.punct(","):
            fields.append(self.name())
        return fields


@dataclass(frozen=True)
class SoqlQuery:
    fields: tuple[str, ...]
    sobject: str
    where: Any = None
    order_by: tuple[str, bool] | None = None  # (field, descending)
    limit: int | None = None


def parse_soql(text: str) -> SoqlQuery:
    """``SELECT f, Rel.f FROM Obj [WHERE ...] [ORDER BY f [ASC|DESC]] [LIMIT n]``."""
    parser = _Parser(_lex(text))
    parser.expect_keyword("SELECT")
    fields = parser.field_list()
    parser.expect_keyword("FROM")
    sobject = parser.name()
    where = parser.condition() if parser.keyword("WHERE") else None
    order = None
    if parser.keyword("ORDER", "BY"):
        order_field = parser.name()
        descending = parser.keyword("DESC")
        if not descending:
            parser.keyword("ASC")
        order = (order_field, descending)
    limit = parser.integer() if parser.keyword("LIMIT") else None
    if not parser.at_end():
        raise SyntaxProblem(f"unexpected token: {parser._found()}")
    return SoqlQuery(tuple(fields), sobject, where, order, limit)


# -- SOSL -------------------------------------------------------------------------------------

_SOSL_RESERVED = frozenset("?&|!{}[]()^~*:\\\"'+-")


@dataclass(frozen=True)
class Term:
    text: str
    phrase: bool = False
    wildcard: bool = False  # a trailing unescaped "*"


@dataclass(frozen=True)
class _Search:
    op: str  # OR AND ANDNOT
    parts: tuple[Any, ...]


@dataclass(frozen=True)
class _Returning:
    sobject: str
    fields: tuple[str, ...] = ("Id",)
    where: Any = None
    limit: int | None = None


@dataclass(frozen=True)
class SoslQuery:
    search: Any  # Term | _Search
    group: str = "ALL"
    returning: tuple[_Returning, ...] = ()
    limit: int | None = None

    def terms(self) -> list[Term]:
        """Every search term, in order (for tests: how many groups did a query end up with)."""
        out: list[Term] = []

        def walk(node: Any) -> None:
            if isinstance(node, Term):
                out.append(node)
            else:
                for part in node.parts:
                    walk(part)

        walk(self.search)
        return out


def _find_clause(text: str) -> tuple[str, str]:
    """Split ``FIND {...} rest`` at the first unescaped closing brace."""
    match = re.match(r"\s*FIND\s*\{", text, re.IGNORECASE)
    if match is None:
        raise SyntaxProblem("expecting FIND {", "MALFORMED_SEARCH")
    i = match.end()
    while i < len(text):
        if text[i] == "\\":
            i += 2
            continue
        if text[i] == "}":
            return text[match.end() : i], text[i + 1 :]
        i += 1
    raise SyntaxProblem("missing '}' after the search query", "MALFORMED_SEARCH")


def _search_tokens(text: str) -> Iterator[tuple[str, Any]]:
    i = 0
    while i < len(text):
        ch = text[i]
        if ch.isspace():
            i += 1
        elif ch in "()":
            yield ch, ch
            i += 1
        elif ch == '"':
            chars: list[str] = []
            i += 1
            while True:
                if i >= len(text):
                    raise SyntaxProblem("unterminated phrase", "MALFORMED_SEARCH")
                c = text[i]
                if c == "\\" and i + 1 < len(text):
                    chars.append(text[i + 1])
                    i += 2
                elif c == '"':
                    i += 1
                    break
                elif c in _SOSL_RESERVED and c not in "*?":
                    raise SyntaxProblem(f"unescaped {c!r} in phrase", "MALFORMED_SEARCH")
                else:
                    chars.append(c)
                    i += 1
            yield "term", Term("".join(chars), phrase=True)
        else:
            chars, raw, wildcard = [], [], False
            while i < len(text) and not text[i].isspace() and text[i] not in '()"':
                c = text[i]
                if c == "\\" and i + 1 < len(text):
                    chars.append(text[i + 1])
                    raw.append(c + text[i + 1])
                    i += 2
                    continue
                if c in _SOSL_RESERVED and c not in "*?":
                    raise SyntaxProblem(f"unescaped {c!r} in search term", "MALFORMED_SEARCH")
                wildcard = c == "*"
                if c != "*":
                    chars.append(c)
                raw.append(c)
                i += 1
            word = "".join(raw)
            if word.upper() in ("OR", "AND", "NOT"):
                yield "op", word.upper()
            else:
                yield "term", Term("".join(chars), wildcard=wildcard)


def _parse_search(text: str) -> Any:
    tokens = list(_search_tokens(text))
    pos = 0

    def peek() -> tuple[str, Any] | None:
        return tokens[pos] if pos < len(tokens) else None

    def parse_or() -> Any:
        nonlocal pos
        parts = [parse_and()]
        while peek() == ("op", "OR"):
            pos += 1
            parts.append(parse_and())
        return parts[0] if len(parts) == 1 else _Search("OR", tuple(parts))

    def parse_and() -> Any:
        nonlocal pos
        node = parse_unary()
        while True:
            tok = peek()
            if tok == ("op", "AND"):
                pos += 1
                if peek() == ("op", "NOT"):
                    pos += 1
                    node = _Search("ANDNOT", (node, parse_unary()))
                else:
                    node = _Search("AND", (node, parse_unary()))
            elif tok is not None and tok[0] in ("term", "("):
                node = _Search("AND", (node, parse_unary()))  # juxtaposed words: all must match
            else:
                return node

    def parse_unary() -> Any:
        nonlocal pos
        tok = peek()
        if tok is None:
            raise SyntaxProblem("search term expected", "MALFORMED_SEARCH")
        pos += 1
        if tok[0] == "(":
            inner = parse_or()
            if peek() != (")", ")"):
                raise SyntaxProblem("missing ')'", "MALFORMED_SEARCH")
            pos += 1
            return inner
        if tok[0] != "term":
            raise SyntaxProblem(f"unexpected {tok[1]!r}", "MALFORMED_SEARCH")
        return tok[1]

    node = parse_or()
    if pos != len(tokens):
        raise SyntaxProblem("unexpected text after the search", "MALFORMED_SEARCH")
    return node


def parse_sosl(text: str) -> SoslQuery:
    """``FIND {search} [IN <group> FIELDS] [RETURNING Obj(fields [WHERE ...] [LIMIT n]), ...]
    [LIMIT n]``; the search is quoted phrases or words joined by OR / AND / AND NOT."""
    search_text, rest = _find_clause(text)
    search = _parse_search(search_text)
    parser = _Parser(_lex(rest))
    group = "ALL"
    if parser.keyword("IN"):
        group = parser.name().upper()
        if group not in ("ALL", "NAME", "EMAIL", "PHONE", "SIDEBAR"):
            raise SyntaxProblem(f"unknown search group {group}", "MALFORMED_SEARCH")
        parser.expect_keyword("FIELDS")
    returning: list[_Returning] = []
    if parser.keyword("RETURNING"):
        while True:
            sobject = parser.name()
            if parser.punct("("):
                fields = parser.field_list()
                where = parser.condition() if parser.keyword("WHERE") else None
                limit = parser.integer() if parser.keyword("LIMIT") else None
                parser.expect_punct(")")
                returning.append(_Returning(sobject, tuple(fields), where, limit))
            else:
                returning.append(_Returning(sobject))
            if not parser.punct(","):
                break
    limit = parser.integer() if parser.keyword("LIMIT") else None
    if not parser.at_end():
        raise SyntaxProblem(f"unexpected token: {parser._found()}", "MALFORMED_SEARCH")
    return SoslQuery(search, group, tuple(returning), limit)
