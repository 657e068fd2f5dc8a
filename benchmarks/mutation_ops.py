"""Mutant generation for `benchmarks/mutation.py`: one small source edit per mutant, found with `ast`.

Operators (each mutant changes exactly one token of the source, so the rest of the file, its
line numbers and its formatting stay as they are):

- comparison: `<` ↔ `<=`, `>` ↔ `>=`, `==` ↔ `!=`, `is` ↔ `is not`, `in` ↔ `not in`;
- arithmetic: `+` ↔ `-`, `*` → `/`, `/` → `*`, `//` → `/`, and the same in augmented assignments;
- sign flip: `-x` → `x`; negation dropped: `not x` → `x`;
- boolean: `and` ↔ `or`;
- `min` ↔ `max` in calls;
- constants: `True` ↔ `False`; an integer n → n + 1 and n − 1 (off-by-ones); a float tolerance
  (0 < |x| < 1e-3) → 0 (the tolerance dropped), any other float x → 2x (a constant tweak).

Not mutated: strings (docstrings, messages, f-strings), `raise` and `assert` statements (what an
error says, not when it is raised: the condition above a `raise` is mutated), type annotations,
and default values of function parameters (knob defaults are pinned by the policies' own docs).
Positions from `ast` are UTF-8 byte offsets, so the edit is made on the file's bytes.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass

COMPARE_SWAPS = {ast.Lt: "<=", ast.LtE: "<", ast.Gt: ">=", ast.GtE: ">", ast.Eq: "!=", ast.NotEq: "==",
                 ast.Is: "is not", ast.IsNot: "is", ast.In: "not in", ast.NotIn: "in"}
COMPARE_TEXT = {ast.Lt: rb"<", ast.LtE: rb"<=", ast.Gt: rb">", ast.GtE: rb">=", ast.Eq: rb"==", ast.NotEq: rb"!=",
                ast.Is: rb"is", ast.IsNot: rb"is\s+not", ast.In: rb"in", ast.NotIn: rb"not\s+in"}
BINOP_SWAPS = {ast.Add: ("+", "-"), ast.Sub: ("-", "+"), ast.Mult: ("*", "/"), ast.Div: ("/", "*"),
               ast.FloorDiv: ("//", "/")}
TOLERANCE_BELOW = 1e-3


@dataclass(frozen=True)
class Mutant:
    path: str  # relative to the repository root
    line: int  # 1-based
    start: int  # byte offsets of the replaced span in the file
    end: int
    original: str
    replacement: str
    operator: str
    function: str  # "module" or the qualified name of the innermost enclosing function
    function_line: int  # first line of that function's code object (its first decorator), 0 for module level

    @property
    def key(self) -> str:
        return f"{self.path}:{self.line}:{self.start}:{self.operator}:{self.original}->{self.replacement}"

    def apply(self, source: bytes) -> bytes:
        return source[: self.start] + self.replacement.encode() + source[self.end :]


class _Finder(ast.NodeVisitor):
    def __init__(self, path: str, source: bytes):
        self.path = path
        self.source = source
        self.line_starts = [0]
        for i, b in enumerate(source):
            if b == 0x0A:
                self.line_starts.append(i + 1)
        self.mutants: list[Mutant] = []
        self.scope: list[tuple[str, int]] = []

    # --- positions -------------------------------------------------------------------------
    def offset(self, line: int, col: int) -> int:
        return self.line_starts[line - 1] + col

    def start_of(self, node) -> int:
        return self.offset(node.lineno, node.col_offset)

    def end_of(self, node) -> int:
        return self.offset(node.end_lineno, node.end_col_offset)

    def add(self, start: int, end: int, replacement: str, operator: str, line: int) -> None:
        name, first = self.scope[-1] if self.scope else ("module", 0)
        original = self.source[start:end].decode()
        self.mutants.append(Mutant(self.path, line, start, end, original, replacement, operator, name, first))

    def in_gap(self, left, right, pattern: bytes, line: int, replacement: str, operator: str) -> None:
        """Mutate the one operator token found between two operand nodes."""
        a, b = self.end_of(left), self.start_of(right)
        gap = self.source[a:b]
        if b"#" in gap:
            return  # a comment between the operands: positions would be ambiguous
        found = list(re.finditer(rb"(?<![\w<>=!*/+-])" + pattern + rb"(?![\w<>=!*/+-])", gap))
        if len(found) == 1:
            m = found[0]
            self.add(a + m.start(), a + m.end(), replacement, operator, line)

    # --- scopes and skipped subtrees ----------------------------------------------------------
    def _function(self, node) -> None:
        first = min([node.lineno] + [d.lineno for d in node.decorator_list])
        qual = ".".join([s for s, _ in self.scope if s != "module"] + [node.name])
        for d in node.decorator_list:
            self.visit(d)
        self.scope.append((qual, first))
        body = node.body
        if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
            body = body[1:]  # the docstring
        for stmt in body:
            self.visit(stmt)
        self.scope.pop()

    visit_FunctionDef = _function
    visit_AsyncFunctionDef = _function

    def visit_ClassDef(self, node) -> None:
        for stmt in node.body:
            if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant):
                continue
            self.visit(stmt)

    def visit_Raise(self, node) -> None:
        return

    def visit_Assert(self, node) -> None:
        return

    def visit_JoinedStr(self, node) -> None:
        return

    def visit_AnnAssign(self, node) -> None:
        if node.value is not None:
            self.visit(node.value)

    def visit_Expr(self, node) -> None:
        if not isinstance(node.value, ast.Constant):
            self.visit(node.value)

    def visit_Import(self, node) -> None:
        return

    def visit_ImportFrom(self, node) -> None:
        return

    # --- operators -----------------------------------------------------------------------------
    def visit_Compare(self, node) -> None:
        left = node.left
        for op, right in zip(node.ops, node.comparators):
            kind = type(op)
            self.in_gap(left, right, COMPARE_TEXT[kind], node.lineno, COMPARE_SWAPS[kind], "compare")
            left = right
        self.generic_visit(node)

    def visit_BinOp(self, node) -> None:
        swap = BINOP_SWAPS.get(type(node.op))
        if swap is not None:
            self.in_gap(node.left, node.right, re.escape(swap[0].encode()), node.lineno, swap[1], "arith")
        self.generic_visit(node)

    def visit_AugAssign(self, node) -> None:
        swap = BINOP_SWAPS.get(type(node.op))
        if swap is not None:
            self.in_gap(node.target, node.value, re.escape(swap[0].encode() + b"="), node.lineno, swap[1] + "=", "arith")
        self.visit(node.value)

    def visit_BoolOp(self, node) -> None:
        word, other = (b"and", "or") if isinstance(node.op, ast.And) else (b"or", "and")
        for left, right in zip(node.values, node.values[1:]):
            self.in_gap(left, right, word, node.lineno, other, "bool")
        self.generic_visit(node)

    def visit_UnaryOp(self, node) -> None:
        if isinstance(node.op, (ast.USub, ast.Not)):
            start, operand = self.start_of(node), self.start_of(node.operand)
            text = self.source[start:operand]
            if text.strip() in (b"-", b"not"):
                self.add(start, operand, "", "sign" if isinstance(node.op, ast.USub) else "not", node.lineno)
        self.generic_visit(node)

    def visit_Call(self, node) -> None:
        f = node.func
        if isinstance(f, ast.Name) and f.id in ("min", "max"):
            self.add(self.start_of(f), self.end_of(f), "max" if f.id == "min" else "min", "minmax", f.lineno)
        self.generic_visit(node)

    def visit_Constant(self, node) -> None:
        v = node.value
        start, end = self.start_of(node), self.end_of(node)
        if v is True or v is False:
            self.add(start, end, str(not v), "bool-const", node.lineno)
        elif isinstance(v, int):
            self.add(start, end, str(v + 1), "int+1", node.lineno)
            if v != 0:
                self.add(start, end, str(v - 1), "int-1", node.lineno)
        elif isinstance(v, float):
            if 0 < abs(v) < TOLERANCE_BELOW:
                self.add(start, end, "0.0", "tolerance", node.lineno)
            else:
                self.add(start, end, repr(2 * v) if v else "1.0", "float", node.lineno)

    def visit_arguments(self, node) -> None:
        return  # parameter defaults and annotations

    def visit_Lambda(self, node) -> None:
        self.visit(node.body)


def _strip_annotations(tree: ast.AST) -> None:
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            node.returns = None


def find_mutants(path: str, source: bytes) -> list[Mutant]:
    """Every mutant of one module, in source order."""
    tree = ast.parse(source)
    _strip_annotations(tree)
    body = tree.body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]
    finder = _Finder(path, source)
    for stmt in body:
        finder.visit(stmt)
    out = []
    for m in finder.mutants:
        mutated = m.apply(source)
        try:
            ast.parse(mutated)
        except SyntaxError:
            continue
        out.append(m)
    return sorted(out, key=lambda m: (m.start, m.operator, m.replacement))
