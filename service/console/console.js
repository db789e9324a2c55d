// braid's web console: plain JavaScript over the public HTTP API (no framework, no CDN, no build step).
"use strict";

const $ = (id) => document.getElementById(id);
const state = { pipelines: [], collection: null, defaultPipeline: "" };

// ---- API -------------------------------------------------------------------------------------------------------

async function api(path, body) {
  const headers = { "content-type": "application/json" };
  const key = $("api-key").value.trim();
  if (key) headers.authorization = `Bearer ${key}`;
  let response;
  try {
    response = await fetch(path, body === undefined ? { headers } : { method: "POST", headers, body: JSON.stringify(body) });
  } catch (error) {
    throw new Error(`the server did not answer (${error.message}); is braid serve running?`);
  }
  let payload = null;
  try {
    payload = await response.json();
  } catch (error) {
    payload = null;
  }
  if (!response.ok) {
    const detail = payload && payload.error ? `${payload.error.status}: ${payload.error.message}` : response.statusText;
    throw new Error(`${response.status} ${detail}`);
  }
  return payload;
}

function showError(error) {
  const box = $("error");
  box.textContent = error instanceof Error ? error.message : String(error);
  box.hidden = false;
}

function clearError() {
  $("error").hidden = true;
  $("error").textContent = "";
}

async function guarded(work) {
  clearError();
  try {
    await work();
  } catch (error) {
    showError(error);
  }
}

// ---- small DOM helpers ------------------------------------------------------------------------------------------

function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (name === "text") node.textContent = value;
    else if (name === "class") node.className = value;
    else node.setAttribute(name, value);
  }
  for (const child of children) node.append(child);
  return node;
}

const fmt = (value, digits = 4) => (value === null || value === undefined ? "–" : Number(value).toFixed(digits));
const escapeRegExp = (text) => text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");

function pipelineInfo(name) {
  return state.pipelines.find((p) => p.name === (name || state.defaultPipeline));
}

// ---- snippets with the query's terms highlighted -----------------------------------------------------------------

const STOPWORDS = new Set("a an and are as at be by for from how in is it of on or the to what when which who why with".split(" "));

function queryTerms(query) {
  return [...new Set(query.toLowerCase().match(/[\p{L}\p{N}]+/gu) || [])].filter((t) => t.length > 1 && !STOPWORDS.has(t));
}

// Words sharing a stem-like prefix with a query term match too (engines stem; "indexing" finds "indexes").
function termPattern(terms) {
  if (!terms.length) return null;
  const stems = terms.map((t) => escapeRegExp(t.length > 5 ? t.slice(0, t.length - 2) : t));
  return new RegExp(`\\b(${stems.join("|")})[\\p{L}\\p{N}]*`, "giu");
}

function snippet(text, terms, size = 320) {
  const pattern = termPattern(terms);
  let start = 0;
  if (pattern) {
    const first = text.search(pattern);
    if (first > size / 3) start = text.lastIndexOf(" ", first - size / 4) + 1;
  }
  let piece = text.slice(start, start + size);
  if (start > 0) piece = `… ${piece}`;
  if (start + size < text.length) piece = `${piece} …`;
  const node = el("p", { class: "snippet" });
  if (!pattern) {
    node.textContent = piece;
    return node;
  }
  let last = 0;
  for (const match of piece.matchAll(pattern)) {
    node.append(piece.slice(last, match.index), el("mark", { text: match[0] }));
    last = match.index + match[0].length;
  }
  node.append(piece.slice(last));
  return node;
}

// ---- search --------------------------------------------------------------------------------------------------------

function searchBody(query, pipeline, k, rerank, filterText) {
  const body = { query, pipeline, k, explain: true };
  const info = pipelineInfo(pipeline);
  if (info && info.rerank && !rerank) body.rerank_depth = 0;
  if (filterText && filterText.trim()) {
    try {
      body.filter = JSON.parse(filterText);
    } catch (error) {
      throw new Error(`the filter is not JSON: ${error.message}`);
    }
  }
  return body;
}

async function documentsOf(pipeline, hits) {
  if (!hits.length) return {};
  const answer = await api("/v1/documents/get", { pipeline, ids: [...new Set(hits.map((h) => h.doc_id))] });
  return Object.fromEntries(answer.documents.map((d) => [d.id, d]));
}

function contributionScale(hits) {
  let scale = 0;
  for (const hit of hits) {
    for (const source of Object.values((hit.explanation || {}).retrievers || {})) {
      if (source.contribution !== null && source.contribution !== undefined) scale = Math.max(scale, Math.abs(source.contribution));
    }
  }
  return scale || 1;
}

