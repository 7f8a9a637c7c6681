"""The HTML report (graphopt.html_report): the page's structure, its provenance links (the fused
attention of a GPT-2 block linked to attention_flash), the diff of two ONNX files, the cut of big
graphs, and a real headless browser (Debian's chromium) rendering the graphs."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

import graphopt
from graphopt.errors import GraphOptError
from graphopt.html_report import compare, diff_html, write_html

GPT2 = Path(__file__).resolve().parents[1] / "examples" / "tiny_gpt2.onnx"
LATENCY = {"original": {"median_ms": 2.0, "min_ms": 1.8, "max_ms": 2.4},
           "optimized": {"median_ms": 1.0, "spread_ms": 0.1}}

pytestmark = pytest.mark.skipif(shutil.which("dot") is None,
                                reason="Graphviz's dot is not installed (apt-get install graphviz)")


class Page(HTMLParser):
    """Every element with its attributes and its enclosing elements, for structure checks."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.stack: list[tuple[str, dict[str, str]]] = []
        self.elements: list[tuple[str, dict[str, str], list[tuple[str, dict[str, str]]]]] = []
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        self.elements.append((tag, a, list(self.stack)))
        self.stack.append((tag, a))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, {k: v or "" for k, v in attrs}, list(self.stack)))

    def handle_endtag(self, tag: str) -> None:
        for i in range(len(self.stack) - 1, -1, -1):
            if self.stack[i][0] == tag:
                del self.stack[i:]
                return

    def ids(self) -> set[str]:
        return {a["id"] for _, a, _ in self.elements if "id" in a}

    def svg_nodes(self, graph_id: str) -> list[tuple[dict[str, str], list[Any]]]:
        """The <g class="node"> elements inside the div of one graph."""
        return [(a, st) for t, a, st in self.elements if t == "g" and a.get("class") == "node"
                and any(x.get("id") == graph_id for _, x in st)]


    def link(self, node_id: str) -> str:
        """Where the SVG node ``node_id`` links to (Graphviz puts the <a> inside the node's
        <g>): its href, '' when it has no link."""
        for t, a, st in self.elements:
            if t == "a" and any(x.get("id") == node_id for _, x in st):
                return a.get("xlink:href") or a.get("href") or ""
        return ""

    def links(self, node_ids: set[str]) -> set[str]:
        return {self.link(i) for i in node_ids}


@pytest.fixture(scope="module")
def gpt2_page(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path, str]:
    om = graphopt.optimize(str(GPT2))
    path = tmp_path_factory.mktemp("html") / "report.html"
    write_html(om.report, om.original, om.graph, path, latency=LATENCY)
    return om, path, path.read_text(encoding="utf-8")


def test_page_is_self_contained_and_links_resolve(gpt2_page: tuple[Any, Path, str]) -> None:
    om, path, text = gpt2_page
    page = Page(text)
    tags = {t for t, _, _ in page.elements}
    assert not tags & {"script", "link", "img", "iframe", "object", "embed"}
    # no network reference: the only URLs are the SVG / XLink namespace names
    urls = set(re.findall(r"https?://[^\s\"')]+", text))
    assert urls <= {"http://www.w3.org/2000/svg", "http://www.w3.org/1999/xlink"}, urls
    ids = page.ids()
    hrefs = [a.get("xlink:href") or a.get("href") for t, a, _ in page.elements if t == "a"]
    internal = [h for h in hrefs if h]
    assert internal and all(h.startswith("#") for h in internal)
    missing = sorted({h for h in internal if h[1:] not in ids})
    assert not missing, missing
    # both graphs drawn: one SVG box per non-constant node (+ the output ellipses)
    for gid, g in (("graph-before", om.original), ("graph-after", om.graph)):
        want = sum(1 for n in g.nodes if n.op != "constant") + len(g.outputs)
        assert len(page.svg_nodes(gid)) == want
    assert os.stat(path).st_mode & 0o044 == 0o044  # readable like any other written file


def test_op_table_and_check_follow_the_report(gpt2_page: tuple[Any, Path, str]) -> None:
    om, _, text = gpt2_page
    rows = dict(re.findall(r"<tr><td>([^<]+)</td><td class=n>(\d+)</td>", text))
    for op, k in om.report["before"]["ops"].items():
        assert rows[op] == str(k)
    assert "attention" in rows and rows["attention"] == "0"  # an op only the optimized graph has
    after_counts = dict(re.findall(r"<tr><td>([^<]+)</td><td class=n>\d+</td>"
                                   r"<td class=n>(\d+)</td>", text))
    assert after_counts["attention"] == str(om.report["after"]["ops"]["attention"])
    check = text.split("id=check-table>", 1)[1].split("</table>", 1)[0]
    out = om.report["check"]["outputs"][0]
    assert f"<td>{out['name']}</td>" in check and "<span class=ok>yes</span>" in check


