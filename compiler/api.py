"""The public API: ``optimize``, ``load``, ``save``, ``explain`` and ``OptimizedModel``."""
from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np

from .errors import GraphOptError
from .ir.graph import Graph
from .pipeline import Progress, Source, resolve_source, run


class OptimizedModel:
    """The result of ``optimize``.

    ``om(*inputs)`` runs the optimized graph: numpy arrays in -> numpy arrays out (ONNX Runtime on
    the exported model; the reference interpreter when the graph holds torch-only opaque nodes;
    one output is returned as is, several as a tuple), torch tensors in -> torch tensors out (the
    torch callable, shaped like the original module's output for torch sources; so is a call
    without inputs of a torch source). Inputs go by
    position or by graph input name.
    """

    def __init__(self, graph: Graph, report: dict[str, Any], source: Source,
                 original: Graph, kv: Any = None) -> None:
        self.graph = graph
        self.report = report
        self.source = source
        self.original = original
        self.kv = kv  # graphopt.kv.stage.KVResult when optimized with kv_cache
        self._session: Any = None
        self._torch: Any = None
        self._check_args: tuple[Any, float | None] | None = None  # (inputs, min SQNR dB)
        self._written_ok = False  # the check ran the bytes save writes

    @property
    def target(self) -> str:
        return str(self.report["target"])

    # ---- running -------------------------------------------------------------------------------
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        values = list(args) + list(kwargs.values())
        if any(_is_torch(x) for x in values) or (not values and self.source.kind == "torch"):
            return self._call_torch(args, kwargs)
        feeds = self._bind(args, kwargs)
        if self.uses_torch_only_nodes():
            from .check import run_graph

            outs = run_graph(self.graph, feeds, "numpy")
        else:
            sess = self._ort_session()
            outs = [np.asarray(x) for x in sess.run(None, feeds)]
        return outs[0] if len(outs) == 1 else tuple(outs)

    def _bind(self, args: Sequence[Any], kwargs: dict[str, Any]) -> dict[str, np.ndarray]:
        from .ir.interp import bind_inputs

        return {k: np.asarray(v) for k, v in bind_inputs(self.graph, args, kwargs).items()}

    def _call_torch(self, args: Sequence[Any], kwargs: dict[str, Any]) -> Any:
        import torch

        if self._torch is None:
            self._torch = self.torch_module()
        with torch.no_grad():
            return self._torch(*args, **kwargs)

    def uses_torch_only_nodes(self) -> bool:
        """True when some opaque node came from torch (no ONNX form to run it in ORT)."""
        return any(n.op == "opaque" and n.attrs.get("proto") is None for n in self.graph.nodes)

    def _ort_session(self) -> Any:
        if self._session is None:
            from .check import onnx_session
            from .frontends import onnx_export

            # the bytes the check ran and save writes, in the check's session
            self._session = onnx_session(onnx_export.to_bytes(self.graph))
        return self._session

    # ---- outputs ---------------------------------------------------------------------------------
    def onnx_model(self, opset: int | None = None) -> Any:
        """The optimized graph as an ``onnx.ModelProto``."""
        from .frontends import onnx_export

        return onnx_export.to_model(self.graph, opset=opset)

    def torch_module(self, kernels: bool | None = None, interpret: bool = False) -> Any:
        """The optimized graph as a torch ``nn.Module``. kernels: run fused regions as generated
        Triton kernels (graphopt.codegen); default: for a GPU target when CUDA is available, else
        torch ops. interpret: run the kernels in Triton's interpreter (CPU tensors; tests)."""
        from .frontends import torch_export

        if kernels is None:
            from graphopt.codegen.runtime import wants_kernels

            kernels = wants_kernels(self.target)
        if kernels or interpret:
            from graphopt.codegen.runtime import compile_graph

            return compile_graph(self.graph, self.target, interpret=interpret)
        return torch_export.to_callable(self.graph)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the optimized model as ONNX (atomically; external data when large). Optimized
        with kv_cache: ``path`` is a folder, written with the decoder-with-past ``model.onnx``
        (the checked decode model: the static-buffer one for cache="static", else the dynamic
        one), ``genai_config.json`` for onnxruntime-genai and ``graphopt_kv.json`` (the cache
        spec)."""
        if self.kv is None:
            self.check_written()
            save(self.graph, path)
            return
        import onnx

        from .kv.folder import write_folder

        data = self.kv.static_bytes if self.kv.options.cache == "static" else \
            self.kv.decode_bytes
        write_folder(onnx.load_from_string(data), self.kv.derivation.spec, path,
                     max_length=self.kv.derivation.spec.context_length)

    def check_written(self) -> None:
        """Check the ONNX bytes ``save`` writes against the original, when the optimizer's
        check ran something else (a torch module's check runs the torch callable; a Graph's,
        the reference interpreter): raises CheckError, so nothing unchecked is written. An
        ONNX model's check already ran those bytes; optimize(check=False) checks nothing."""
        if self._written_ok or self._check_args is None or self.source.kind == "onnx":
            return
        from .pipeline import check_written

        res = check_written(self.source, self.original, self.graph, *self._check_args)
        if res is not None:
            self.report["check_written"] = res.to_dict()
        self._written_ok = True

    # ---- generation (kv_cache) -------------------------------------------------------------------
    def generate(self, prompt_ids: Any, max_new_tokens: int = 32, attention_mask: Any = None,
                 progress: Any = None, backend: str | None = None) -> Any:
        """Greedy generation with the cached decoder: prompt + ``max_new_tokens`` new ids
        ([B, L + n], like transformers' ``generate``; torch in -> torch out). Prompts of
        different lengths (a list of lists) are left-padded. Needs ``kv_cache=True``.
        backend: "onnx" (ONNX Runtime on the checked decode model, the cache of
        ``kv_cache``'s ``cache``) or "torch" (the decode graph as a torch callable with a
        preallocated cache; generated Triton kernels on a GPU target with a GPU); default torch
        where kernels run, else onnx."""
        if self.kv is None:
            raise GraphOptError("generate needs a model optimized with kv_cache=True",
                                where="generate")
        if backend is None:
            from graphopt.codegen.runtime import wants_kernels

            backend = "torch" if wants_kernels(self.target) else "onnx"
        if backend == "torch":
            return self._generate_torch(prompt_ids, max_new_tokens, attention_mask, progress)
        if backend != "onnx":
            raise GraphOptError(f"unknown backend {backend!r}: onnx or torch", where="generate")
        from .kv.generate import generate

        as_torch = _is_torch(prompt_ids)
        ids = prompt_ids.detach().cpu().numpy() if as_torch else prompt_ids
        mask = attention_mask.detach().cpu().numpy() if _is_torch(attention_mask) \
            else attention_mask
        spec = self.kv.derivation.spec
        if self.kv.options.cache == "static":
            out = generate(self._kv_session("static"), spec, ids, mask, max_new_tokens,
                           cache="static", progress=progress)
        elif self.kv.options.cache == "window":
            out = generate(self._kv_session("ring"), spec, ids, mask, max_new_tokens,
                           cache="window", window=spec.window, progress=progress,
                           prefill_session=self._kv_session("decode"))
        else:
            out = generate(self._kv_session("decode"), spec, ids, mask, max_new_tokens,
                           progress=progress)
        if as_torch:
            import torch

            return torch.from_numpy(out)
        return out

    def _generate_torch(self, prompt_ids: Any, max_new_tokens: int, attention_mask: Any,
                        progress: Any) -> Any:
        from .kv.torch_generate import generate_torch

        out = generate_torch(self.decode_callable(), self.kv.derivation.spec, prompt_ids,
                             attention_mask, max_new_tokens, progress=progress)
        return out if _is_torch(prompt_ids) else out.cpu().numpy()

    def decode_callable(self, kernels: bool | None = None, interpret: bool = False) -> Any:
        """The decode graph (decoder with past, dynamic cache) as a torch callable: inputs by
        the contract's names, a dict of logits and presents out (``graphopt.kv.torch_path``)."""
        if self.kv is None:
            raise GraphOptError("decode_callable needs kv_cache=True", where="kv_cache")
        key = ("decode", kernels, interpret)
        cache = self.__dict__.setdefault("_kv_callables", {})
        if key not in cache:
            from .kv.torch_path import decode_callable

            cache[key] = decode_callable(self.kv.derivation, self.target, kernels, interpret)
        return cache[key]

    def prefill_callable(self, kernels: bool | None = None, interpret: bool = False) -> Any:
        """The prefill graph (the original's inputs -> logits and each layer's keys / values)
        as a torch callable."""
        if self.kv is None:
            raise GraphOptError("prefill_callable needs kv_cache=True", where="kv_cache")
        from .kv.torch_path import prefill_callable

        return prefill_callable(self.kv.derivation, self.target, kernels, interpret)

    def _kv_session(self, which: str) -> Any:
        cache = self.__dict__.setdefault("_kv_sessions", {})
        if which not in cache:
            import onnxruntime as ort

            so = ort.SessionOptions()  # ONNX Runtime's graph optimizations on: generation speed
            so.log_severity_level = 3
            data = {"decode": self.kv.decode_bytes, "ring": self.kv.ring_bytes,
                    "static": self.kv.static_bytes}[which]
            cache[which] = ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])
        return cache[which]

    def explain(self) -> str:
        return explain(self)

    def write_html(self, path: str | os.PathLike[str], latency: dict[str, Any] | None = None
                   ) -> None:
        """One self-contained HTML page of what changed: the graphs before and after (laid out
        by Graphviz's dot) with the changed regions linked to their rules, the op table, the
        check; ``latency``: label -> median ms (or a mapping, see
        ``graphopt.html_report.latency_rows``) for the bar chart (docs/html_report.md)."""
        from .html_report import write_html

        write_html(self.report, self.original, self.graph, path, latency=latency)

    def __repr__(self) -> str:
        b, a = self.report["before"]["nodes"], self.report["after"]["nodes"]
        return f"<OptimizedModel {self.source.label}: {b} -> {a} nodes, target {self.target}>"


