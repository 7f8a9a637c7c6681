"""The one canonical text form of the IR, with a printer and a parser that round-trip.

    graph main(%x: f32[batch,4], %w: f32[4,8]) {
      %0: f32[batch,8] = matmul(%x, %w)   # onnx:/h.0/MatMul
      %1: f32[batch,4], %2: f32[batch,4] = split(%0) {axis=1, sizes=(4,4)}
      return %1 as "y", %2 as "z"
    }

Constants up to ``inline_limit`` elements print inline as ``dense<f32[2]>[1.0, 2.0]``; larger
ones print as ``@name`` and travel in a side table (``print_graph_with_weights`` / ``parse``).
"""
from __future__ import annotations

import base64
import json
import math
import re
from typing import Any, Mapping

import numpy as np

from ..errors import ParseError
from .graph import Graph
from .node import Attrs, ConstData, Node, Origin, Value, input_node
from .types import INT4_RANGE, DType, OpaqueType, TensorType, ValueType

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*$")


# ---- printing ---------------------------------------------------------------------------------

def format_type(t: ValueType) -> str:
    if isinstance(t, TensorType):
        return str(t)
    return f"opaque<{t.summary}>:b64\"{base64.b64encode(t.proto).decode()}\""


def _fmt_scalar(x: Any) -> str:
    if isinstance(x, (bool, np.bool_)):
        return "true" if x else "false"
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    if isinstance(x, (float, np.floating)):
        f = float(x)
        if math.isnan(f):
            return "nan"
        if math.isinf(f):
            return "inf" if f > 0 else "-inf"
        return repr(f)
    if isinstance(x, (complex, np.complexfloating)):
        return f"complex({_fmt_scalar(x.real)}, {_fmt_scalar(x.imag)})"
    if isinstance(x, (str, np.str_)):
        return json.dumps(str(x))
    if isinstance(x, bytes):
        return json.dumps(x.decode("latin-1"))
    raise TypeError(f"cannot print scalar {x!r}")


def format_attr(v: Any, weights: dict[str, ConstData] | None, inline_limit: int) -> str:
    if v is None:
        return "none"
    if isinstance(v, tuple):
        inner = ", ".join(format_attr(x, weights, inline_limit) for x in v)
        return f"({inner},)" if len(v) == 1 else f"({inner})"
    if isinstance(v, DType):
        return f"dtype:{v.value}"
    if isinstance(v, (TensorType, OpaqueType)):
        return f"type:{format_type(v)}"
    if isinstance(v, bytes):
        return f"b64\"{base64.b64encode(v).decode()}\""
    if isinstance(v, ConstData):
        n = int(np.prod(v.shape)) if v.shape else 1
        if v.has_array and n <= inline_limit and v.dtype.is_float | v.dtype.is_int | (
                v.dtype in (DType.bool, DType.string)):
            flat = ", ".join(_fmt_scalar(x) for x in np.asarray(v.array).reshape(-1).tolist())
            return f"dense<{format_type(v.type)}>[{flat}]"
        if weights is None:
            return f"@<{format_type(v.type)}>"
        name = f"c{len(weights)}"
        weights[name] = v
        return f"@{name}"
    return _fmt_scalar(v)


def print_graph_with_weights(g: Graph, inline_limit: int = 16) -> tuple[str, dict[str, ConstData]]:
    weights: dict[str, ConstData] = {}
    return _print(g, weights, inline_limit), weights


def print_graph(g: Graph, inline_limit: int = 16) -> str:
    """Text of the graph; large constants print as ``@<type>`` (use print_graph_with_weights to
    round-trip them)."""
    return _print(g, None, inline_limit)


def value_names(g: Graph) -> dict[tuple[int, int], str]:
    names: dict[tuple[int, int], str] = {}
    used: set[str] = set()
    for n in g.inputs:
        nm = n.attrs["name"]
        nm = nm if _IDENT.match(nm) and not nm.isdigit() else json.dumps(nm)
        names[(id(n), 0)] = nm
        used.add(nm)
    k = 0
    for n in g.nodes:
        if n.op == "input":
            continue
        for i in range(len(n.out_types)):
            while str(k) in used:
                k += 1
            names[(id(n), i)] = str(k)
            used.add(str(k))
            k += 1
    return names


