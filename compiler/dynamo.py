"""``torch.compile(model, backend="graphopt")``: graphopt as a TorchDynamo backend.

Dynamo captures the forward as FX graphs (one per stretch of code between graph breaks) and
hands each to :func:`graphopt_backend` with example inputs. The backend

1. sorts the graph's inputs: module state (parameters and buffers, which Dynamo passes as
   inputs and marks with ``_dynamo_static_input_type``) is frozen into the graph as constants,
   symbolic sizes (``SymInt`` inputs of a dynamic graph) are baked in at their values, the
   other tensors stay inputs;
2. runs ``graphopt.optimize`` on that module (``torch.export`` -> IR -> rewrites -> the numeric
   check against the captured graph on the example inputs) with the options given by
   ``torch.compile(..., options={"target": ..., "quantize": ...})``;
3. returns a callable running the optimized graph's torch callable
   (``OptimizedModel.torch_module()``: generated Triton kernels on a GPU target with a GPU).

A compiled graph is specialized to its input shapes, dtypes, devices, int values and to the
identity and version counter of the frozen state: a call with other shapes (a dynamic graph),
another module instance or weights changed in place runs graphopt again for that case.

Falling back to eager: a graph graphopt cannot compile (an export or lift failure, an op
without a mapping, a failed check, autograd needed because grad mode is on and an input
requires grad) runs as Dynamo captured it, and the reason is logged as a warning on the
``graphopt.dynamo`` logger; ``options={"fallback": False}`` raises instead. A graph break
(``.item()``, ``print``, data-dependent control flow) is Dynamo's: the code at the break runs
in Python and the graphs before and after it come here separately; the backend logs the
break's reason (read from Dynamo's translator, an internal API; logged as unknown when absent).

Every compiled graph's outcome is a :class:`GraphRecord` on the callable (``.records``) and in
:data:`RECORDS` (the last 256, newest last).
"""
from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Sequence

from .errors import GraphOptError

if TYPE_CHECKING:
    import torch

log = logging.getLogger("graphopt.dynamo")

# options of torch.compile(..., options=...) -> graphopt.optimize keyword arguments
OPTIMIZE_OPTIONS = ("target", "quantize", "budget", "cost", "allow_contrib_ops", "check",
                    "group_size", "method", "max_error", "activations")
BACKEND_OPTIONS = ("fallback", "runtime")
RUNTIMES = ("torch", "onnxruntime")


@dataclass
class GraphRecord:
    """What happened to one captured graph for one input specialization."""

    graph: str  # the FX graph's name and size, e.g. "graph 1 (14 ops)"
    status: str  # "graphopt" (optimized and checked) | "eager" (fell back)
    reason: str = ""  # why it fell back, or "" when compiled
    compile_s: float = 0.0
    nodes_before: int = 0
    nodes_after: int = 0
    graph_break: str = ""  # Dynamo's reason for ending the graph here, when it was a break
    report: dict[str, Any] | None = None  # graphopt.optimize's report (target, steps, check...)

    def line(self) -> str:
        if self.status == "graphopt":
            return (f"{self.graph}: optimized by graphopt in {self.compile_s:.2f} s "
                    f"({self.nodes_before} -> {self.nodes_after} IR nodes)")
        return f"{self.graph}: runs eagerly: {self.reason}"


RECORDS: deque[GraphRecord] = deque(maxlen=256)


def graphopt_backend(gm: "torch.fx.GraphModule", example_inputs: Sequence[Any], *,
                     options: dict[str, Any] | None = None, mode: str | None = None
                     ) -> Callable[..., Any]:
    """The Dynamo backend: a callable running ``gm`` optimized by graphopt (see the module
    docstring). ``options``: ``target`` ("cpu", "a100", ...), ``quantize`` (a mode of
    ``graphopt.optimize``), ``budget`` (search seconds), ``cost``, ``allow_contrib_ops``,
    ``check``, the quantizer's ``group_size`` / ``method`` / ``max_error`` / ``activations``,
    ``runtime`` ("torch", the default: the optimized graph's torch callable; "onnxruntime": its
    ONNX export in an ONNX Runtime CPU session with torch's intra-op thread count, CPU tensors
    only) and ``fallback`` (default True: run eagerly, with a logged warning, what graphopt
    cannot compile; False: raise)."""
    if mode not in (None, "default"):
        raise GraphOptError(f"the graphopt backend takes no mode ({mode!r}); give options="
                            f"{{'target': ..., 'quantize': ...}} instead", where="torch.compile")
    opts = dict(options or {})
    unknown = sorted(set(opts) - set(OPTIMIZE_OPTIONS) - set(BACKEND_OPTIONS))
    if unknown:
        raise GraphOptError(f"unknown option(s) {unknown}; known: "
                            f"{sorted(OPTIMIZE_OPTIONS + BACKEND_OPTIONS)}", where="torch.compile")
    fallback = bool(opts.pop("fallback", True))
    runtime = str(opts.pop("runtime", "torch"))
    if runtime not in RUNTIMES:
        raise GraphOptError(f"unknown runtime {runtime!r}; one of {', '.join(RUNTIMES)}",
                            where="torch.compile")
    if "target" in opts:
        from .pipeline import check_target

        opts["target"] = check_target(opts["target"])
    compiled = CompiledGraph(gm, example_inputs, opts, fallback, _graph_break_reason(), runtime)
    if compiled.trivial:
        return gm.forward
    if compiled.concrete(example_inputs):
        compiled.entry_for(list(example_inputs))
    return compiled