function explanationNode(hit, scale) {
  const table = el("table", { class: "explain" });
  const explanation = hit.explanation || { retrievers: {}, stages: {} };
  for (const [name, source] of Object.entries(explanation.retrievers)) {
    const contribution = source.contribution;
    const bar = el("div", { class: "bar-track" });
    if (contribution !== null && contribution !== undefined) {
      const width = (50 * Math.abs(contribution)) / scale;
      const fill = el("div", { class: contribution >= 0 ? "bar-fill positive" : "bar-fill negative" });
      fill.style.width = `${width}%`;
      fill.style.left = contribution >= 0 ? "50%" : `${50 - width}%`;
      bar.append(fill);
    }
    const row = el(
      "tr",
      { class: "retriever", "data-retriever": name, "data-rank": source.rank ?? "", "data-contribution": contribution ?? "" },
      el("th", { text: name }),
      el("td", { class: "rank", text: source.rank ? `#${source.rank}` : "not retrieved" }),
      el("td", { class: "score", text: `score ${fmt(source.score)}` }),
      el("td", { class: "track" }, bar),
      el("td", { class: "contribution", text: contribution === null || contribution === undefined ? "" : `${contribution >= 0 ? "+" : ""}${fmt(contribution)}` }),
    );
    table.append(row);
  }
  const extra = [];
  if (explanation.fused_score !== null && explanation.fused_score !== undefined) extra.push(`fused ${fmt(explanation.fused_score)}`);
  for (const [stage, score] of Object.entries(explanation.stages || {})) extra.push(`${stage} ${fmt(score)}`);
  const wrapper = el("div", { class: "explanation" }, table);
  if (extra.length) wrapper.append(el("p", { class: "stages", text: extra.join(" · ") }));
  return wrapper;
}

function hitNode(hit, doc, terms, scale) {
  const title = doc && doc.title ? doc.title : hit.doc_id;
  const head = el(
    "div",
    { class: "hit-head" },
    el("span", { class: "rank", text: `${hit.rank}.` }),
    el("span", { class: "title", text: title }),
    el("code", { class: "doc-id", text: hit.doc_id }),
    el("span", { class: "score", text: fmt(hit.score) }),
  );
  const item = el("li", { class: "hit", "data-doc-id": hit.doc_id }, head);
  if (hit.passage) item.append(el("p", { class: "passage", text: `best passage: ${hit.passage}` }));
  if (doc) item.append(snippet(doc.text || doc.title || "", terms));
  if (hit.explanation) item.append(explanationNode(hit, scale));
  return item;
}

function waterfall(timings) {
  const box = $("search-waterfall");
  box.replaceChildren();
  const total = timings.total || Math.max(0, ...Object.values(timings));
  if (!total) return;
  const retrievers = Object.keys(timings).filter((k) => k.startsWith("retriever."));
  const parallel = Math.max(0, ...retrievers.map((k) => timings[k]));
  const rows = retrievers.map((k) => [k, 0, timings[k]]);  // first-stage retrievers run side by side
  let at = parallel;
  for (const key of Object.keys(timings)) {
    if (key === "fusion" || key.startsWith("cascade.") || key === "rerank") {
      rows.push([key, at, timings[key]]);
      at += timings[key];
    }
  }
  rows.push(["total", 0, total]);
  for (const [name, start, ms] of rows) {
    const span = el("div", { class: name === "total" ? "span total" : "span" });
    span.style.left = `${(100 * start) / total}%`;
    span.style.width = `${Math.max(0.5, (100 * ms) / total)}%`;
    box.append(
      el("div", { class: "stage", "data-stage": name }, el("span", { class: "label", text: name }), el("div", { class: "lane" }, span), el("span", { class: "ms", text: `${ms.toFixed(1)} ms` })),
    );
  }
}

async function runSearch() {
  const query = $("search-query").value;
  const pipeline = $("search-pipeline").value;
  const body = searchBody(query, pipeline, Number($("search-k").value) || 10, $("search-rerank").checked, $("search-filter").value);
  const answer = await api("/v1/search", body);
  // Hits show without their text where documents cannot be fetched (a Ray broker keeps none): say so, go on.
  const docs = await documentsOf(answer.pipeline, answer.hits).catch((error) => {
    showError(`titles and snippets unavailable: ${error.message}`);
    return {};
  });
  const terms = queryTerms(query);
  const scale = contributionScale(answer.hits);
  $("search-hits").replaceChildren(...answer.hits.map((hit) => hitNode(hit, docs[hit.doc_id], terms, scale)));
  $("search-summary").textContent = `${answer.hits.length} hit(s) from ${answer.pipeline} in ${fmt(answer.timings_ms.total, 1)} ms`;
  waterfall(answer.timings_ms);
}

