// The service's page: texts in, one card per text out (action, language, 18 bars against their
// thresholds). Every text from a person or the server is set with textContent, never as HTML.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  let info = null; // GET /v1/model: thresholds, categories, limits of the model that answered last

  function el(tag, cls, text) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function fillSelect(select, values) {
    if (select.options.length || !Array.isArray(values)) return;
    for (const value of values) {
      const option = el("option", "", value);
      option.value = value;
      select.append(option);
    }
  }

  function modelLine(m) {
    return `${m.name} version ${m.version ?? "–"}${m.alias ? " (@" + m.alias + ")" : ""}, ${m.variant}`;
  }

  async function loadInfo() {
    const response = await fetch("/v1/model", { headers: { Accept: "application/json" } });
    const body = await response.json();
    fillSelect($("audience"), body.audiences);
    fillSelect($("surface"), body.surfaces);
    info = response.ok ? body : null;
    $("model").textContent = response.ok ? "model: " + modelLine(body.model) : "no model: " + body.detail;
    return info;
  }

  function setState(state, message) {
    $("results").dataset.state = state;
    $("status").textContent = message;
    $("status").className = state === "error" ? "error" : "";
  }

  function textsFromForm() {
    const value = $("texts").value;
    if (!$("per-line").checked) return value.trim() ? [value] : [];
    return value.split(/\r?\n/).filter((line) => line.trim() !== "");
  }

  function bar(name, score, threshold, flagged) {
    const row = el("li", flagged ? "bar flagged" : "bar");
    row.append(el("span", "name", name));
    const track = el("span", "track");
    const fill = el("span", "fill");
    fill.style.width = `${Math.min(100, Math.max(0, score * 100)).toFixed(1)}%`;
    const mark = el("span", "mark");
    mark.style.left = `${Math.min(100, Math.max(0, threshold * 100)).toFixed(1)}%`;
    mark.title = `threshold ${threshold.toFixed(3)}`;
    track.append(fill, mark);
    row.append(track, el("span", "value", `${score.toFixed(3)} / ${threshold.toFixed(3)}`));
    return row;
  }

  function card(text, result, model) {
    const article = el("article", `result action-${result.action}`);
    const head = el("div", "head");
    head.append(el("span", "action", result.action), el("p", "text", text));
    article.append(head);
    const lang = result.language;
    const flags = result.flags.map((f) => f.category).join(", ") || "none";
    const meta = el("p", "meta muted");
    meta.textContent = `flags: ${flags} · language: ${lang.code} (${Math.round(lang.confidence * 100)}%, `
      + `${lang.judged ? "judged" : "not judged"}) · context: ${result.context.audience}/${result.context.surface}`
      + ` · model: ${modelLine(model)}`;
    article.append(meta);
    const flagged = new Set(result.flags.map((f) => f.category));
    const bars = el("ul", "bars");
    const names = info ? info.categories.map((c) => c.name) : Object.keys(result.scores);
    for (const name of names) {
      const threshold = info ? info.thresholds[name] : 0.5;
      bars.append(bar(name, result.scores[name], threshold, flagged.has(name)));
    }
    article.append(bars);
    return article;
  }

  async function moderate(texts, audience, surface) {
    if (!texts.length) return setState("error", "Write at least one text.");
    const limits = info ? info.limits : null;
    if (limits && texts.length > limits.max_batch_items) {
      return setState("error", `At most ${limits.max_batch_items} texts per request (${texts.length} given).`);
    }
    setState("loading", `Moderating ${texts.length} text${texts.length === 1 ? "" : "s"}…`);
    const started = performance.now();
    let response, body;
    try {
      response = await fetch("/v1/moderate", {
        method: "POST",
        headers: { "Content-Type": "application/json", Accept: "application/json" },
        body: JSON.stringify({ items: texts, context: { audience, surface } }),
      });
      body = await response.json();
    } catch (error) {
      return setState("error", `The service did not answer: ${error}`);
    }
    if (!response.ok) {
      const detail = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
      return setState("error", `${response.status}: ${detail}`);
    }
    const m = body.model;
    if (!info || info.model.name !== m.name || info.model.version !== m.version) await loadInfo();
    const out = $("results");
    out.replaceChildren(...body.results.map((result, i) => card(texts[i], result, m)));
    const ms = Math.round(performance.now() - started);
    setState("done", `${texts.length} text${texts.length === 1 ? "" : "s"} moderated in ${ms} ms by ${modelLine(m)}.`);
  }

  function share(texts, audience, surface) {
    const params = new URLSearchParams();
    texts.forEach((t) => params.append("text", t));
    params.set("audience", audience);
    params.set("surface", surface);
    const url = `${location.pathname}?${params}`;
    if (url.length < 2000) history.replaceState(null, "", url);
  }

  async function start() {
    try {
      await loadInfo();
    } catch (error) {
      $("model").textContent = `model: the service did not answer (${error})`;
    }
    $("form").addEventListener("submit", (event) => {
      event.preventDefault();
      const texts = textsFromForm();
      share(texts, $("audience").value, $("surface").value);
      moderate(texts, $("audience").value, $("surface").value);
    });
    // A shared link (?text=...&text=...&audience=ADULT&surface=MESSAGE) fills the form and runs it.
    const params = new URLSearchParams(location.search);
    const texts = params.getAll("text").flatMap((t) => t.split(/\r?\n/)).filter((t) => t.trim() !== "");
    for (const key of ["audience", "surface"]) {
      const value = params.get(key);
      if (value && [...$(key).options].some((o) => o.value === value)) $(key).value = value;
    }
    if (texts.length) {
      $("texts").value = texts.join("\n");
      moderate(texts, $("audience").value, $("surface").value);
    }
  }

  document.addEventListener("DOMContentLoaded", start);
})();