def _graph_break_reason() -> str:
    """Why Dynamo ended the graph being compiled, when it ended at a graph break ("" when the
    function returned, or when Dynamo's translator, an internal API, is not readable: that is
    logged at debug level)."""
    try:
        from torch._dynamo.symbolic_convert import InstructionTranslator

        tx = InstructionTranslator.current_tx()
        why = getattr(tx.output, "compile_subgraph_reason", None) if tx is not None else None
    except Exception as e:  # noqa: BLE001 - an internal API: its absence is reported, not fatal
        log.debug("cannot read why Dynamo ended the graph (%s: %s)", type(e).__name__, e)
        return ""
    if why is None or not getattr(why, "graph_break", False):
        return ""
    return str(why.reason).strip().splitlines()[0]


@dataclass
class _Entry:
    """One specialization: the frozen state it was built with and what runs it."""

    state: list[Any]  # the frozen tensors (identity checked on each call)
    versions: list[int]  # their version counters when frozen
    run: Callable[..., Any]  # takes the captured graph's arguments, all of them


@dataclass
class _Slots:
    """The captured graph's inputs by role: indices of frozen state, of symbolic sizes, of
    user tensors, and of other non-tensor values (baked in like sizes)."""

    state: list[int] = field(default_factory=list)
    ints: list[int] = field(default_factory=list)
    tensors: list[int] = field(default_factory=list)


class CompiledGraph:
    """The callable ``graphopt_backend`` returns for one captured graph: runs the graphopt
    build for the call's specialization (built on first use), else the captured graph."""

    def __init__(self, gm: "torch.fx.GraphModule", example_inputs: Sequence[Any],
                 options: dict[str, Any], fallback: bool, graph_break: str,
                 runtime: str = "torch") -> None:
        import torch

        self.gm = gm
        self.runtime = runtime
        self.options = options
        self.fallback = fallback
        self.graph_break = graph_break
        self.records: list[GraphRecord] = []
        self._entries: dict[tuple[Any, ...], _Entry] = {}
        self.placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
        calls = [n for n in gm.graph.nodes if n.op not in ("placeholder", "output")]
        self.label = f"graph {_graph_number()} ({len(calls)} ops)"
        self.trivial = not calls
        self.slots = _Slots()
        for i, x in enumerate(example_inputs):
            if isinstance(x, torch.Tensor) and getattr(x, "_dynamo_static_input_type", None):
                self.slots.state.append(i)
            elif isinstance(x, torch.Tensor):
                self.slots.tensors.append(i)
            else:
                self.slots.ints.append(i)
        if graph_break:
            log.warning("%s ends at a graph break: %s; the code at the break runs eagerly in "
                        "Python, the graphs around it are compiled separately", self.label,
                        graph_break)

    @staticmethod
    def concrete(args: Sequence[Any]) -> bool:
        """True when no argument is symbolic (a SymInt of a dynamic graph at capture time)."""
        import torch

        return not any(isinstance(a, (torch.SymInt, torch.SymFloat, torch.SymBool))
                       for a in args)

    def __call__(self, *args: Any) -> Any:
        return self.entry_for(list(args)).run(*args)

    def _key(self, args: Sequence[Any]) -> tuple[Any, ...]:
        key: list[Any] = []
        for i in self.slots.tensors + self.slots.state:
            a = args[i]
            key.append((tuple(a.shape), a.dtype, a.device))
        key += [args[i] for i in self.slots.ints]
        return tuple(key)

    def entry_for(self, args: list[Any]) -> _Entry:
        """The specialization for ``args``: built when new or when the frozen state is not
        the same tensors at the same versions."""
        key = self._key(args)
        e = self._entries.get(key)
        if e is not None and all(args[i] is t and t._version == v
                                 for i, t, v in zip(self.slots.state, e.state, e.versions)):
            return e
        if e is not None:
            log.info("%s: module state changed (other parameters or an in-place update): "
                     "graphopt compiles it again", self.label)
        e = self._build(args)
        self._entries[key] = e
        return e

    def _build(self, args: list[Any]) -> _Entry:
        import torch

        state = [args[i] for i in self.slots.state]
        versions = [t._version for t in state]
        t0 = time.perf_counter()
        try:
            if torch.is_grad_enabled() and any(isinstance(a, torch.Tensor) and a.requires_grad
                                               for a in args):
                raise GraphOptError("grad mode is on and an input requires grad: graphopt "
                                    "compiles inference graphs (run under torch.no_grad() or "
                                    "torch.inference_mode())", where=self.label)
            module = frozen_module(self.gm, self.placeholders, self.slots, args)
            user = tuple(args[i] for i in self.slots.tensors)
            import graphopt

            om = graphopt.optimize(module, user, **self.options)
            run = om.torch_module() if self.runtime == "torch" else \
                ort_runner(om, self.gm, [args[i] for i in self.slots.tensors])
        except Exception as e:  # noqa: BLE001 - any failure falls back (logged) or is raised
            if not self.fallback:
                raise
            reason = e.one_line() if isinstance(e, GraphOptError) else \
                f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
            self._record(GraphRecord(self.label, "eager", reason, time.perf_counter() - t0,
                                     graph_break=self.graph_break))
            log.warning("%s: graphopt cannot compile it, it runs eagerly: %s", self.label, reason)
            return _Entry(state, versions, self.gm)
        rec = GraphRecord(self.label, "graphopt", "", time.perf_counter() - t0,
                          int(om.report["before"]["nodes"]), int(om.report["after"]["nodes"]),
                          self.graph_break, om.report)
        self._record(rec)
        log.info("%s", rec.line())
        tensors = self.slots.tensors
        return _Entry(state, versions, lambda *a: run(*(a[i] for i in tensors)))

    def _record(self, rec: GraphRecord) -> None:
        self.records.append(rec)
        RECORDS.append(rec)