// ---- compare -------------------------------------------------------------------------------------------------------

function compareColumn(hits, other, docs, label) {
  const ranks = new Map(other.map((h) => [h.doc_id, h.rank]));
  return hits.map((hit) => {
    const doc = docs[hit.doc_id];
    const before = ranks.get(hit.doc_id);
    let change = "new";
    let kind = "new";
    if (before !== undefined) {
      const moved = before - hit.rank;
      change = moved === 0 ? "=" : moved > 0 ? `↑${moved}` : `↓${-moved}`;
      kind = moved === 0 ? "same" : moved > 0 ? "up" : "down";
    }
    const title = doc && doc.title ? doc.title : hit.doc_id;
    return el(
      "li",
      { class: `hit ${kind}`, "data-doc-id": hit.doc_id, "data-change": change },
      el("span", { class: "rank", text: `${hit.rank}.` }),
      el("span", { class: "change", title: `rank in ${label}: ${before ?? "not in its top k"}`, text: change }),
      el("span", { class: "title", text: title }),
      el("code", { class: "doc-id", text: hit.doc_id }),
    );
  });
}

async function runCompare() {
  const query = $("compare-query").value;
  const k = Number($("compare-k").value) || 10;
  const [a, b] = [$("compare-a-pipeline").value, $("compare-b-pipeline").value];
  const [left, right] = await Promise.all([api("/v1/search", { query, pipeline: a, k }), api("/v1/search", { query, pipeline: b, k })]);
  const docs = await documentsOf(left.pipeline, [...left.hits, ...right.hits]).catch(() => ({}));
  $("compare-a-title").textContent = `A: ${left.pipeline}`;
  $("compare-b-title").textContent = `B: ${right.pipeline} (change against A)`;
  $("compare-a").replaceChildren(...compareColumn(left.hits, right.hits, docs, right.pipeline));
  $("compare-b").replaceChildren(...compareColumn(right.hits, left.hits, docs, left.pipeline));
  const shared = right.hits.filter((h) => left.hits.some((l) => l.doc_id === h.doc_id)).length;
  const moved = right.hits.filter((h) => {
    const l = left.hits.find((x) => x.doc_id === h.doc_id);
    return l && l.rank !== h.rank;
  }).length;
  $("compare-summary").textContent = `${shared} of ${right.hits.length} in both top ${k}; ${moved} moved; ${right.hits.length - shared} only in B`;
}

// ---- collection ----------------------------------------------------------------------------------------------------

function tableRows(table, header, rows) {
  table.replaceChildren(el("tr", {}, ...header.map((h) => el("th", { text: h }))), ...rows.map((row) => el("tr", {}, ...row.map((cell) => el("td", { text: String(cell) })))));
}

async function loadCollection() {
  const answer = await api("/v1/pipelines");
  const status = answer.collection || {};
  $("collection-name").textContent = status.name || "collection";
  const facts = [
    ["documents", status.documents],
    ["writes since the base", status.writes],
    ["last write", status.last_write_at || "none"],
    ["write segments", status.segments],
    ["pipelines", answer.pipelines.map((p) => `${p.name} (generation ${p.generation})`).join(", ")],
  ];
  const fields = answer.pipelines.length ? answer.pipelines[0].fields || {} : {};
  if (Object.keys(fields).length) facts.push(["fields", Object.entries(fields).map(([n, t]) => `${n} (${t})`).join(", ")]);
  $("collection-summary").replaceChildren(...facts.flatMap(([name, value]) => [el("dt", { text: name }), el("dd", { text: String(value ?? "–") })]));
  const rows = [];
  for (const pipeline of answer.pipelines) {
    for (const index of pipeline.indexes) rows.push([pipeline.name, index.kind, index.doc_count, `${(index.bytes / 1e6).toFixed(2)} MB`, index.created_at, index.path]);
  }
  tableRows($("collection-indexes"), ["pipeline", "index kind", "documents", "size", "built", "folder"], rows);
  const writes = (status.recent_writes || []).map((w) => [w.seq, w.upserted, w.deleted]);
  tableRows($("collection-writes"), ["write", "upserted", "deleted"], writes.length ? writes : [["none", "", ""]]);
}