def node_line(n: Node, names: Mapping[tuple[int, int], str],
              weights: dict[str, ConstData] | None = None, inline_limit: int = 16) -> str:
    outs = ", ".join(f"%{names[(id(n), i)]}: {format_type(t)}" for i, t in enumerate(n.out_types))
    args = ", ".join(f"%{names.get((id(v.node), v.index), '?')}" for v in n.inputs)
    s = f"{outs} = {n.op}({args})"
    if len(n.attrs):
        s += " {" + ", ".join(f"{k}={format_attr(v, weights, inline_limit)}"
                              for k, v in n.attrs.items()) + "}"
    if n.origin is not None:
        s += f"   # {n.origin.source}:{json.dumps(n.origin.name)}"
        if n.origin.detail:
            s += f" {json.dumps(n.origin.detail)}"
    return s


def _print(g: Graph, weights: dict[str, ConstData] | None, inline_limit: int) -> str:
    names = value_names(g)
    ins = ", ".join(f"%{names[(id(n), 0)]}: {format_type(n.out_types[0])}" for n in g.inputs)
    lines = [f"graph {g.name}({ins}) {{"]
    for n in g.nodes:
        if n.op == "input":
            continue
        lines.append("  " + node_line(n, names, weights, inline_limit))
    rets = ", ".join(f"%{names[(id(v.node), v.index)]} as {json.dumps(nm)}"
                     for v, nm in zip(g.outputs, g.output_names))
    lines.append(f"  return {rets}")
    lines.append("}")
    return "\n".join(lines) + "\n"


# ---- parsing ----------------------------------------------------------------------------------

class _P:
    def __init__(self, s: str, line: int, weights: Mapping[str, ConstData]) -> None:
        self.s, self.i, self.line, self.weights = s, 0, line, weights

    def err(self, msg: str) -> ParseError:
        return ParseError(f"{msg} at column {self.i + 1}: {self.s.strip()!r}",
                          where=f"line {self.line}")

    def ws(self) -> None:
        while self.i < len(self.s) and self.s[self.i] in " \t":
            self.i += 1

    def peek(self, t: str) -> bool:
        self.ws()
        return self.s.startswith(t, self.i)

    def eat(self, t: str) -> bool:
        if self.peek(t):
            self.i += len(t)
            return True
        return False

    def expect(self, t: str) -> None:
        if not self.eat(t):
            raise self.err(f"expected {t!r}")

    def regex(self, r: str, what: str) -> str:
        self.ws()
        m = re.compile(r).match(self.s, self.i)
        if not m:
            raise self.err(f"expected {what}")
        self.i = m.end()
        return m.group(0)

    def string(self) -> str:
        self.ws()
        if not self.peek('"'):
            raise self.err("expected a string")
        dec = json.JSONDecoder()
        v, end = dec.raw_decode(self.s, self.i)
        self.i = end
        return v

    def value_name(self) -> str:
        self.expect("%")
        if self.peek('"'):
            return self.string()
        return self.regex(r"[A-Za-z0-9_.]+", "a value name")

    def dtype(self) -> DType:
        name = self.regex(r"[a-z0-9]+", "a dtype")
        try:
            return DType(name)
        except ValueError:
            raise self.err(f"unknown dtype {name!r}") from None

    def type(self) -> ValueType:
        if self.eat("opaque<"):
            summary = self.regex(r"[^>]*", "a summary")
            self.expect(">:b64")
            return OpaqueType(base64.b64decode(self.string()), summary)
        dt = self.dtype()
        self.expect("[")
        if self.eat("?"):
            self.expect("]")
            return TensorType(None, dt)
        dims: list[int | str] = []
        while not self.eat("]"):
            d = self.regex(r"[A-Za-z0-9_.*]+", "a dim")
            dims.append(int(d) if d.isdigit() else d)
            self.eat(",")
        return TensorType(tuple(dims), dt)

    def scalar(self) -> Any:
        self.ws()
        if self.peek('"'):
            return self.string()
        tok = self.regex(r"-?(inf|nan|true|false|none|[0-9][0-9a-zA-Z_.+\-]*|\.[0-9][0-9eE+\-]*)",
                         "a value")
        if tok in ("true", "false"):
            return tok == "true"
        if tok == "none":
            return None
        if tok in ("inf", "-inf", "nan", "-nan"):
            return float(tok)
        try:
            return int(tok)
        except ValueError:
            try:
                return float(tok)
            except ValueError:
                raise self.err(f"bad number {tok!r}") from None

    def attr_value(self) -> Any:
        if self.eat("("):
            items = []
            while not self.eat(")"):
                items.append(self.attr_value())
                if not self.eat(","):
                    self.expect(")")
                    break
            return tuple(items)
        if self.eat("dtype:"):
            return self.dtype()
        if self.eat("type:"):
            return self.type()
        if self.eat("b64"):
            return base64.b64decode(self.string())
        if self.eat("dense<"):
            t = self.type()
            self.expect(">")
            self.expect("[")
            vals = []
            while not self.eat("]"):
                vals.append(self.complex_or_scalar())
                self.eat(",")
            assert isinstance(t, TensorType) and t.shape is not None
            lo_hi = INT4_RANGE.get(t.dtype)  # ml_dtypes would wrap out-of-range values silently
            if lo_hi is not None and any(not lo_hi[0] <= v <= lo_hi[1] for v in vals):
                raise self.err(f"dense<{format_type(t)}>: values must lie in "
                               f"[{lo_hi[0]}, {lo_hi[1]}]")
            arr = np.array(vals, dtype=object if t.dtype == DType.string else t.dtype.to_numpy())
            return ConstData(arr.reshape(t.shape))
        if self.eat("@"):
            if self.peek("<"):
                raise self.err("constant data was not printed (use print_graph_with_weights)")
            name = self.regex(r"[A-Za-z0-9_.]+", "a weight name")
            if name not in self.weights:
                raise self.err(f"no weight named {name!r} was given to the parser")
            return self.weights[name]
        return self.scalar()

    def complex_or_scalar(self) -> Any:
        if self.eat("complex("):
            re_ = self.scalar()
            self.expect(",")
            im = self.scalar()
            self.expect(")")
            return complex(re_, im)
        return self.scalar()