def test_latency_chart_bars_scale_with_the_medians(gpt2_page: tuple[Any, Path, str]) -> None:
    _, _, text = gpt2_page
    chart = text.split("<svg id=latency-chart", 1)[1].split("</svg>", 1)[0]
    widths = [float(w) for w in re.findall(r'<rect class=bar [^>]*width="([\d.]+)"', chart)]
    assert len(widths) == 2 and widths[0] == pytest.approx(2 * widths[1], rel=1e-3)
    assert "2.00×" in text  # the optimized model's speed against the first (baseline) entry


def test_fused_attention_is_highlighted_and_linked_to_its_fusion(
        gpt2_page: tuple[Any, Path, str]) -> None:
    om, _, text = gpt2_page
    page = Page(text)
    attn = [n for n in om.graph.nodes if n.op == "attention"]
    assert len(attn) == 2  # tiny GPT-2 has two blocks
    sections = {a["id"]: a for t, a, _ in page.elements if t == "section"}
    for n in attn:
        assert len([a for a, _ in page.svg_nodes("graph-after") if a["id"] == f"a-{n.uid}"]) == 1
        target = page.link(f"a-{n.uid}")
        assert target == "#rule-attention_flash-attention"
        assert target[1:] in sections
    assert any(i.startswith("a-region-") for i in page.ids())  # regions are framed
    section = text.split('id="rule-attention_flash-attention">', 1)[1].split("</section>")[0]
    assert "attention_flash" in section and "fusion" in section
    assert "passes/rules/attention_flash.rules" in section
    # the original's softmaxes (fused away) point at the same rule
    soft = [n for n in om.original.nodes if n.op == "softmax"]
    assert page.links({f"b-{n.uid}" for n in soft}) == {"#rule-attention_flash-attention"}
    # GELU compositions likewise, to gelu_fusion; an unchanged layer_norm is not highlighted
    gelu = [n for n in om.graph.nodes if n.op == "gelu"]
    assert page.links({f"a-{n.uid}" for n in gelu}) == {"#rule-gelu_fusion-gelu"}
    ln = next(n for n in om.graph.nodes if n.op == "layer_norm")
    assert page.link(f"a-{ln.uid}") == ""


def test_regions_pair_removed_and_new_nodes(gpt2_page: tuple[Any, Path, str]) -> None:
    om = gpt2_page[0]
    ch = compare(om.original, om.graph)
    attn = [r for r in ch.regions if any(n.op == "attention" for n in r.after)]
    assert len(attn) == 2
    for r in attn:
        assert {"softmax", "matmul"} <= {n.op for n in r.before}
    kept = [n for n, s in ch.after_status.items() if s == "kept"]
    assert any(n.op == "layer_norm" for n in kept)
    assert all(ch.before_status[n] == "removed" for r in ch.regions for n in r.before)


def test_big_graphs_show_the_changed_regions_and_say_so(gpt2_page: tuple[Any, Path, str],
                                                       tmp_path: Path) -> None:
    om = gpt2_page[0]
    path = tmp_path / "cut.html"
    # each attention region holds the search's head layout too (split_heads), so 50 nodes
    write_html(om.report, om.original, om.graph, path, limit=50)
    page = Page(path.read_text(encoding="utf-8"))
    notes = [a for t, a, st in page.elements if t == "p" and a.get("class") == "note"]
    assert len(notes) == 2  # both graphs are cut
    text = path.read_text(encoding="utf-8")
    assert re.search(r"\d+ nodes \(more than 50 would not be readable\): showing \d+, \d+ of "
                     r"the \d+ changed regions \(fusions first\)", text)
    before = {a["id"] for a, _ in page.svg_nodes("graph-before")}
    assert 0 < len(before) <= 50 + len(om.original.outputs)
    # the fusions come first: the attention blocks' softmaxes are drawn, a lone cast is not
    soft = {f"b-{n.uid}" for n in om.original.nodes if n.op == "softmax"}
    assert len(soft) == 2 and soft <= before
    casts = {f"b-{n.uid}" for n in om.original.nodes if n.op == "cast"}
    assert casts - before
    # a limit below the first region's size: that region's first nodes, and the page says so
    write_html(om.report, om.original, om.graph, path, limit=5)
    text = path.read_text(encoding="utf-8")
    assert re.search(r"showing the first 5 nodes of changed region R\d+", text)
    assert len(Page(text).svg_nodes("graph-before")) <= 5 + len(om.original.outputs)


def test_diff_of_two_onnx_files_marks_each_side(gpt2_page: tuple[Any, Path, str],
                                                tmp_path: Path) -> None:
    om = gpt2_page[0]
    b_path = tmp_path / "opt.onnx"
    om.save(b_path)
    out = tmp_path / "diff.html"
    d = diff_html(GPT2, b_path, out)
    summary = d.text()
    assert "| attention " in summary and "before: tiny_gpt2.onnx, after: opt.onnx" in summary
    only_b = sum(1 for s in d.changes.after_status.values() if s == "changed")
    assert 0 < only_b < len(d.changes.after_status) / 2
    assert f"only after (new or rewritten), in {len(d.changes.regions)} regions" in summary
    text = out.read_text(encoding="utf-8")
    page = Page(text)
    assert "tiny_gpt2.onnx" in text and "opt.onnx" in text
    # the optimized file's attention nodes (boxes whose first line is the op) are marked new
    attn = re.findall(r'<g id="(a&#45;\d+)" class="node">\s*<title>[^<]*</title>\s*<g [^>]*>'
                      r'<a [^>]*>\s*<path [^>]*/>\s*<text [^>]*>attention</text>', text)
    assert len(attn) == 2
    assert all(page.link(i.replace("&#45;", "-")).startswith("#region-") for i in attn)
    before = {a["id"] for a, _ in page.svg_nodes("graph-before")}
    assert any(page.link(i).startswith("#region-") for i in before)  # the softmaxes, ...
    assert "No rule records" in text
    assert "id=check-table" not in text  # a diff has no check to show