async function openDocument() {
  const id = $("document-id").value.trim();
  const answer = await api("/v1/documents/get", { ids: [id] });
  const doc = answer.documents[0];
  const view = $("document-view");
  view.replaceChildren(el("h3", { text: doc.title || doc.id }), el("code", { text: doc.id }), el("p", { text: doc.text }));
  if (doc.metadata && Object.keys(doc.metadata).length) view.append(el("pre", { text: JSON.stringify(doc.metadata, null, 1) }));
}

// ---- evaluation ----------------------------------------------------------------------------------------------------

const METRICS = ["ndcg@10", "recall@100", "recall@1000", "mrr@10", "map"];
const evaluation = { runs: [] };

async function openEvaluations(files) {
  const runs = [];
  for (const file of files) {
    let run;
    try {
      run = JSON.parse(await file.text());
    } catch (error) {
      throw new Error(`${file.name} is not JSON: ${error.message}`);
    }
    if (!run || typeof run.pipeline !== "string" || typeof run.per_query !== "object") {
      throw new Error(`${file.name} is not a braid eval result (no "pipeline" and "per_query")`);
    }
    runs.push(run);
  }
  evaluation.runs = runs;
  const metrics = METRICS.filter((m) => runs.some((r) => typeof r[m] === "number"));
  const header = ["pipeline", "dataset / split", ...metrics, "q/s", "p50 ms"];
  const rows = runs.map((run, i) => {
    const cells = metrics.map((m) => {
      const p = (run.p_values || {})[m];
      const mark = i > 0 && p !== undefined ? ` (p = ${Number(p).toPrecision(2)}${p < 0.05 ? "*" : ""})` : "";
      return `${fmt(run[m])}${mark}`;
    });
    return [run.pipeline, `${run.dataset} / ${run.split}`, ...cells, run.queries_per_s ?? "–", run.latency_ms_p50 ?? "–"];
  });
  tableRows($("eval-metrics"), header, rows);
  for (const id of ["eval-a", "eval-b"]) $(id).replaceChildren(...runs.map((r, i) => el("option", { value: String(i), text: r.pipeline })));
  $("eval-b").value = String(Math.min(1, runs.length - 1));
  $("eval-metric").replaceChildren(...metrics.map((m) => el("option", { value: m, text: m })));
  drawWins();
  drawQualityLatency();
}

const SVG = "http://www.w3.org/2000/svg";
function svg(tag, attributes) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (name === "text") node.textContent = value;
    else node.setAttribute(name, value);
  }
  return node;
}

function drawWins() {
  const plot = $("eval-wins");
  plot.replaceChildren();
  const runs = evaluation.runs;
  if (runs.length < 2) {
    $("eval-wins-summary").textContent = "open two or more results to compare pipelines query by query";
    return;
  }
  const [a, b] = [runs[Number($("eval-a").value)], runs[Number($("eval-b").value)]];
  const metric = $("eval-metric").value;
  const left = (a.per_query || {})[metric] || {};
  const right = (b.per_query || {})[metric] || {};
  const diffs = Object.keys(left).filter((q) => q in right).map((q) => [q, right[q] - left[q]]).sort((x, y) => y[1] - x[1]);
  const wins = diffs.filter((d) => d[1] > 0).length;
  const losses = diffs.filter((d) => d[1] < 0).length;
  $("eval-wins-summary").textContent = `${b.pipeline} against ${a.pipeline} on ${metric}: ${wins} win(s), ${losses} loss(es), ${diffs.length - wins - losses} tie(s) over ${diffs.length} queries`;
  const width = Number(plot.getAttribute("width"));
  const height = Number(plot.getAttribute("height"));
  const middle = height / 2;
  const peak = Math.max(1e-9, ...diffs.map((d) => Math.abs(d[1])));
  const step = (width - 40) / Math.max(1, diffs.length);
  plot.append(svg("line", { x1: 30, x2: width - 10, y1: middle, y2: middle, class: "axis" }));
  diffs.forEach(([query, diff], i) => {
    const size = ((height / 2 - 10) * Math.abs(diff)) / peak;
    const bar = svg("rect", { x: 30 + i * step, y: diff >= 0 ? middle - size : middle, width: Math.max(1, step - 1), height: Math.max(diff === 0 ? 0 : 1, size), class: diff > 0 ? "win" : diff < 0 ? "loss" : "tie", "data-query": query });
    bar.append(svg("title", { text: `query ${query}: ${diff >= 0 ? "+" : ""}${diff.toFixed(4)}` }));
    plot.append(bar);
  });
  plot.append(svg("text", { x: 2, y: 14, text: `+${peak.toFixed(3)}` }), svg("text", { x: 2, y: height - 4, text: `-${peak.toFixed(3)}` }));
}

