/* The one-file report's page: click a layer (or pick one by name), see the plan the engine
   would make — its coupled layers highlighted by role, each one's indices and why — for the
   strategy's channels or for channels you type. Plans come from PEngine (report_engine.js)
   on the data the report embeds; nothing is fetched, nothing runs elsewhere.
   window.PE is the page's API (tests drive it): PE.plan(layer, side, idxs, policy),
   PE.select(layer), PE.typeIndices(text), PE.setPolicy(p), PE.showReport(), PE.state. */
(function () {
  'use strict';
  const D = JSON.parse(document.getElementById('pe-data').textContent);
  const E = PEngine(D), P = D.page, OPT = D.options;
  const $ = (id) => document.getElementById(id);
  const vp = $('pe-viewport'), svg = vp.querySelector('svg'), tip = $('pe-tip');
  const ROLES = ['root', 'out', 'in', 'pass'], RANK = { root: 0, out: 1, in: 2, pass: 3 };
  const esc = (s) => String(s).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#x27;' }[c]));
  const num = (x) => (Number.isNaN(x) || x === null || x === undefined ? '?' : x.toLocaleString('en-US'));
  function human(n) {
    if (Number.isNaN(n)) return '?';
    for (const [d, s] of [[1e12, 'T'], [1e9, 'G'], [1e6, 'M'], [1e3, 'K']])
      if (Math.abs(n) >= d) { const v = n / d; return (v < 100 ? String(+v.toPrecision(3)) : v.toFixed(0)) + s; }
    return String(Math.trunc(n));
  }
  function idxText(idxs, limit) {  // viz.dot.idx_text
    const a = Array.from(idxs).sort((x, y) => x - y), parts = [];
    for (let i = 0; i < a.length;) {
      let j = i;
      while (j + 1 < a.length && a[j + 1] === a[j] + 1) j++;
      parts.push(i === j ? String(a[i]) : `${a[i]}-${a[j]}`);
      i = j + 1;
    }
    let text = parts.join(', ');
    if (text.length > limit) {
      const head = text.slice(0, limit), cut = head.lastIndexOf(',');
      text = `${cut >= 0 ? head.slice(0, cut) : head}, … (${a.length} in all)`;
    }
    return text;
  }
  const tail = (name, n) => (name.length <= n ? name : '…' + name.slice(name.length - n + 1));
  function parseIndices(text) {  // viz.dot.parse_indices
    const out = new Set();
    for (const part of text.trim().split(/[,\s;]+/)) {
      if (!part) continue;
      let m = part.match(/^(\d+)\s*(?:-|–|\.\.|:)\s*(\d+)$/);
      if (m) {
        const a = +m[1], b = +m[2];
        if (b < a) throw new Error(`range '${part}' goes backwards`);
        for (let i = a; i <= b; i++) out.add(i);
      } else if (/^\d+$/.test(part)) out.add(+part);
      else throw new Error(`cannot read '${part}' as an index or a range like 0-15`);
    }
    return Array.from(out).sort((a, b) => a - b);
  }

  // ---- the drawn graph ----------------------------------------------------------------------
  const drawn = new Map(), containers = new Map(), edges = [];
  for (const g of svg.querySelectorAll('g[data-node]')) drawn.set(g.getAttribute('data-node'), g);
  for (const g of svg.querySelectorAll('g.pe-module[data-module]')) containers.set('module:' + g.getAttribute('data-module'), g);
  for (const g of svg.querySelectorAll('g.pe-fold[data-fold]')) containers.set('fold:' + g.getAttribute('data-fold'), g);
  for (const g of svg.querySelectorAll('g.edge[data-src]')) edges.push([g, g.getAttribute('data-src'), g.getAttribute('data-dst')]);
  const keyOf = (node) => (drawn.has(node) ? node : P.hidden[node]);
  const moduleOf = new Map();
  for (const [name, L] of Object.entries(D.layers)) for (const n of L.nodes) moduleOf.set(n, name);

  if (P.initial_steps.length)
    $('pe-charts').innerHTML = chartsHtml({ steps: P.initial_steps.map(([target, kind, params, macs]) => ({ target, kind, params, macs })) });
  const initial = {  // the report's own plan, as the engine drew it: restored by showReport()
    svg: svg.getAttribute('class'), table: $('pe-table').innerHTML, kpis: $('pe-kpis').innerHTML,
    charts: $('pe-charts').innerHTML,
    els: Array.from(svg.querySelectorAll('g.node, g.edge')).map((g) => [g, g.getAttribute('class'),
      g.getAttribute('data-idxs'), g.getAttribute('data-why'), g.getAttribute('data-inside')]),
  };
  const state = { layer: P.initial ? P.initial.root : null, side: 'out', policy: 'auto',
    typed: null, plan: null, message: '', mode: 'report', ms: 0 };

  function clearClasses() {
    for (const [g] of initial.els) {
      for (const r of ROLES) g.classList.remove('pe-' + r);
      g.classList.remove('pe-inside', 'pe-flow', 'pe-hot', 'pe-selected');
      g.removeAttribute('data-idxs'); g.removeAttribute('data-why'); g.removeAttribute('data-inside');
    }
    svg.classList.remove('pe-active', 'pe-heat');
  }
  function highlight(plan) {  // GraphView.highlight_spec + highlight_svg, on the live DOM
    clearClasses();
    const touched = new Set();
    if (plan && plan.highlighted && !plan.problems.length) {
      const inside = new Map();
      for (const [k, h] of Object.entries(plan.highlighted)) {
        const key = keyOf(k);
        if (key === undefined) continue;
        if (key === k) {
          const g = drawn.get(k);
          g.classList.add('pe-' + h.role);
          g.setAttribute('data-idxs', idxText(h.idxs, 240));
          g.setAttribute('data-why', h.why);
          touched.add(k);
        } else if (!inside.has(key) || RANK[h.role] < RANK[inside.get(key)]) inside.set(key, h.role);
      }
      for (const [key, role] of inside) {
        const g = containers.get(key);
        if (!g) continue;
        g.classList.add('pe-inside'); g.setAttribute('data-inside', role); touched.add(key);
      }
      for (const [g, s, d] of edges) if (touched.has(s) && touched.has(d)) g.classList.add('pe-flow');
      if (touched.size) svg.classList.add('pe-active');
    }
    const sel = state.layer && drawn.get((D.layers[state.layer] || { nodes: [] }).nodes[0]);
    if (sel && !(plan && plan.highlighted && !plan.problems.length)) sel.classList.add('pe-selected');
    return touched;
  }

  // ---- the plan table (report.plan_table_html) and the numbers ------------------------------
  function tableHtml(plan) {
    const rows = plan.steps.map((s, i) =>
      `<tr class="pe-row-${esc(s.role)}" data-target="${esc(s.nodes.length ? s.nodes[0] : s.target)}">` +
      `<td class="num">${i + 1}</td><td><b>${esc(s.target)}</b><br><span style="color:#64748b;font-size:11px">` +
      `${esc(s.module_repr.length <= 64 ? s.module_repr : s.module_repr.slice(0, 63) + '…')}</span></td>` +
      `<td>${esc(s.role)}</td><td><code>${esc(s.fn)}</code></td><td class="idx">${esc(idxText(s.idxs, 200))}</td>` +
      `<td class="num">${s.idxs.length}</td><td class="num">${num(s.params)}</td><td class="num">${num(s.macs)}</td>` +
      `<td class="why">${esc(s.why)}</td></tr>`).join('');
    return '<table class="pe-plan"><thead><tr><th>#</th><th>layer</th><th>role</th><th>function</th>' +
      '<th>indices</th><th>n</th><th>params removed</th><th>FLOPs (MACs) removed</th><th>why coupled</th>' +
      `</tr></thead><tbody>${rows}</tbody><tfoot><tr><td></td><td>total</td><td></td><td></td><td></td><td></td>` +
      `<td class="num">${num(plan.params_removed)}</td><td class="num">${num(plan.macs_removed)}</td><td></td></tr></tfoot></table>`;
  }
  function kpisHtml(dp, dm) {
    const t = P.totals, pct = (a, b) => {  // as report._kpis: a 0.03% change reads as such
      if (!b) return '';
      const p = 100 * (a - b) / b;
      return `${p >= 0 ? '+' : ''}${p.toFixed(Math.abs(p) < 1 ? 2 : 1)}%`;
    };
    const pa = t.params - dp, ma = t.macs - dm;
    return `<div class="pe-kpi">params before<b>${human(t.params)}</b>${num(t.params)}</div>` +
      `<div class="pe-kpi">params after<b>${human(pa)} (${pct(pa, t.params)})</b>${num(pa)}</div>` +
      `<div class="pe-kpi">MACs before<b>${human(t.macs)}</b>${num(t.macs)}</div>` +
      `<div class="pe-kpi">MACs after<b>${human(ma)} (${pct(ma, t.macs)})</b>${num(ma)}</div>`;
  }
  function chartsHtml(plan) {  // charts.layer_rows as bars: before (grey) and what is left (blue)
    const rows = new Map();
    for (const s of plan.steps) {
      const b = D.steps_before[s.target];
      if (!b || (s.kind === 'pass' && !s.macs)) continue;
      let r = rows.get(s.target);
      if (!r) rows.set(s.target, r = { name: s.target, p0: b[0], p: b[0], m0: b[1], m: b[1] });
      r.p -= s.params; r.m -= s.macs;
    }
    const list = Array.from(rows.values());
    const bars = (title, key0, key, unit) => {
      const top = list.filter((r) => r[key0] > 0).sort((a, b) => (b[key0] - b[key]) - (a[key0] - a[key])).slice(0, 24);
      if (!top.length) return '';
      const max = Math.max(...top.map((r) => r[key0]));
      return `<div class="pe-bars"><h3>${title}</h3>` + top.map((r) => {
        const left = Math.max(r[key], 0), gone = r[key0] - left;
        return `<div class="pe-bar" title="${esc(r.name)}: ${num(r[key0])} → ${num(left)} ${unit}">` +
          `<span class="pe-bar-name">${esc(r.name)}</span><span class="pe-bar-track">` +
          `<span class="pe-bar-before" style="width:${(100 * r[key0] / max).toFixed(2)}%"></span>` +
          `<span class="pe-bar-after" style="width:${(100 * left / max).toFixed(2)}%"></span></span>` +
          `<span class="pe-bar-val">−${human(gone)} (${r[key0] ? (100 * gone / r[key0]).toFixed(1) : 0}%)</span></div>`;
      }).join('') + (list.length > top.length ? `<div class="pe-note">${list.length - top.length} more layers</div>` : '') + '</div>';
    };
    return bars('Parameters per layer: before (grey) → after (blue)', 'p0', 'p', 'params') +
      bars('MACs per layer: before (grey) → after (blue)', 'm0', 'm', 'MACs');
  }

  // ---- the side panel ------------------------------------------------------------------------
  function layerFacts(layer) {
    const L = D.layers[layer];
    if (!L) return '';
    const seed = L.out, n = typeof seed === 'number' ? E.size[seed] : null;
    let html = `<div class="pe-layer"><b>${esc(layer)}</b> <span class="pe-type">${esc(L.type)}</span>` +
      (n !== null ? ` · ${n} output channels` : '') + '</div>';
    const g = L.group !== undefined ? D.groups[L.group] : null;
    if (g) {
      html += `<div class="pe-group">group: <b>${esc(g.kind)}</b>, ${g.layers} layers, ${g.size} channels` +
        (g.units && g.units !== g.size ? ` in ${g.units} units` : '') +
        (g.root !== layer ? `, rooted at ${esc(g.root)}` : '') + '</div>';
      if (g.problem) html += `<div class="pe-bad">This group cannot be pruned: ${esc(g.problem)}</div>`;
    }
    return html;
  }
  function renderPanel() {
    const p = state.plan;
    $('pe-layerfacts').innerHTML = state.layer ? layerFacts(state.layer) :
      '<div class="pe-note">Click a layer in the graph, or pick one by name.</div>';
    $('pe-idx').value = state.typed !== null ? state.typed : (p && !p.error && state.mode !== 'report' ? idxText(p.idxs, 100000) : $('pe-idx').value);
    let msg = '';
    if (state.message) msg += `<div class="pe-bad">${esc(state.message)}</div>`;
    if (p && !p.error) {
      const how = state.mode === 'typed' ? 'the channels you typed' : state.mode === 'pick' ?
        `${OPT.strategy.toUpperCase()} ${Math.round(OPT.amount * 100)}% (the engine's choice, whole units)` : 'the report\'s plan';
      msg += `<div class="pe-ok">${p.idxs.length} of ${esc(p.root)}'s channels, ${how}: ` +
        `${p.steps.length} steps, ${human(p.params_removed)} params, ${human(p.macs_removed)} MACs removed.</div>`;
      if (p.rootPruned && p.rootPruned.length > p.idxs.length && p.widenedAt) {
        const w = p.widenedAt;
        msg += `<div class="pe-warn"><b>Widened:</b> ${p.idxs.length} channel${p.idxs.length === 1 ? "" : "s"} → ${p.rootPruned.length}. ` +
          `${esc(w.node)} (${esc(w.why)}) ties channels together: ${esc(w.factors[0])} ↔ ${esc(w.factors[1])}, ` +
          `so the engine removes whole slices (policy <i>${esc(p.policy)}</i>: ` +
          `${p.policy === 'heads' ? 'whole heads / groups' : p.policy === 'dims' ? 'the same slots in every head / group' : 'the fewest channels'}). ` +
          `Removed: ${esc(idxText(p.rootPruned, 160))}.</div>`;
      }
      if (p.problems.length)
        msg += '<div class="pe-bad"><b>This plan cannot run</b> (nothing is highlighted):<ul>' +
          p.problems.slice(0, 6).map((x) => `<li>${esc(x)}</li>`).join('') + '</ul></div>';
      if (Number.isNaN(p.params_removed) || Number.isNaN(p.macs_removed))
        msg += '<div class="pe-note">"?": a black-box layer whose counts only the engine can compute.</div>';
    }
    if (state.mode === 'report' && (P.initial || P.whole))
      msg += `<div class="pe-ok">Showing the plan this report was made for, as the engine computed it` +
        (P.initial ? ` (${P.initial.idxs.length} ${esc(P.initial.side)}put channels of ${esc(P.initial.root)})` : ' (the whole model)') +
        '. Click a layer to plan from it.</div>';
    $('pe-msg').innerHTML = msg;
    const steps = p && !p.error && !p.problems.length ? p.steps : [];
    $('pe-steps').innerHTML = steps.length ? `<div style="cursor:default;color:#334155"><b>${steps.length} steps</b>` +
      '&nbsp;(layer · channels; click to find it)</div>' + steps.map((s) =>
      `<div data-target="${esc(s.nodes.length ? s.nodes[0] : s.target)}"><span class="pe-sw ${esc(s.role)}"></span>` +
      `<span class="t" title="${esc(s.target)}: ${esc(s.why)}">${esc(tail(s.target, 38))}</span>` +
      `<span class="n" title="${esc(idxText(s.idxs, 400))}">${esc(idxText(s.idxs, 18))}</span></div>`).join('') : '';
    $('pe-back').style.display = P.initial || P.whole ? '' : 'none';
  }

  // ---- actions -------------------------------------------------------------------------------
  function policyFor(mode) { return state.policy !== 'auto' ? state.policy : mode === 'typed' ? OPT.typed_policy : OPT.pick_policy; }
  function show(plan) {
    state.plan = plan;
    const t0 = performance.now();
    highlight(plan);
    if (plan && !plan.error && !plan.problems.length) {
      $('pe-table').innerHTML = tableHtml(plan);
      $('pe-kpis').innerHTML = kpisHtml(plan.params_removed, plan.macs_removed);
      $('pe-charts').innerHTML = chartsHtml(plan);
    } else {
      $('pe-table').innerHTML = `<div class="pe-empty">${plan && plan.error ? esc(plan.error) : 'No plan: see why above.'}</div>`;
      $('pe-kpis').innerHTML = kpisHtml(0, 0);
      $('pe-charts').innerHTML = '';
    }
    state.message = plan && plan.error ? plan.error : '';
    renderPanel();
    state.ms = performance.now() - t0;
    if (plan && !plan.error && !plan.problems.length) requestAnimationFrame(() => fitPlan(plan));
  }
  function fitPlan(plan) {
    // the whole plan if it fits at a zoom whose labels still read; else the root and its
    // nearest coupled layers (the rest: scroll, or "fit graph")
    const els = [];
    for (const s of plan.steps) {
      const key = keyOf(s.nodes.length ? s.nodes[0] : s.target);
      const g = drawn.get(key) || containers.get(key);
      if (g && !els.includes(g)) els.push(g);
    }
    if (!els.length) return;
    const need = zoomToFit(els);
    fitTo(need >= 0.6 ? els : els.slice(0, 8), 0.6, 1);
  }
  function select(layer) {
    const L = D.layers[layer];
    state.layer = layer; state.typed = null; state.mode = 'pick';
    if (!L) { state.plan = null; state.message = `${layer} is not a module of this model`; highlight(null); renderPanel(); return null; }
    if (typeof L.out !== 'number') { show({ error: L.out }); return state.plan; }
    const idxs = E.decodePick(L.pick, E.size[L.out]);
    if (typeof idxs === 'string') { show({ error: idxs }); return state.plan; }
    show(E.plan(layer, 'out', idxs, policyFor('pick')));
    return state.plan;
  }
  function typeIndices(text) {
    if (!state.layer) { state.message = 'Click a layer first.'; renderPanel(); return null; }
    if (!text.trim()) return select(state.layer);
    let idxs;
    try { idxs = parseIndices(text); } catch (e) { state.message = e.message; renderPanel(); return null; }
    const L = D.layers[state.layer];
    if (typeof L.out !== 'number') { show({ error: L.out }); return state.plan; }
    state.mode = 'typed'; state.typed = text;
    show(E.plan(state.layer, 'out', idxs, policyFor('typed')));
    return state.plan;
  }
  function showReport() {
    svg.setAttribute('class', initial.svg);
    for (const [g, cls, idxs, why, inside] of initial.els) {
      g.setAttribute('class', cls);
      for (const [a, v] of [['data-idxs', idxs], ['data-why', why], ['data-inside', inside]])
        if (v === null) g.removeAttribute(a); else g.setAttribute(a, v);
    }
    $('pe-table').innerHTML = initial.table; $('pe-kpis').innerHTML = initial.kpis; $('pe-charts').innerHTML = initial.charts;
    state.mode = 'report'; state.plan = null; state.typed = null; state.message = '';
    state.layer = P.initial ? P.initial.root : null;
    if (P.initial) $('pe-idx').value = idxText(P.initial.idxs, 100000);
    renderPanel();
  }
  function clickNode(node) {
    const layer = moduleOf.get(node);
    if (layer !== undefined) return select(layer);
    const what = P.ops[node];
    state.layer = null; state.typed = null;
    show({ error: what === 'param' ?
      `${node} is a bare parameter: a plan starts from a layer, and the parameter is cut along with the layers it is coupled to` :
      `${node} is an op (${what || 'op'}): it has no channels of its own. Click a layer with weights (conv, linear, norm).` });
    return state.plan;
  }

  // ---- view: zoom, pan, fit, tooltips ---------------------------------------------------------
  const vb = svg.viewBox.baseVal, natW = vb.width * 96 / 72, natH = vb.height * 96 / 72;
  svg.removeAttribute('width'); svg.removeAttribute('height');
  let z = 1;
  function zoom(nz, cx, cy) {
    cx = cx === undefined ? vp.scrollLeft + vp.clientWidth / 2 : cx;
    cy = cy === undefined ? vp.scrollTop + vp.clientHeight / 2 : cy;
    const f = nz / z;
    z = nz; svg.style.width = natW * z + 'px'; svg.style.height = natH * z + 'px';
    vp.scrollLeft = cx * f - vp.clientWidth / 2; vp.scrollTop = cy * f - vp.clientHeight / 2;
  }
  function bbox(els) {  // in the SVG's own pixels at the current zoom
    const s = svg.getBoundingClientRect();
    let x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
    for (const g of els) {
      const r = g.getBoundingClientRect();
      x0 = Math.min(x0, r.left - s.left); y0 = Math.min(y0, r.top - s.top);
      x1 = Math.max(x1, r.right - s.left); y1 = Math.max(y1, r.bottom - s.top);
    }
    return [x0, y0, x1, y1];
  }
  function zoomToFit(els) {
    const [x0, y0, x1, y1] = bbox(els);
    return z * Math.min((vp.clientWidth - 40) / (x1 - x0 + 1), (vp.clientHeight - 40) / (y1 - y0 + 1));
  }
  function fitTo(els, minZoom, maxZoom) {  // zoom and scroll so that these elements fill the view
    if (!els.length) return;
    const [x0, y0, x1, y1] = bbox(els);
    const nz = Math.max(minZoom || 0.15, Math.min(maxZoom || 1.3, zoomToFit(els)));
    const f = nz / z;
    z = nz; svg.style.width = natW * z + 'px'; svg.style.height = natH * z + 'px';
    const s = svg.getBoundingClientRect(), v = vp.getBoundingClientRect();  // an <svg> has no offsetTop
    vp.scrollLeft += s.left - v.left - vp.clientLeft + ((x0 + x1) / 2) * f - vp.clientWidth / 2;
    vp.scrollTop += s.top - v.top - vp.clientTop + ((y0 + y1) / 2) * f - vp.clientHeight / 2;
  }
  function touchedEls() {
    return Array.from(svg.querySelectorAll('g.pe-root, g.pe-out, g.pe-in, g.pe-pass, g.pe-inside, g.pe-hot, g.pe-selected'));
  }
  zoom(Math.max(0.6, Math.min(1, (vp.clientWidth - 20) / natW)));  // labels stay readable
  if (touchedEls().length) {
    const r = touchedEls()[0].getBoundingClientRect(), v = vp.getBoundingClientRect();
    vp.scrollTop += r.top - v.top - vp.clientHeight / 3;
    vp.scrollLeft += r.left - v.left - vp.clientWidth / 2 + r.width / 2;
  }
  $('pe-zin').onclick = () => zoom(Math.min(4, z * 1.25));
  $('pe-zout').onclick = () => zoom(Math.max(0.05, z / 1.25));
  $('pe-fit').onclick = () => zoom(Math.min((vp.clientWidth - 20) / natW, (vp.clientHeight - 20) / natH, 1.5));
  $('pe-fitplan').onclick = () => (state.plan && !state.plan.error ? fitPlan(state.plan) : fitTo(touchedEls()));
  vp.addEventListener('wheel', (ev) => {
    if (!(ev.ctrlKey || ev.metaKey)) return;
    ev.preventDefault(); zoom(Math.max(0.05, Math.min(4, z * (ev.deltaY < 0 ? 1.1 : 1 / 1.1))));
  }, { passive: false });
  let drag = null, moved = false;
  vp.addEventListener('pointerdown', (ev) => { drag = [ev.clientX, ev.clientY, vp.scrollLeft, vp.scrollTop]; moved = false; });
  window.addEventListener('pointermove', (ev) => {
    if (!drag) return;
    if (Math.abs(ev.clientX - drag[0]) + Math.abs(ev.clientY - drag[1]) > 4) moved = true;
    vp.scrollLeft = drag[2] - (ev.clientX - drag[0]); vp.scrollTop = drag[3] - (ev.clientY - drag[1]);
  });
  window.addEventListener('pointerup', () => { drag = null; });
  vp.addEventListener('click', (ev) => {
    if (moved) return;
    tip.style.display = 'none';  // its roles and indices were the previous plan's
    const g = ev.target.closest('g[data-node]');
    if (g) { clickNode(g.getAttribute('data-node')); return; }
    const c = ev.target.closest('g.pe-module, g.pe-fold');
    if (c) {
      state.message = 'This block is drawn folded: pick one of its layers by name (the box above the graph).';
      renderPanel();
    }
  });
  vp.addEventListener('pointerover', (ev) => {
    const g = ev.target.closest('g[data-node], g.pe-module, g.pe-fold');
    if (!g) { tip.style.display = 'none'; return; }
    const key = g.getAttribute('data-node') || ('module:' + g.getAttribute('data-module'));
    let t = '<b>' + esc(g.getAttribute('data-node') || g.querySelector('title').textContent) + '</b>';
    const info = P.info[g.getAttribute('data-node')] || P.info[key] || P.info['fold:' + g.getAttribute('data-fold')];
    if (info) t += '<br>' + info.map(esc).join('<br>');
    for (const r of ROLES) if (g.classList.contains('pe-' + r)) t += '<br><i>' + r + '</i>';
    if (g.dataset.idxs) t += '<br>indices: ' + esc(g.dataset.idxs);
    if (g.dataset.why) t += '<br>why: ' + esc(g.dataset.why);
    tip.innerHTML = t; tip.style.display = 'block';
  });
  vp.addEventListener('pointermove', (ev) => {
    tip.style.left = Math.min(ev.clientX + 14, window.innerWidth - 440) + 'px'; tip.style.top = (ev.clientY + 14) + 'px';
  });
  vp.addEventListener('pointerleave', () => { tip.style.display = 'none'; });

  // ---- controls ------------------------------------------------------------------------------
  $('pe-idx').addEventListener('keydown', (ev) => { if (ev.key === 'Enter') typeIndices(ev.target.value); });
  $('pe-apply').onclick = () => typeIndices($('pe-idx').value);
  $('pe-pick').onclick = () => { if (state.layer) select(state.layer); };
  $('pe-policy').onchange = (ev) => {
    state.policy = ev.target.value;
    if (state.mode === 'typed') typeIndices(state.typed); else if (state.mode === 'pick') select(state.layer);
  };
  $('pe-back').onclick = showReport;
  $('pe-find').addEventListener('change', (ev) => {
    const name = ev.target.value.trim();
    if (!D.layers[name]) return;
    select(name);
    const g = drawn.get(D.layers[name].nodes[0]);
    if (g) fitTo([g]); else {
      const c = containers.get(keyOf(D.layers[name].nodes[0]));
      if (c) fitTo([c]);
    }
  });
  const findRow = (ev) => {
    const tr = ev.target.closest('[data-target]');
    const g = tr && drawn.get(tr.getAttribute('data-target'));
    if (g) { fitTo([g]); g.classList.add('pe-flash'); setTimeout(() => g.classList.remove('pe-flash'), 1300); }
  };
  $('pe-table-wrap').addEventListener('click', findRow);
  $('pe-steps').addEventListener('click', findRow);
  renderPanel();
  $('pe-pick').textContent = `pick ${Math.round(OPT.amount * 100)}% by ${OPT.strategy.toUpperCase()}`;
  if (P.initial) $('pe-idx').value = idxText(P.initial.idxs, 100000);

  window.PE = {
    engine: E, data: D, state,
    plan: (layer, side, idxs, policy) => E.plan(layer, side || 'out', idxs, policy),
    select, typeIndices, showReport, clickNode,
    setPolicy: (p) => { $('pe-policy').value = p; $('pe-policy').onchange({ target: $('pe-policy') }); },
    roles: () => {
      const out = {};
      for (const [k, g] of drawn) for (const r of ROLES) if (g.classList.contains('pe-' + r)) out[k] = r;
      return out;
    },
  };
})();
