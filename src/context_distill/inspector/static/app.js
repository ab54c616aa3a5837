// The inspector page: reads the JSON API, draws with the DOM and SVG. No dependencies.
// Every text from the archive goes in through textContent, never as HTML.
"use strict";

const state = { thread: null, ref: null, offset: 0, nextOffset: null };
const SVG = "http://www.w3.org/2000/svg";

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

function svg(tag, attrs) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
  return node;
}

async function api(name, params) {
  const query = new URLSearchParams(params || {}).toString();
  const response = await fetch(`/api/${name}${query ? "?" + query : ""}`);
  const body = await response.json();
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

const fmt = (n) => Number(n).toLocaleString("en-US");

function refLink(ref) {
  return el("a", { class: "ref", href: `#ref-${ref}`, "data-ref": ref,
    onclick: (event) => { event.preventDefault(); openOriginal(ref, 0); } }, `#${ref}`);
}

function refsLabel(refs) {
  // [3,4,5,9] -> links #3 #4 #5 #9, shown compactly as ranges where long
  const frag = document.createDocumentFragment();
  for (const ref of refs) frag.append(refLink(ref));
  return frag;
}

async function loadThreads() {
  const info = await api("info");
  document.getElementById("db").textContent = `${info.title} · read-only`;
  const rows = await api("threads");
  const list = document.getElementById("threads");
  list.replaceChildren();
  for (const row of rows) {
    list.append(el("li", { "data-thread": row.thread_id, onclick: () => selectThread(row.thread_id) },
      el("b", {}, row.thread_id),
      el("small", {}, `${fmt(row.messages)} messages · ${fmt(row.facts)} facts`),
      el("small", {}, `${fmt(row.tokens_saved)} tokens saved`)));
  }
  return rows;
}

function card(value, label) {
  return el("div", { class: "card" }, el("b", {}, value), el("span", {}, label));
}

async function selectThread(thread, ref) {
  state.thread = thread;
  for (const li of document.querySelectorAll("#threads li")) {
    li.classList.toggle("active", li.dataset.thread === thread);
  }
  document.getElementById("thread-title").textContent = `Thread ${thread}`;
  const [timeline, chart, facts, memory] = await Promise.all([
    api("timeline", { thread }), api("chart", { thread }), api("facts", { thread }),
    api("memory", { thread })]);
  const s = timeline.stats;
  document.getElementById("stats").replaceChildren(
    card(fmt(s.messages_archived), "messages archived"),
    card(fmt(s.messages_distilled), "distilled"),
    card(fmt(s.facts), "facts"),
    card(fmt(s.distillations), "distillations"),
    card(fmt(s.failures), "failed"),
    card(fmt(s.tokens_saved), "tokens saved"));
  drawChart(chart);
  drawFacts(facts);
  drawMemory(memory);
  drawTimeline(timeline);
  drawLog(timeline.distillations);
  const first = ref || (facts.length && facts[0].refs.length ? facts[0].refs[0] : null);
  if (first) await openOriginal(first, 0);
}

function drawChart(chart) {
  const box = document.getElementById("chart");
  box.replaceChildren();
  const turns = chart.turns;
  const note = document.getElementById("chart-note");
  if (!turns.length) { note.textContent = "No archived messages yet."; return; }
  const width = box.clientWidth || 900, height = 240, left = 58, right = 16, top = 12, bottom = 28;
  box.setAttribute("viewBox", `0 0 ${width} ${height}`);
  const maxY = Math.max(...turns.map((t) => t.without), chart.budget || 0, 1) * 1.05;
  const x = (i) => left + (turns.length < 2 ? 0 : (i * (width - left - right)) / (turns.length - 1));
  const y = (v) => top + (height - top - bottom) * (1 - v / maxY);
  box.append(svg("line", { class: "axis", x1: left, y1: y(0), x2: width - right, y2: y(0) }));
  box.append(svg("line", { class: "axis", x1: left, y1: top, x2: left, y2: y(0) }));
  for (let k = 0; k <= 4; k++) {
    const value = (maxY / 1.05) * (k / 4);
    const label = svg("text", { x: left - 6, y: y(value) + 4, "text-anchor": "end" });
    label.textContent = value >= 1000 ? `${Math.round(value / 1000)}k` : String(Math.round(value));
    box.append(label);
  }
  const xl = svg("text", { x: width - right, y: height - 6, "text-anchor": "end" });
  xl.textContent = `model call (${turns.length})`;
  box.append(xl);
  const line = (key, cls) => svg("polyline", { class: cls, "data-series": key,
    points: turns.map((t, i) => `${x(i).toFixed(1)},${y(t[key]).toFixed(1)}`).join(" ") });
  box.append(line("without", "without"), line("with", "with"));
  if (chart.budget) {
    box.append(svg("line", { class: "budget", id: "budget-line", x1: left, x2: width - right,
      y1: y(chart.budget), y2: y(chart.budget) }));
    const label = svg("text", { x: width - right - 4, y: y(chart.budget) - 4, "text-anchor": "end" });
    label.textContent = `budget ${chart.budget_inferred ? "≤ " : ""}${fmt(chart.budget)}`;
    box.append(label);
  }
  for (const event of chart.events) {
    const t = turns[event.turn];
    box.append(svg("circle", { class: "event", cx: x(event.turn), cy: y(t.with), r: 2.6 }));
  }
  const legend = [["without", "without distillation"], ["with", "with context-distill"]];
  legend.forEach(([cls, text], i) => {
    box.append(svg("line", { class: cls, x1: left + 12 + i * 190, x2: left + 34 + i * 190, y1: top + 8, y2: top + 8 }));
    const label = svg("text", { x: left + 40 + i * 190, y: top + 12 });
    label.textContent = text;
    box.append(label);
  });
  const last = turns[turns.length - 1];
  note.textContent = `${fmt(turns.length)} model calls; at the last one ${fmt(last.without)} tokens ` +
    `without distillation, ${fmt(last.with)} with. Dots: distillations.` +
    (chart.budget_inferred ? " Budget inferred from the log (pass --budget to draw it exactly)." : "") +
    (chart.complete ? "" : " Pinned messages and turns not yet archived are not counted.");
}

function drawFacts(facts) {
  const list = document.getElementById("facts");
  list.replaceChildren();
  for (const fact of facts) {
    list.append(el("li", { "data-fact": fact.id }, refsLabel(fact.refs), fact.text));
  }
  if (!facts.length) list.append(el("li", { class: "muted" }, "No facts yet: nothing distilled."));
}

function drawMemory(memory) {
  document.getElementById("memory").textContent = memory.text || "(no memory block yet)";
  document.getElementById("memory-counts").textContent =
    `${fmt(memory.shown.length)} shown whole, ${fmt(memory.shown_in_part.length)} in part, ` +
    `${fmt(memory.left_out.length)} left out · ${fmt(memory.tokens)} tokens`;
  const list = document.getElementById("left-out");
  list.replaceChildren(...memory.left_out.map((line) => el("li", {}, line)));
}

function drawTimeline(timeline) {
  const list = document.getElementById("timeline");
  list.replaceChildren();
  const byId = new Map(timeline.distillations.map((d) => [d.id, d]));
  let last = null;
  for (const m of timeline.messages) {
    if (m.distillation_id !== null && m.distillation_id !== last && byId.has(m.distillation_id)) {
      const d = byId.get(m.distillation_id);
      list.append(el("li", { class: "distillation" },
        `distillation #${d.id}: ${d.messages} messages → ${d.facts} facts (${fmt(d.source_tokens)} → ${fmt(d.fact_tokens)} tokens)`));
    }
    last = m.distillation_id;
    list.append(el("li", {}, refLink(m.ref), el("span", { class: `badge ${m.state}` }, m.state),
      `${m.role} · ${fmt(m.tokens)} tokens · `, m.preview.replace(/\s+/g, " ").slice(0, 110)));
  }
  for (const d of timeline.distillations.filter((d) => d.outcome !== "ok" && d.outcome !== "reduced")) {
    list.append(el("li", { class: "distillation failed" }, `distillation #${d.id} ${d.outcome}: ${d.error || ""}`));
  }
}

function drawLog(log) {
  const body = document.querySelector("#log tbody");
  body.replaceChildren();
  for (const d of log) {
    const failed = d.outcome !== "ok" && d.outcome !== "reduced";
    body.append(el("tr", { class: failed ? "failed" : "" },
      el("td", {}, d.id), el("td", {}, d.outcome), el("td", {}, d.distiller), el("td", {}, d.messages),
      el("td", {}, d.facts), el("td", {}, `${fmt(d.source_tokens)} → ${fmt(d.fact_tokens)}`),
      el("td", {}, `${fmt(d.tokens_before)} → ${fmt(d.tokens_after)}`),
      el("td", {}, (d.details && d.details.grounding_dropped) || 0),
      el("td", {}, (d.duration_s * 1000).toFixed(1)), el("td", {}, d.error || "")));
  }
}

async function openOriginal(ref, offset) {
  const box = document.getElementById("original");
  try {
    const m = await api("message", { thread: state.thread, ref, offset });
    state.ref = ref; state.nextOffset = m.next_offset;
    document.getElementById("original-title").textContent =
      `#${m.ref} · ${m.role}${m.name ? " " + m.name : ""} · id ${m.message_id} · ${fmt(m.chars)} characters` +
      (m.offset ? ` · from ${fmt(m.offset)}` : "");
    box.textContent = m.text;
    box.dataset.ref = m.ref;
    document.getElementById("original-more").hidden = m.next_offset === null;
    for (const a of document.querySelectorAll("a.ref")) a.classList.toggle("selected", a.dataset.ref === String(ref));
  } catch (error) {
    box.textContent = String(error.message || error);
  }
}

function highlighted(snippet) {
  const node = el("div", { class: "snippet" });
  let cursor = 0;
  if (snippet.cut_before) node.append("…");
  for (const [start, end] of snippet.matches) {
    node.append(snippet.text.slice(cursor, start), el("mark", {}, snippet.text.slice(start, end)));
    cursor = end;
  }
  node.append(snippet.text.slice(cursor));
  if (snippet.cut_after) node.append("…");
  return node;
}

async function runSearch(query) {
  const panel = document.getElementById("search-panel");
  const list = document.getElementById("search-results");
  if (!query) { panel.hidden = true; return; }
  const hits = await api("search", { q: query, thread: state.thread || "" });
  panel.hidden = false;
  document.getElementById("search-count").textContent = `${hits.length} for “${query}”`;
  list.replaceChildren();
  for (const hit of hits) {
    const head = hit.kind === "message"
      ? el("div", {}, refLink(hit.ref), `${hit.role} · ${hit.state} · ${fmt(hit.chars)} characters`)
      : el("div", {}, el("b", {}, "fact "), `from ${hit.source_ids.join(", ")}`);
    const item = el("li", {}, head);
    for (const snippet of hit.snippets) item.append(highlighted(snippet));
    list.append(item);
  }
}

document.getElementById("search-form").addEventListener("submit", (event) => {
  event.preventDefault();
  runSearch(document.getElementById("q").value.trim());
});
document.getElementById("original-more").addEventListener("click", () => {
  if (state.nextOffset !== null) openOriginal(state.ref, state.nextOffset);
});

(async function start() {
  const params = new URLSearchParams(location.search);
  const rows = await loadThreads();
  const wanted = params.get("thread");
  const thread = rows.some((r) => r.thread_id === wanted) ? wanted : rows.length ? rows[0].thread_id : null;
  if (thread) await selectThread(thread, params.get("ref") ? Number(params.get("ref")) : null);
  if (params.get("q")) { document.getElementById("q").value = params.get("q"); await runSearch(params.get("q")); }
  document.body.dataset.ready = "true";
})().catch((error) => {
  document.body.dataset.ready = "error";
  document.body.prepend(el("p", { class: "error" }, `The inspector could not load: ${error.message || error}`));
});
