"""A graph as an egglog program: its nodes become terms, its types become ``shape``/``dtype``
function rows, and its inputs and constants stay in a Python side table.

Encoding (shared with ``rules.py``, which writes rules over the same constructors):

* sort ``T`` is a tensor value, sort ``N`` a multi-output node (``split`` always, any node with
  other than one output); ``(Out n i)`` is output ``i`` of ``n``; ``G`` holds the graph outputs
  (``(RootK o1 .. oK)``).
* one constructor per (op, arity, sort): ``matmul_2``, ``split_1n``; its first argument is the
  op's plain attributes as one canonical literal string (``attr_literal``), then one ``IVec`` per
  dim-valued attribute (the op's ``dim_attrs``: split sizes, reshape shapes), then the inputs.
* ``(Leaf i)``: entry ``i`` of the side table (an input, a constant, or a value the e-graph does
  not model: opaque and impure nodes, unknown shapes). Weights are never copied into egglog.
* symbolic dims are distinct large primes (a product ``batch*seq`` the product of its primes,
  ``seq*_x12`` 12 times seq's), mapped back by ``Symbols.dim``.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Iterable, Sequence

from ...errors import GraphOptError
from ...ir.graph import Graph
from ...ir.node import Attrs, ConstData, Node, Value
from ...ir.types import Dim, TensorType, dim_factors, dim_product
from ...ops.registry import get_op

# the primes standing for symbolic dims: >= SYM_BASE, so a dim below it is static
SYM_BASE = 1_000_003

# literal -> plain attrs (without dim attrs), shared by every encoding of the process
_ATTRS: dict[str, Attrs] = {}


def attr_literal(op: str, attrs: Attrs) -> str:
    """The canonical egglog string literal (with quotes) of ``attrs`` of an ``op`` node, without
    its dim-valued attrs; ``plain_attrs`` maps it back."""
    dims = get_op(op).dim_attrs
    plain = Attrs({k: v for k, v in attrs.items() if k not in dims})
    text = ",".join(f"{k}={v!r}" for k, v in plain.items())
    if '"' in text or "\\" in text or len(text) > 200:
        text = "#" + hashlib.sha1(text.encode()).hexdigest()[:16]
    _ATTRS.setdefault(text, plain)
    return f'"{text}"'


def plain_attrs(literal: str) -> Attrs:
    """The attrs of a literal made by ``attr_literal`` (with or without its quotes)."""
    key = literal[1:-1] if literal.startswith('"') else literal
    if key not in _ATTRS:
        raise GraphOptError(f"e-graph attrs {literal} were not made by this process's encoder",
                            where="egraph decode")
    return _ATTRS[key]


def multi(n: Node) -> bool:
    """Whether a node is encoded as sort N (read through ``Out``)."""
    return n.op == "split" or len(n.out_types) != 1


def ctor(op: str, arity: int, is_multi: bool) -> str:
    """The constructor name of (op, arity, sort)."""
    return f"{op}_{arity}{'n' if is_multi else ''}"


def encodable(n: Node) -> str | None:
    """Why ``n`` cannot be a term (it becomes a leaf then), or None."""
    if n.op in ("input", "constant"):
        return "source"
    opdef = get_op(n.op)
    if not opdef.pure or n.op == "opaque":
        return "impure or opaque"
    if any(isinstance(v, ConstData) for v in n.attrs.values()):
        return "attrs hold data"
    for d in opdef.dim_attrs:
        if d not in n.attrs or not isinstance(n.attrs[d], tuple):
            return f"dim attr {d} missing or not a tuple"
    for t in [v.type for v in n.inputs] + list(n.out_types):
        if not isinstance(t, TensorType) or t.shape is None:
            return "unknown shape"
    return None


@dataclass
class Symbols:
    """Symbolic dim names <-> the primes standing for them."""

    prime: dict[str, int] = field(default_factory=dict)

    def encode(self, d: Dim) -> int:
        """A dim as an i64: an int itself; a symbolic dim the product of its symbols' primes
        and its coefficient."""
        if isinstance(d, int):
            return d
        coef, syms = dim_factors(d)
        out = coef
        for s in syms:
            if s not in self.prime:
                self.prime[s] = _next_prime(max(self.prime.values(), default=SYM_BASE - 2)
                                            + 2)
            out *= self.prime[s]
        return out

    def dim(self, x: int) -> Dim:
        """The dim an i64 stands for (symbols factored out of it)."""
        if x < SYM_BASE:
            return x
        rest, syms = x, []
        for s, p in sorted(self.prime.items(), key=lambda kv: kv[1]):
            while rest % p == 0:
                rest //= p
                syms.append(s)
        if not syms:
            return x
        return dim_product([rest, *syms])

    def shape(self, xs: Iterable[int]) -> tuple[Dim, ...]:
        return tuple(self.dim(x) for x in xs)


def _next_prime(n: int) -> int:
    def is_prime(k: int) -> bool:
        if k < 2 or k % 2 == 0:
            return k == 2
        i = 3
        while i * i <= k:
            if k % i == 0:
                return False
            i += 2
        return True

    while not is_prime(n):
        n += 1
    return n


def ivec(xs: Iterable[int]) -> str:
    """An egglog i64 vector literal."""
    items = " ".join(str(int(x)) for x in xs)
    return f"(vec-of {items})" if items else "(vec-empty)"


@dataclass
class Encoded:
    """A graph as egglog text plus what decoding needs.

    ``term``: the program that builds the graph's terms and sets their types (run after
    ``declarations``); ``leaves``: the side table ``(Leaf i)`` indexes; ``root``: the global of
    the ``G`` term holding the outputs; ``values``: the global naming each encoded value
    (``$vK``) -> that value; ``ctors``: (op, arity, multi) of every constructor used."""

    graph: Graph
    term: str
    leaves: list[Value]
    root: str
    symbols: Symbols
    values: dict[str, Value]
    ctors: set[tuple[str, int, bool]]
    n_outputs: int
    # ``select.node_key`` of every encoded node (rule selection)
    keys: set[str] = field(default_factory=set)
    # the input graph's e-nodes: (global, constructor, globals of its children)
    originals: list[tuple[str, str, tuple[str, ...]]] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)  # globals of ``encode``'s extra values


def declarations(ctors: Iterable[tuple[str, int, bool]], root_arities: Iterable[int]) -> str:
    """The sorts, constructors and functions of the encoding for these constructors."""
    lines = ["(sort IVec (Vec i64))", "(sort T)", "(sort N)", "(sort G)",
             "(constructor Leaf (i64) T)", "(constructor Out (N i64) T)"]
    for k in sorted(set(root_arities)):
        lines.append(f"(constructor Root{k} ({' '.join(['T'] * k)}) G)")
    for op, arity, is_multi in sorted(set(ctors)):
        dims = " IVec" * len(get_op(op).dim_attrs)
        ins = " T" * arity
        lines.append(f"(constructor {ctor(op, arity, is_multi)} (String{dims}{ins}) "
                     f"{'N' if is_multi else 'T'})")
    lines += [
        "(function shape (T) IVec :merge old)",
        "(function dtype (T) String :merge old)",
        # position of a value in the input graph (merge rules pair values in this order)
        "(function ord (T) i64 :merge (min old new))",
        "(function ord_hi (T) i64 :merge (max old new))",
        "(relation is_const (T))",
        "(relation is_float (String))",
        # (class, 'rule|constructor'): a rule unioned a node of that constructor into the class
        "(relation made (T String))",
        "(relation made_n (N String))",
    ]
    return "\n".join(lines) + "\n"


FLOAT_DTYPES = ("f16", "bf16", "f32", "f64")


def encode(g: Graph, symbols: Symbols | None = None, extra: Sequence[Value] = ()) -> Encoded:
    """The egglog program text of ``g`` (see the module docstring). ``extra``: more values
    over ``g``'s (rewrites found outside egglog) encoded too, their globals in
    ``Encoded.extra``."""
    from .select import node_key

    sym = symbols if symbols is not None else Symbols()
    lines: list[str] = [f'(is_float "{d}")' for d in FLOAT_DTYPES]
    leaves: list[Value] = []
    names: dict[tuple[int, int], str] = {}
    nodes_n: dict[int, str] = {}
    values: dict[str, Value] = {}
    ctors: set[tuple[str, int, bool]] = set()
    originals: list[tuple[str, str, tuple[str, ...]]] = []
    keys: set[str] = set()
    pos = 0
    in_g = {id(n) for n in g.nodes}  # extra values are neither original nor ordered

    def typed(name: str, v: Value) -> None:
        nonlocal pos
        t = v.type
        assert isinstance(t, TensorType) and t.shape is not None
        lines.append(f"(set (shape {name}) {ivec(sym.encode(d) for d in t.shape)})")
        lines.append(f'(set (dtype {name}) "{t.dtype.value}")')
        if id(v.node) in in_g:
            lines.append(f"(set (ord {name}) {pos})")
            lines.append(f"(set (ord_hi {name}) {pos})")
            pos += 1
        values[name] = v

    def leaf(v: Value) -> str:
        name = f"$v{len(names)}"
        names[(id(v.node), v.index)] = name
        lines.append(f"(let {name} (Leaf {len(leaves)}))")
        if id(v.node) in in_g:
            originals.append((name, "Leaf", ()))
        leaves.append(v)
        t = v.type
        if isinstance(t, TensorType) and t.shape is not None:
            typed(name, v)
        if v.node.op == "constant":
            lines.append(f"(is_const {name})")
        return name

    def ref(v: Value) -> str:
        k = (id(v.node), v.index)
        return names[k] if k in names else leaf(v)

    every = Graph(g.inputs, list(g.outputs) + list(extra)) if extra else g
    for n in every.nodes:
        if encodable(n) is not None:
            continue
        ins = [ref(v) for v in n.inputs]
        is_multi = multi(n)
        ctors.add((n.op, len(ins), is_multi))
        dims = [ivec(sym.encode(d) for d in n.attrs[a]) for a in get_op(n.op).dim_attrs]
        keys.add(node_key(n))
        term = f"({ctor(n.op, len(ins), is_multi)} {attr_literal(n.op, n.attrs)} " \
               f"{' '.join(dims + ins)})"
        if is_multi:
            nn = f"$n{len(nodes_n)}"
            nodes_n[id(n)] = nn
            lines.append(f"(let {nn} {term})")
            if id(n) in in_g:
                originals.append((nn, ctor(n.op, len(ins), True), tuple(ins)))
            for i in range(len(n.out_types)):
                name = f"$v{len(names)}"
                names[(id(n), i)] = name
                lines.append(f"(let {name} (Out {nn} {i}))")
                if id(n) in in_g:
                    originals.append((name, "Out", (nn,)))
                typed(name, Value(n, i))
        else:
            name = f"$v{len(names)}"
            names[(id(n), 0)] = name
            lines.append(f"(let {name} {term})")
            if id(n) in in_g:
                originals.append((name, ctor(n.op, len(ins), False), tuple(ins)))
            typed(name, Value(n, 0))
    outs = [ref(v) for v in g.outputs]
    extra_names = [ref(v) for v in extra]
    lines.append(f"(let $root (Root{len(outs)} {' '.join(outs)}))")
    if not outs:
        raise GraphOptError("graph has no outputs", where="egraph encode")
    return Encoded(g, "\n".join(lines) + "\n", leaves, "$root", sym, values, ctors, len(outs),
                   keys, originals, extra_names)