def test_bad_latency_and_missing_dot_are_clear_errors(
        gpt2_page: tuple[Any, Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    om = gpt2_page[0]
    with pytest.raises(GraphOptError, match="median_ms"):
        write_html(om.report, om.original, om.graph, tmp_path / "x.html",
                   latency={"original": {"mean": 3.0}})
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(GraphOptError, match="apt-get install graphviz"):
        write_html(om.report, om.original, om.graph, tmp_path / "y.html")
    assert not list(tmp_path.iterdir())  # nothing half-written


# What the browser reports after layout: for each graph, how many of its SVG nodes have a
# non-empty box, and the chart's first bar width. Injected into a copy of the page (the page
# itself has no script).
PROBE = """<script>
window.addEventListener('load', () => {
  const out = {};
  for (const id of ['graph-before', 'graph-after']) {
    const nodes = document.querySelectorAll('#' + id + ' svg g.node');
    let drawn = 0;
    for (const g of nodes) { const b = g.getBBox(); if (b.width > 1 && b.height > 1) drawn++; }
    out[id] = {nodes: nodes.length, drawn: drawn};
  }
  const bar = document.querySelector('#latency-chart rect.bar');
  out.bar = bar ? bar.getBoundingClientRect().width : -1;
  document.body.setAttribute('data-probe', JSON.stringify(out));
});
</script>"""


def test_headless_browser_renders_the_graphs(gpt2_page: tuple[Any, Path, str],
                                             tmp_path: Path) -> None:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("chromium is not installed (Debian: apt-get install chromium)")
    om, _, text = gpt2_page
    probe = tmp_path / "probe.html"
    probe.write_text(text.replace("</body>", PROBE + "</body>"), encoding="utf-8")
    res = subprocess.run([exe, "--headless=new", "--no-sandbox", "--disable-gpu",
                          "--disable-dev-shm-usage", "--user-data-dir=" + str(tmp_path / "prof"),
                          "--window-size=1400,1000", "--virtual-time-budget=5000",
                          "--dump-dom", probe.as_uri()],
                         capture_output=True, text=True, timeout=120)
    m = re.search(r'data-probe="([^"]*)"', res.stdout)
    assert m, f"no probe result from chromium (rc {res.returncode}): {res.stderr[-2000:]}"
    got = json.loads(m.group(1).replace("&quot;", '"'))
    for gid, g in (("graph-before", om.original), ("graph-after", om.graph)):
        want = sum(1 for n in g.nodes if n.op != "constant") + len(g.outputs)
        assert got[gid] == {"nodes": want, "drawn": want}, got
    assert got["bar"] > 10


def test_graphs_without_origins_are_matched_by_structure_and_search_rules_named(
        tmp_path: Path) -> None:
    from bench.taso_models import TINY

    g = TINY["nasrnn"]()  # built in code: no node has an origin
    assert all(n.origin is None for n in g.nodes)
    om = graphopt.optimize(g, target="cpu", budget=5, passes=["default"], check=False)
    applied = om.report["search"]["rules_applied"]
    assert applied
    ch = compare(om.original, om.graph)
    changed = [n for n, s in ch.after_status.items() if s == "changed"]
    # only what the search rewrote (and what reads it) differs; the rest is matched
    assert 0 < len(changed) < len(ch.after_status) / 2
    assert any(n.op == "concat" for n in changed)
    path = tmp_path / "search.html"
    write_html(om.report, om.original, om.graph, path)
    page = Page(path.read_text(encoding="utf-8"))
    anchors = {f"#rule-search-{name}" for name in applied}
    concat = {f"a-{n.uid}" for n in changed if n.op == "concat"}
    assert page.links(concat) <= anchors
    assert {a[1:] for a in anchors} <= page.ids()


def test_quantized_layers_link_to_the_quantize_pass(tmp_path: Path) -> None:
    om = graphopt.optimize(str(GPT2), quantize="int8-weight", check=False, budget=0)
    path = tmp_path / "q.html"
    write_html(om.report, om.original, om.graph, path)
    page = Page(path.read_text(encoding="utf-8"))
    deq = {f"a-{n.uid}" for n in om.graph.nodes if n.op == "dequantize_linear"}
    assert deq and page.links(deq) == {"#rule-quantize-quantizable_layer"}
    assert "rule-quantize-quantizable_layer" in page.ids()
