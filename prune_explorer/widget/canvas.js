// prune_explorer graph canvas (anywidget ES module, no build step).
//
// Draws the SVG laid out by Graphviz once per layout; a plan preview only toggles classes
// (pe-root / pe-out / pe-in / pe-pass, pe-inside, pe-flow, pe-hot) on elements already drawn.
// Pan: drag or scroll. Zoom: ctrl/⌘ + wheel or the buttons. Fit: the button.
// After a click the view pans (and zooms out if it must) to show the plan, or the root and
// its nearest coupled layers (boxes computed by Python: highlight.fit); "fit plan" shows it all.
// Click a layer -> the `selected` trait; a collapsed module / fold -> {event: "expand"};
// a cluster's title -> {event: "collapse"}; search -> focus, or {event: "reveal"} if hidden.

const ROLES = ["pe-root", "pe-out", "pe-in", "pe-pass"];
const ROLE_TEXT = {
  root: "root: the layer you chose",
  out: "output channels pruned",
  in: "input channels pruned",
  pass: "channels pass through",
};

function h(tag, attrs = {}, children = []) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else e.setAttribute(k, v);
  }
  for (const c of children) e.appendChild(c);
  return e;
}

function esc(s) {
  return String(s).replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c]);
}

function render({ model, el }) {
  const root = h("div", { class: "pe-canvas" });
  const search = h("input", { class: "pe-search", type: "search", placeholder: "find a layer by name or type…", "aria-label": "search layers" });
  const count = h("span", { class: "pe-count" });
  const btn = (label, title, cls = "") => h("button", { class: "pe-btn " + cls, title, text: label });
  const zoomOut = btn("−", "zoom out"), zoomIn = btn("+", "zoom in"), fit = btn("fit", "fit the graph");
  const fitPlanBtn = btn("fit plan", "bring the whole previewed plan into view", "pe-fit-plan");
  const expandAll = btn("expand all", "draw every module expanded (slow on huge models)");
  const reset = btn("default view", "default view: repeated blocks folded, modules collapsed beyond the node budget");
  const toolbar = h("div", { class: "pe-toolbar" }, [search, count, h("span", { class: "pe-spacer" }), zoomOut, zoomIn, fit, fitPlanBtn, reset, expandAll]);
  const viewport = h("div", { class: "pe-viewport" });
  const stage = h("div", { class: "pe-stage" });
  viewport.appendChild(stage);
  const tip = h("div", { class: "pe-tip" });
  const legend = h("div", { class: "pe-legend pe-canvas-legend" });
  const busy = h("div", { class: "pe-busy", text: "laying out…" });
  root.append(toolbar, viewport, legend, tip, busy);
  el.appendChild(root);

  let svg = null, natW = 1, natH = 1, zoom = 1;
  let elems = new Map();   // key -> <g>
  let edgeEls = new Map(); // edge id -> <g>
  let marked = [];
  let matches = [], matchAt = -1, lastQuery = "";
  let fittedFor = "";      // the root whose plan the view was last brought to
  const UNIT = 96 / 72;    // px per viewBox unit at zoom 1 (Graphviz draws in points)
  const MIN_AUTO_ZOOM = 0.6;  // an automatic fit never zooms out further: labels stay legible

  function keyOf(g) {
    if (g.hasAttribute("data-node")) return g.getAttribute("data-node");
    if (g.classList.contains("pe-module")) return "module:" + g.getAttribute("data-module");
    if (g.hasAttribute("data-fold")) return "fold:" + g.getAttribute("data-fold");
    return null;
  }

  function setZoom(z, cx, cy) {
    if (!svg) return;
    z = Math.max(0.05, Math.min(4, z));
    const r = viewport.getBoundingClientRect();
    const ox = cx === undefined ? r.width / 2 : cx - r.left;
    const oy = cy === undefined ? r.height / 2 : cy - r.top;
    const sx = viewport.scrollLeft + ox, sy = viewport.scrollTop + oy;
    const f = z / zoom;
    zoom = z;
    svg.style.width = natW * z + "px";
    svg.style.height = natH * z + "px";
    viewport.scrollLeft = sx * f - ox;
    viewport.scrollTop = sy * f - oy;
  }

  function fitZoom() {
    const w = viewport.clientWidth - 24, hgt = viewport.clientHeight - 24;
    return Math.min(w / natW, hgt / natH, 1.5);
  }

  function loadSvg() {
    const t0 = performance.now();
    const keep = svg ? { z: zoom, x: viewport.scrollLeft, y: viewport.scrollTop } : null;
    stage.innerHTML = model.get("svg") || "";
    svg = stage.querySelector("svg");
    elems = new Map();
    edgeEls = new Map();
    marked = [];
    if (!svg) return;
    const vb = svg.viewBox.baseVal;
    natW = vb.width * 96 / 72;
    natH = vb.height * 96 / 72;
    svg.removeAttribute("width");
    svg.removeAttribute("height");
    for (const t of svg.querySelectorAll("title")) t.remove(); // our tooltip replaces them
    for (const g of svg.querySelectorAll("g.node")) {
      const k = keyOf(g);
      if (k !== null) elems.set(k, g);
    }
    for (const g of svg.querySelectorAll("g.edge")) edgeEls.set(g.id, g);
    zoom = 1;
    if (keep) {
      setZoom(keep.z);
      viewport.scrollLeft = keep.x;
      viewport.scrollTop = keep.y;
    } else {
      const w = viewport.clientWidth || 800;
      // readable first: at least 90% size (scroll to see the rest), at most 100%
      setZoom(Math.max(0.9, Math.min(1, (w - 24) / natW)));
      viewport.scrollTop = 0;
      viewport.scrollLeft = Math.max(0, (viewport.scrollWidth - viewport.clientWidth) / 2);
    }
    applyHighlight();
    el.dataset.renderMs = (performance.now() - t0).toFixed(1);
    el.dataset.layoutVersion = String((+el.dataset.layoutVersion || 0) + 1);
  }

  function applyHighlight() {
    const t0 = performance.now();
    const spec = model.get("highlight") || {};
    for (const g of marked) {
      g.classList.remove(...ROLES, "pe-inside", "pe-flow", "pe-hot", "pe-selected");
      g.removeAttribute("data-inside");
      g.style.removeProperty("--pe-heat");
    }
    marked = [];
    if (!svg) return;
    for (const [k, role] of Object.entries(spec.nodes || {})) {
      const g = elems.get(k);
      if (g) { g.classList.add("pe-" + role); marked.push(g); }
    }
    for (const [k, role] of Object.entries(spec.inside || {})) {
      const g = elems.get(k);
      if (g) { g.classList.add("pe-inside"); g.setAttribute("data-inside", role); marked.push(g); }
    }
    for (const id of spec.edges || []) {
      const g = edgeEls.get(id);
      if (g) { g.classList.add("pe-flow"); marked.push(g); }
    }
    const heat = spec.heat || {};
    for (const [k, color] of Object.entries(heat)) {
      const g = elems.get(k);
      if (g) { g.classList.add("pe-hot"); g.style.setProperty("--pe-heat", color); marked.push(g); }
    }
    const chosen = elems.get(model.get("selected"));
    if (chosen && !chosen.classList.contains("pe-root")) { chosen.classList.add("pe-selected"); marked.push(chosen); }
    svg.classList.toggle("pe-active", !!spec.active);
    svg.classList.toggle("pe-heat", Object.keys(heat).length > 0);
    drawLegend(Object.keys(heat).length > 0, !!spec.active, !!spec.pending);
    fitPlanBtn.disabled = !spec.fit;
    const fitKey = spec.fit ? spec.fit.key : "";
    if (fitKey && fitKey !== fittedFor && viewport.clientWidth) {
      fittedFor = fitKey;  // once per new root: changing the amount does not move the view
      fitPlan(false);
    } else if (!fitKey) fittedFor = "";
    el.dataset.highlightVersion = String((+el.dataset.highlightVersion || 0) + 1);
    el.dataset.highlightMs = (performance.now() - t0).toFixed(2);
    el.dataset.pending = spec.pending ? "1" : "0";
  }

  function drawLegend(heat, active, pending) {
    let html = "";
    if (heat) {  // whole-model mode: one scale, the roles do not apply
      const stops = (model.get("heat_stops") || []).map(([f, c]) => `${c} ${Math.round(f * 100)}%`).join(", ");
      html += `<span>share of each layer's params removed: 0%<span class="pe-heatbar" style="background:linear-gradient(90deg, ${stops})"></span>100%</span>`;
      html += `<span class="pe-hint">click a layer to see one plan</span>`;
    } else {
      for (const [r, t] of Object.entries(ROLE_TEXT)) html += `<span><span class="pe-sw ${r}"></span>${t}</span>`;
      if (pending) html += `<span class="pe-hint">scoring channels…</span>`;
      else if (!active) html += `<span class="pe-hint">click a layer to preview a plan · click a cluster title to collapse it</span>`;
    }
    legend.innerHTML = html;
  }

  // ---- bring a plan into view
  function boxZoom(b) {  // the zoom at which box b (viewBox units) fills the viewport
    const w = Math.max(40, viewport.clientWidth - 48), hgt = Math.max(40, viewport.clientHeight - 48);
    return Math.min(w / Math.max(1, (b[2] - b[0]) * UNIT), hgt / Math.max(1, (b[3] - b[1]) * UNIT));
  }
  function boxRect(b) {  // box b in the viewport's scroll coordinates
    const s = svg.getBoundingClientRect(), v = viewport.getBoundingClientRect();
    const k = UNIT * zoom, x0 = s.left - v.left + viewport.scrollLeft, y0 = s.top - v.top + viewport.scrollTop;
    return { l: x0 + b[0] * k, t: y0 + b[1] * k, r: x0 + b[2] * k, b: y0 + b[3] * k };
  }
  function showBox(b, z) {
    if (Math.abs(z - zoom) > 1e-3) setZoom(z);
    const r = boxRect(b), sl = viewport.scrollLeft, st = viewport.scrollTop;
    const inside = r.l >= sl && r.r <= sl + viewport.clientWidth && r.t >= st && r.b <= st + viewport.clientHeight;
    if (inside) return;  // already in view: do not move what the user is looking at
    viewport.scrollLeft = (r.l + r.r) / 2 - viewport.clientWidth / 2;
    viewport.scrollTop = (r.t + r.b) / 2 - viewport.clientHeight / 2;
  }
  function fitPlan(all) {
    const fit = (model.get("highlight") || {}).fit;
    if (!svg || !fit || !fit.steps.length) return false;
    const steps = fit.steps, whole = steps[steps.length - 1];
    if (all) showBox(whole, Math.max(0.05, Math.min(boxZoom(whole), 1.5)));
    else {
      // the whole plan at the current zoom if it fits, else zoom out to it, down to a legible
      // zoom; past that, the root and as many of its nearest coupled layers as fit
      const floor = Math.min(zoom, MIN_AUTO_ZOOM);
      let pick = steps[0];
      for (const b of steps) if (boxZoom(b) >= floor) pick = b;
      showBox(pick, Math.max(floor, Math.min(zoom, boxZoom(pick))));
    }
    el.dataset.fitVersion = String((+el.dataset.fitVersion || 0) + 1);
    return true;
  }

  function focusKey(k, flash = true) {
    const g = elems.get(k);
    if (!g) return false;
    const r = g.getBoundingClientRect(), v = viewport.getBoundingClientRect();
    viewport.scrollLeft += r.left + r.width / 2 - (v.left + v.width / 2);
    viewport.scrollTop += r.top + r.height / 2 - (v.top + v.height / 2);
    if (flash) {
      g.classList.remove("pe-flash");
      void g.getBoundingClientRect();
      g.classList.add("pe-flash");
      setTimeout(() => g.classList.remove("pe-flash"), 1400);
    }
    return true;
  }

  // ---- tooltip
  function showTip(g, ev) {
    const k = keyOf(g);
    const info = (model.get("info") || {})[k];
    const spec = model.get("highlight") || {};
    const hi = (spec.info || {})[k];
    let html = `<div class="pe-tip-title">${esc(info ? info.title : k)}</div>`;
    if (info) html += (info.lines || []).map((l) => `<div>${esc(l)}</div>`).join("");
    if (hi) {
      html += `<div class="pe-tip-role"><span class="pe-sw ${hi.role}"></span>${esc(ROLE_TEXT[hi.role] || hi.role)} · <code>${esc(hi.fn)}</code></div>`;
      html += `<div><b>${hi.n}</b> indices: <span class="pe-mono">${esc(hi.idxs)}</span></div>`;
      if (hi.why) html += `<div class="pe-why">why: ${esc(hi.why)}</div>`;
    } else if (spec.inside && spec.inside[k]) {
      html += `<div class="pe-tip-role">hides layers the plan touches (${esc(spec.inside[k])})</div>`;
    }
    tip.innerHTML = html;
    tip.style.display = "block";
    moveTip(ev);
  }
  function moveTip(ev) {
    const r = root.getBoundingClientRect();
    let x = ev.clientX - r.left + 14, y = ev.clientY - r.top + 14;
    const tw = tip.offsetWidth, th = tip.offsetHeight;
    if (x + tw > r.width - 4) x = Math.max(4, ev.clientX - r.left - tw - 14);
    if (y + th > r.height - 4) y = Math.max(4, ev.clientY - r.top - th - 14);
    tip.style.left = x + "px";
    tip.style.top = y + "px";
  }
  stage.addEventListener("pointerover", (ev) => {
    const g = ev.target.closest && ev.target.closest("g.node");
    if (g && keyOf(g) !== null) showTip(g, ev);
    else tip.style.display = "none";
  });
  stage.addEventListener("pointermove", (ev) => { if (tip.style.display === "block") moveTip(ev); });
  viewport.addEventListener("pointerleave", () => { tip.style.display = "none"; });

  // ---- pan (drag) and click
  let down = null, dragging = false;
  viewport.addEventListener("pointerdown", (ev) => {
    if (ev.button !== 0) return;
    down = { x: ev.clientX, y: ev.clientY, sl: viewport.scrollLeft, st: viewport.scrollTop, id: ev.pointerId };
    dragging = false;
  });
  viewport.addEventListener("pointermove", (ev) => {
    if (!down) return;
    const dx = ev.clientX - down.x, dy = ev.clientY - down.y;
    if (!dragging && Math.abs(dx) + Math.abs(dy) > 5) {
      dragging = true;
      viewport.classList.add("pe-dragging");
      try { viewport.setPointerCapture(down.id); } catch (e) { /* synthetic events */ }
    }
    if (dragging) {
      viewport.scrollLeft = down.sl - dx;
      viewport.scrollTop = down.st - dy;
      tip.style.display = "none";
    }
  });
  const endDrag = () => {
    if (down) { try { viewport.releasePointerCapture(down.id); } catch (e) { /* ignore */ } }
    down = null;
    viewport.classList.remove("pe-dragging");
    setTimeout(() => { dragging = false; }, 0);
  };
  viewport.addEventListener("pointerup", endDrag);
  viewport.addEventListener("pointercancel", endDrag);

  stage.addEventListener("click", (ev) => {
    if (dragging) return;
    const t = ev.target;
    if (!t.closest) return;
    const cl = t.closest("g.pe-cluster");
    if (cl && t.tagName.toLowerCase() === "text") {
      model.send({ event: "collapse", module: cl.getAttribute("data-module") });
      return;
    }
    const g = t.closest("g.node");
    if (!g) return;
    const k = keyOf(g);
    if (k === null) return;
    if (k.startsWith("module:") || k.startsWith("fold:")) {
      model.send({ event: "expand", key: k });
      return;
    }
    el.dataset.clickAt = String(performance.now());
    model.set("selected", k);
    model.save_changes();
  });

  viewport.addEventListener("wheel", (ev) => {
    if (!(ev.ctrlKey || ev.metaKey)) return; // plain wheel scrolls (pans)
    ev.preventDefault();
    setZoom(zoom * Math.exp(-ev.deltaY * 0.0025), ev.clientX, ev.clientY);
  }, { passive: false });

  zoomIn.onclick = () => setZoom(zoom * 1.25);
  zoomOut.onclick = () => setZoom(zoom / 1.25);
  fit.onclick = () => { setZoom(fitZoom()); viewport.scrollLeft = 0; viewport.scrollTop = 0; };
  fitPlanBtn.onclick = () => fitPlan(true);
  expandAll.onclick = () => model.send({ event: "expand_all" });
  reset.onclick = () => model.send({ event: "reset_view" });

  // ---- search: name or type; Enter cycles through the matches
  function runSearch(step) {
    const q = search.value.trim().toLowerCase();
    if (!q) { matches = []; count.textContent = ""; return; }
    if (q !== lastQuery) {
      lastQuery = q;
      matchAt = -1;
      matches = (model.get("index") || []).filter(([id, type]) => id.toLowerCase().includes(q) || String(type).toLowerCase().includes(q));
    }
    if (!matches.length) { count.textContent = "no match"; return; }
    matchAt = (matchAt + step + matches.length) % matches.length;
    const [id, , key] = matches[matchAt];
    count.textContent = `${matchAt + 1}/${matches.length}`;
    if (key === id && elems.has(id)) focusKey(id);
    else model.send({ event: "reveal", node: id });
  }
  search.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter") { ev.preventDefault(); runSearch(ev.shiftKey ? -1 : 1); }
    else if (ev.key === "Escape") { search.value = ""; runSearch(0); }
    ev.stopPropagation(); // keep JupyterLab's notebook shortcuts out of the search box
  });
  search.addEventListener("keyup", (ev) => ev.stopPropagation());
  search.addEventListener("keypress", (ev) => ev.stopPropagation());

  function applyHeight() { viewport.style.height = model.get("height") || "600px"; }

  model.on("change:svg", loadSvg);
  model.on("change:highlight", applyHighlight);
  model.on("change:selected", applyHighlight);
  model.on("change:height", applyHeight);
  model.on("change:busy", () => busy.classList.toggle("pe-on", !!model.get("busy")));
  model.on("change:focus", () => {
    const f = model.get("focus") || {};
    if (f.node) requestAnimationFrame(() => focusKey(f.node));
  });
  applyHeight();
  // the element may be attached after render() returns: lay out once it has a size
  requestAnimationFrame(loadSvg);
  return () => { el.innerHTML = ""; };
}

export default { render };