function drawQualityLatency() {
  const plot = $("eval-quality-latency");
  plot.replaceChildren();
  const metric = $("eval-metric").value || "ndcg@10";
  const points = evaluation.runs.filter((r) => typeof r.latency_ms_p50 === "number" && typeof r[metric] === "number");
  if (!points.length) {
    plot.append(svg("text", { x: 20, y: 30, text: "no latency in these results (braid eval --latency-sample 0 skips it)" }));
    return;
  }
  const width = Number(plot.getAttribute("width"));
  const height = Number(plot.getAttribute("height"));
  const xs = points.map((p) => Math.log10(Math.max(0.01, p.latency_ms_p50)));
  const ys = points.map((p) => p[metric]);
  const [x0, x1] = [Math.min(...xs) - 0.2, Math.max(...xs) + 0.2];
  const [y0, y1] = [Math.min(...ys) - 0.02, Math.max(...ys) + 0.02];
  const px = (x) => 50 + ((width - 160) * (x - x0)) / (x1 - x0);
  const py = (y) => height - 30 - ((height - 50) * (y - y0)) / (y1 - y0);
  plot.append(svg("line", { x1: 50, x2: width - 10, y1: height - 30, y2: height - 30, class: "axis" }), svg("line", { x1: 50, x2: 50, y1: 10, y2: height - 30, class: "axis" }));
  plot.append(svg("text", { x: width / 2 - 80, y: height - 6, text: "p50 latency, ms (log scale)" }), svg("text", { x: 4, y: 14, text: metric }));
  points.forEach((p, i) => {
    const [cx, cy] = [px(xs[i]), py(ys[i])];
    plot.append(svg("circle", { cx, cy, r: 5, class: "point", "data-pipeline": p.pipeline }));
    plot.append(svg("text", { x: cx + 8, y: cy + 4, text: `${p.pipeline} (${p[metric].toFixed(4)}, ${p.latency_ms_p50} ms)` }));
  });
}

// ---- start ---------------------------------------------------------------------------------------------------------

function showView() {
  const name = (location.hash || "#search").slice(1);
  for (const view of document.querySelectorAll(".view")) view.hidden = view.id !== `view-${name}`;
  for (const link of document.querySelectorAll("nav a")) link.classList.toggle("active", link.dataset.view === name);
  if (name === "collection") guarded(loadCollection);
}

function fillPickers() {
  for (const select of document.querySelectorAll(".pipeline-picker")) {
    select.replaceChildren(...state.pipelines.map((p) => el("option", { value: p.name, text: p.name })));
    select.value = state.defaultPipeline;
  }
  if (state.pipelines.length > 1) $("compare-b-pipeline").value = state.pipelines.find((p) => p.name !== state.defaultPipeline).name;
  $("search-collection").replaceChildren(el("option", { text: (state.collection || {}).name || "collection" }));
  pipelineChanged();
}

function pipelineChanged() {
  const info = pipelineInfo($("search-pipeline").value);
  const rerank = $("search-rerank");
  rerank.disabled = !(info && info.rerank);
  rerank.checked = Boolean(info && info.rerank);
  $("search-filter").hidden = !(info && Object.keys(info.fields || {}).length);
}

async function start() {
  $("api-key").value = sessionStorage.getItem("braid-api-key") || "";
  $("api-key").addEventListener("change", () => sessionStorage.setItem("braid-api-key", $("api-key").value));
  $("search-form").addEventListener("submit", (event) => {
    event.preventDefault();
    guarded(runSearch);
  });
  $("compare-form").addEventListener("submit", (event) => {
    event.preventDefault();
    guarded(runCompare);
  });
  $("document-form").addEventListener("submit", (event) => {
    event.preventDefault();
    guarded(openDocument);
  });
  $("search-pipeline").addEventListener("change", pipelineChanged);
  $("eval-files").addEventListener("change", () => guarded(() => openEvaluations([...$("eval-files").files])));
  for (const id of ["eval-a", "eval-b", "eval-metric"]) $(id).addEventListener("change", () => guarded(async () => { drawWins(); drawQualityLatency(); }));
  window.addEventListener("hashchange", showView);
  await guarded(async () => {
    const answer = await api("/v1/pipelines");
    state.pipelines = answer.pipelines;
    state.defaultPipeline = answer.default_pipeline;
    state.collection = answer.collection;
    fillPickers();
  });
  showView();
  document.body.dataset.ready = "true";
}

start();