def _is_torch(x: Any) -> bool:
    return type(x).__module__.startswith("torch") and hasattr(x, "detach")


def optimize(model: Any, example_inputs: Any = None, target: str = "cpu", *,
             passes: Sequence[Any] | None = None, check: bool = True, inputs: Any = None,
             progress: Progress | None = None, budget: Any = None,
             rules: Sequence[Any] | None = None, cost: str = "analytic",
             allow_contrib_ops: bool = False, quantize: Any = None, calibration: Any = None,
             group_size: int | None = None, method: str | None = None,
             max_error: float | None = None, activations: str | None = None,
             quantize_embeddings: bool | None = None, quantize_lm_head: bool | None = None,
             mixed_precision: bool | None = None, kv_cache: Any = False,
             cache: str | None = None, max_length: int | None = None,
             task: str | None = None, batch: int | None = None, seq: int | None = None,
             static: bool = False, fold_initializer_inputs: bool = False,
             search: str = "backtrack") -> OptimizedModel:
    """Optimize a model for ``target`` and check the result against the original.

    model: an ``nn.Module`` (with ``example_inputs``), an ``.onnx`` path, an ``onnx.ModelProto``
    or a graphopt ``Graph``. passes: None for the default pipeline, else a list of pass names
    ("cleanup", "canonicalize", "constant_fold", "cse", "remove_noops", "dead_code") or ``Pass``
    objects. check: run the numeric check (raises ``CheckError`` on a mismatch). inputs: inputs
    for the check (dict of arrays or an ``.npz`` path); generated when None.
    budget: the rewrite search's budget in seconds (default 10; 0 turns it off), counted as
    100 candidate graphs a second so the same input gives the same output on any machine (the
    wall clock is only a safety stop at 3x + 2 s, reported), or a
    ``graphopt.search.budget.Budget``. rules: extra rewrite Rules for the search (added to the
    generated and hand-written ones). cost: "analytic" (roofline, fusion-aware) or "measured"
    (ops profiled on this machine, cached on disk). search: "backtrack" (TASO's cost-ordered
    backtracking, the default) or "egraph" (equality saturation on egglog, extracted by the
    cost model; needs ``pip install 'graphopt[egraph]'``), see docs/cost_search.md.
    allow_contrib_ops: on target "cpu", lower
    attention to ONNX Runtime's com.microsoft ops where they are faster (the output then runs in
    ONNX Runtime only); default: portable ONNX. fold_initializer_inputs: an ONNX model's
    initializers that are also graph inputs (IR >= 4: values a caller may override) become
    constants the optimizer folds through; default: they stay inputs with their initializer as
    default, as ONNX Runtime treats them (the written model keeps them overridable).

    quantize: "int8" | "int8-weight" | "int4" | "nf4" | "smoothquant" | "llm-int8" (or a
    ``graphopt.quant.config.QuantConfig``), see docs/quantization.md. calibration: input
    batches the quantizer measures activations on (an ``.npz`` path, a dict of arrays, a list of
    dicts or tuples; None: generated inputs). group_size / method: int4 groups (default 128) and
    rtn | gptq | awq. max_error: the output SQNR budget in dB (default 30 for 8-bit modes, 20
    for 4-bit); a model that misses it raises CheckError naming its worst layers.
    activations: int8's run-time activation quantization, "auto" (default: per layer, per
    tensor unless per token is over 3 dB better on the calibration data), "per-tensor" or
    "per-token". quantize_embeddings (default True) / quantize_lm_head (default False).
    mixed_precision (default True): a model that misses its budget gets its costliest layers
    moved to finer forms until it fits (False: the miss is reported as is).

    kv_cache: derive the cached form of a decoder (inputs input_ids and attention_mask, output
    logits; docs/kv_cache.md): a decode graph over past keys / values, proven legal by the
    sequence-axis analysis and checked against the original; then ``om.generate(ids,
    max_new_tokens)`` generates greedily and ``om.save(DIR)`` writes a decoder-with-past folder
    for onnxruntime-genai. cache: "dynamic" (default) or "window" (rolling buffer of the
    model's sliding window). max_length: the longest prompt + generation (default 2048, at
    most the model's position table).

    A local ``transformers`` model folder (``config.json`` + weights, as ``save_pretrained``
    writes it) is built with transformers and exported (``graphopt.frontends.hf_folder``):
    task: causal-lm | masked-lm | seq2seq-lm | sequence-classification | ... (default: from
    the config's architectures); batch / seq: the example sizes (default 2 x 16); dynamic batch
    and sequence axes unless ``static``.
    """
    from .kv.stage import make_options

    from .search import MODES as SEARCH_MODES

    if search not in SEARCH_MODES:
        raise GraphOptError(f"search must be one of {', '.join(SEARCH_MODES)}, got {search!r}",
                            where="search")
    kv_opts = make_options(kv_cache, cache, max_length)
    qcfg = None
    if quantize is not None:
        from .quant.config import make_config

        qcfg = make_config(quantize, group_size=group_size, method=method, max_error=max_error,
                           activations=activations, embeddings=quantize_embeddings,
                           lm_head=quantize_lm_head, mixed_precision=mixed_precision)
    elif any(v is not None for v in (calibration, group_size, method, max_error, activations,
                                     quantize_embeddings, quantize_lm_head, mixed_precision)):
        raise GraphOptError("calibration / group_size / method / max_error / activations / "
                            "quantize_* / mixed_precision apply to quantization: pass "
                            "quantize=MODE too", where="quantize")
    model, example_inputs, label = _model_folder(model, example_inputs, task, batch, seq,
                                                 static)
    src = resolve_source(model, example_inputs)
    if label is not None:
        from dataclasses import replace

        src = replace(src, label=label)
    out = run(src, target, passes, check, inputs, progress, budget=budget, rules=rules,
              cost=cost, allow_contrib_ops=allow_contrib_ops, quantize=qcfg,
              calibration=calibration, kv_cache=kv_opts,
              fold_initializer_inputs=fold_initializer_inputs, search=search)
    om = OptimizedModel(out.graph, out.report, out.source, out.original, out.kv)
    if check:
        om._check_args = (inputs, qcfg.min_sqnr_db if qcfg is not None else None)
    return om