def parse(text: str, weights: Mapping[str, ConstData] | None = None) -> Graph:
    """Parse the text form back into a Graph."""
    weights = weights or {}
    lines = [(i + 1, ln) for i, ln in enumerate(text.splitlines()) if ln.strip()]
    if not lines:
        raise ParseError("empty text")
    lno, head = lines[0]
    p = _P(head, lno, weights)
    p.expect("graph")
    name = p.regex(r"[A-Za-z0-9_.\-]+", "a graph name")
    p.expect("(")
    env: dict[str, Value] = {}
    inputs: list[Node] = []
    while not p.eat(")"):
        vn = p.value_name()
        p.expect(":")
        t = p.type()
        n = input_node(vn, t)
        inputs.append(n)
        env[vn] = n.out
        p.eat(",")
    p.expect("{")
    outputs: list[Value] = []
    out_names: list[str] = []
    for lno, ln in lines[1:]:
        p = _P(ln, lno, weights)
        if p.eat("}"):
            break
        if p.eat("return"):
            while p.i < len(ln.rstrip()):
                vn = p.value_name()
                if vn not in env:
                    raise p.err(f"unknown value %{vn}")
                outputs.append(env[vn])
                p.expect("as")
                out_names.append(p.string())
                if not p.eat(","):
                    break
            continue
        outs: list[tuple[str, ValueType]] = []
        while True:
            vn = p.value_name()
            p.expect(":")
            outs.append((vn, p.type()))
            if not p.eat(","):
                break
        p.expect("=")
        op = p.regex(r"[A-Za-z_][A-Za-z0-9_.]*", "an op name")
        p.expect("(")
        args: list[Value] = []
        while not p.eat(")"):
            vn = p.value_name()
            if vn not in env:
                raise p.err(f"unknown value %{vn}")
            args.append(env[vn])
            p.eat(",")
        attrs: dict[str, Any] = {}
        if p.eat("{"):
            while not p.eat("}"):
                k = p.regex(r"[A-Za-z_][A-Za-z0-9_]*", "an attribute name")
                p.expect("=")
                attrs[k] = p.attr_value()
                p.eat(",")
        origin = None
        if p.eat("#"):
            src = p.regex(r"[A-Za-z0-9_:\-]+?(?=:\")", "an origin source")
            p.expect(":")
            oname = p.string()
            detail = p.string() if p.peek('"') else ""
            origin = Origin(src, oname, detail)
        try:
            node = Node.build(op, args, attrs, origin)
        except Exception as e:  # re-raise with the line
            raise ParseError(f"{e}", where=f"line {lno}",
                             context=f"  {ln.strip()}") from e
        if len(node.out_types) != len(outs):
            raise p.err(f"{op} has {len(node.out_types)} outputs, the text names {len(outs)}")
        for i, (vn, t) in enumerate(outs):
            if node.out_types[i] != t:
                raise p.err(f"%{vn}: text says {format_type(t)}, "
                            f"{op} infers {format_type(node.out_types[i])}")
            env[vn] = Value(node, i)
    return Graph(inputs, outputs, out_names, name)