def ort_runner(om: Any, gm: "torch.fx.GraphModule", user: Sequence[Any]) -> Callable[..., Any]:
    """A callable running ``om``'s ONNX export in ONNX Runtime (CPU, torch's intra-op thread
    count): CPU tensors in, a tuple of tensors out (Dynamo's graphs return flat tuples). The
    exported bytes are checked against the module first (``OptimizedModel.check_written``)."""
    import onnxruntime as ort
    import torch

    outs = next(n for n in gm.graph.nodes if n.op == "output").args[0]
    if not isinstance(outs, (tuple, list)) or len(outs) != len(om.graph.outputs):
        raise GraphOptError("the captured graph does not return a flat tuple of its outputs: "
                            "run it with runtime='torch'", where="runtime onnxruntime")
    if any(isinstance(x, torch.Tensor) and x.device.type != "cpu" for x in user):
        raise GraphOptError("ONNX Runtime runs here on CPU tensors only: run it with "
                            "runtime='torch'", where="runtime onnxruntime")
    from .frontends import onnx_export

    om.check_written()  # the optimize check ran the torch callable: check what ORT will run
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.intra_op_num_threads = torch.get_num_threads()
    sess = ort.InferenceSession(onnx_export.to_bytes(om.graph), so,
                                providers=["CPUExecutionProvider"])
    position = {n: i for i, n in enumerate(om.graph.input_names)}
    feeds = [(i.name, position[i.name]) for i in sess.get_inputs()]

    def run(*xs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        got = sess.run(None, {n: xs[i].detach().numpy() for n, i in feeds})
        return tuple(torch.from_numpy(y) for y in got)

    return run


_COUNTER = [0]


def _graph_number() -> int:
    _COUNTER[0] += 1
    return _COUNTER[0]


def frozen_module(gm: "torch.fx.GraphModule", placeholders: Sequence[Any], slots: _Slots,
                  args: Sequence[Any]) -> "torch.fx.GraphModule":
    """``gm`` as a module of its user tensors only: the frozen state becomes buffers read by
    ``get_attr`` (so ``torch.export`` sees parameters and buffers, which graphopt folds as
    constants), sizes and other non-tensor inputs their values in ``args``. The placeholders
    keep Dynamo's names without its ``l_`` prefix and trailing ``_`` (``l_input_ids_`` ->
    ``input_ids``), which become the IR graph's input names."""
    import torch

    roles = {i: "state" for i in slots.state} | {i: "int" for i in slots.ints}
    attrs: dict[str, Any] = {}
    graph = torch.fx.Graph()
    env: dict[Any, Any] = {}
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            i = placeholders.index(node)
            role = roles.get(i, "input")
            if role == "state":
                name = f"frozen_{len(attrs)}"
                attrs[name] = args[i].detach()
                env[node] = graph.get_attr(name)
            elif role == "int":
                env[node] = args[i]
            else:
                env[node] = graph.placeholder(_input_name(node.name))
            continue
        if node.op in ("get_attr", "call_module"):
            attrs[node.target] = _attr(gm, node.target)
        env[node] = graph.node_copy(node, lambda n: env[n])
    return torch.fx.GraphModule(attrs, graph, class_name="CapturedGraph")


def _input_name(name: str) -> str:
    if name.startswith("l_") and name.endswith("_") and len(name) > 3:
        return name[2:-1]
    return name


def _attr(root: Any, target: str) -> Any:
    for part in target.split("."):
        root = getattr(root, part)
    return root