def _model_folder(model: Any, example_inputs: Any, task: str | None, batch: int | None,
                  seq: int | None, static: bool) -> tuple[Any, Any, str | None]:
    """A transformers model folder as (model, example inputs, label) for ``resolve_source``;
    anything else as it is (the folder options then are an error)."""
    from .frontends.hf_folder import is_model_folder, load_folder

    if isinstance(model, (str, os.PathLike)) and is_model_folder(model):
        path = os.fspath(model)
        m, ex = load_folder(path, task, 2 if batch is None else batch, 16 if seq is None
                            else seq, dynamic=not static)
        return m, ex, path
    if task is not None or batch is not None or seq is not None or static:
        raise GraphOptError("task / batch / seq / static apply to a transformers model folder "
                            "(a directory with config.json)", where="model")
    if isinstance(model, (str, os.PathLike)) and os.path.isdir(os.fspath(model)):
        raise GraphOptError("a directory without config.json: give an .onnx file or a "
                            "transformers model folder", where=os.fspath(model))
    return model, example_inputs, None


def load(model: Any, example_inputs: Any = None) -> Graph:
    """A model as an IR graph: an ``.onnx`` path or ``onnx.ModelProto``, a text-form file
    (``.ir``), an ``nn.Module`` with example inputs, or a Graph (returned as is)."""
    if isinstance(model, (str, os.PathLike)) and os.fspath(model).endswith((".ir", ".graphopt")):
        from .ir.text import parse

        with open(os.fspath(model)) as f:
            return parse(f.read())
    from .pipeline import lift

    return lift(resolve_source(model, example_inputs))


def save(obj: "Graph | OptimizedModel", path: str | os.PathLike[str]) -> None:
    """Write a graph (or an optimized model) as ONNX, atomically."""
    from .frontends import onnx_export

    g = obj.graph if isinstance(obj, OptimizedModel) else obj
    if not isinstance(g, Graph):
        raise GraphOptError(f"cannot save a {type(obj).__name__}: give a Graph or an "
                            f"OptimizedModel")
    onnx_export.save(g, os.fspath(path))


def explain(obj: Any) -> str:
    """What the optimizer did and could not do: rewrites by name, opaque nodes with reasons.
    Takes an OptimizedModel, its report, or a Graph (opaque nodes only)."""
    from .report import explain_text, opaque_nodes

    if isinstance(obj, OptimizedModel):
        return explain_text(obj.report)
    if isinstance(obj, dict) and "target" in obj:
        return explain_text(obj)
    if isinstance(obj, Graph):
        op = opaque_nodes(obj)
        if not op:
            return "opaque nodes: none"
        return "\n".join(["opaque nodes (the optimizer cannot see inside):"] +
                         [f"  {o['name']} ({o['op_type']}): {o['reason']}" for o in op])
    raise GraphOptError(f"cannot explain a {type(obj).__name__}")
