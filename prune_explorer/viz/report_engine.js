/* The engine's plan, replayed in the page from group_data (prune_explorer/group_data.py).
   close() is propagation.close, check() propagation._check, build() PlanBuilder.build and
   explain() explain.explain, line by line, over the relations the engine exported: the page
   never decides a coupling of its own. PEngine(data).plan(layer, side, idxs, policy) returns
   what DG.get_pruning_plan(layer, side, idxs, strict=False, policy=policy) returns. */
function PEngine(D) {
  'use strict';
  const size = D.size, FIXED = D.fixed, HEAD = D.head, RELS = D.rels, NODES = D.nodes;
  const VX = D.vx, VALUES = D.values, TENSORS = D.tensors, STEPS = D.steps, MACS = D.macs;
  const LAYERS = D.layers, OPAQUE = D.opaque || {};
  const isFixed = (v) => FIXED.charCodeAt(v) === 49, isHead = (v) => HEAD.charCodeAt(v) === 49;
  const ROLE_RANK = { root: 0, out: 1, in: 2, pass: 3 };
  const JOINS = { add: 'added', add_: 'added', sub: 'subtracted', sub_: 'subtracted',
    mul: 'multiplied', mul_: 'multiplied', div: 'divided', div_: 'divided', where: 'selected',
    maximum: 'combined', minimum: 'combined', cat: 'concatenated', stack: 'stacked' };
  const NORMS = ['BatchNorm', 'LayerNorm', 'GroupNorm', 'InstanceNorm', 'RMSNorm', 'PReLU'];

  // the engine's adjacency: every relation naming a vertex, in creation order
  let adj = null;
  function adjacency() {
    if (adj) return adj;
    adj = new Map();
    const push = (v, ri) => { let a = adj.get(v); if (!a) adj.set(v, a = []); a.push(ri); };
    RELS.forEach((r, ri) => {
      if (!r) return;
      if (r[0] === 'm') { push(r[1], ri); if (r[2] !== r[1]) push(r[2], ri); }
      else { for (const x of new Set(r[1].concat(r[2]))) push(x, ri); }
    });
    return adj;
  }

  function decodeRuns(runs, n) {
    const o = new Int32Array(n);
    let k = 0;
    for (const [len, start, step, rep] of runs)
      for (let j = 0; j < len; j++) o[k++] = start < 0 ? -1 : start + step * Math.floor(j / rep);
    return o;
  }
  const owners = new Map();
  function owner(ri) {  // b[i] <- a[owner[i]]
    let o = owners.get(ri);
    if (!o) {
      const r = RELS[ri], arr = decodeRuns(r[3], size[r[2]]);
      const seen = new Set(); let inj = true;
      for (const x of arr) if (x >= 0) { if (seen.has(x)) { inj = false; break; } seen.add(x); }
      owners.set(ri, o = { arr, inj, sizeA: size[r[1]] });
    }
    return o;
  }
  function forward(ri, idxs) {
    const o = owner(ri), hit = new Uint8Array(o.sizeA), out = [];
    for (const i of idxs) hit[i] = 1;
    for (let i = 0; i < o.arr.length; i++) if (o.arr[i] >= 0 && hit[o.arr[i]]) out.push(i);
    return out;
  }
  function inverse(ri, idxs) {
    const o = owner(ri), out = [];
    for (const i of idxs) if (o.arr[i] >= 0) out.push(o.arr[i]);
    return o.inj ? out : Array.from(new Set(out)).sort((a, b) => a - b);
  }

  // ---- reshapes: index_mapping.element_mask / decompose -------------------------------------
  const prod = (xs) => xs.reduce((a, b) => a * b, 1);
  function strides(sizes) {
    const s = new Array(sizes.length); let acc = 1;
    for (let k = sizes.length - 1; k >= 0; k--) { s[k] = acc; acc *= sizes[k]; }
    return s;
  }
  function setSlices(m, sizes, axis, coords) {
    const inner = strides(sizes)[axis], outer = prod(sizes.slice(0, axis)), n = sizes[axis];
    for (let o = 0; o < outer; o++) for (const p of coords) {
      const base = (o * n + p) * inner;
      for (let i = 0; i < inner; i++) m[base + i] = 1;
    }
  }
  function elementMask(sizes, pruned) {
    const m = new Uint8Array(prod(sizes));
    pruned.forEach((idxs, axis) => { if (idxs && idxs.length) setSlices(m, sizes, axis, idxs); });
    return m;
  }
  function decompose(mask, sizes, expandable, prefer) {
    const m = Uint8Array.from(mask), n = sizes.length, st = strides(sizes), total = m.length;
    for (;;) {
      const perDim = [], covered = new Uint8Array(total);
      for (let axis = 0; axis < n; axis++) {
        if (!expandable[axis]) { perDim.push([]); continue; }
        const full = new Uint8Array(sizes[axis]).fill(1);
        for (let e = 0; e < total; e++) if (!m[e]) full[Math.floor(e / st[axis]) % sizes[axis]] = 0;
        const idx = [];
        for (let p = 0; p < sizes[axis]; p++) if (full[p]) idx.push(p);
        perDim.push(idx);
        if (idx.length) setSlices(covered, sizes, axis, idx);
      }
      let any = false;
      for (let e = 0; e < total; e++) if (m[e] && !covered[e]) { any = true; break; }
      if (!any) return [perDim, m];
      let pool = []; for (let a = 0; a < n; a++) if (expandable[a]) pool.push(a);
      if (prefer && pool.some((a) => prefer[a])) pool = pool.filter((a) => prefer[a]);
      let best = null, bestCost = null, bestAdd = null;
      for (const axis of pool) {
        const add = new Set();
        for (let e = 0; e < total; e++)
          if (m[e] && !covered[e]) add.add(Math.floor(e / st[axis]) % sizes[axis]);
        const coords = Array.from(add).sort((a, b) => a - b), probe = new Uint8Array(total);
        setSlices(probe, sizes, axis, coords);
        let cost = 0;
        for (let e = 0; e < total; e++) if (probe[e] && !m[e]) cost++;
        if (bestCost === null || cost < bestCost) { best = axis; bestCost = cost; bestAdd = coords; }
      }
      if (best === null) throw new Error('not whole slices');
      setSlices(m, sizes, best, bestAdd);
    }
  }
  const nodeName = (ix) => NODES[ix][0];

  // ---- propagation.close ----------------------------------------------------------------------
  function close(seeds, policy) {
    const A = adjacency();
    const cl = { masks: new Map(), parent: new Map(), order: [], problems: [], expanded: false,
      widenedAt: null };
    const queue = []; let head = 0;
    function add(v, idxs, parent) {
      if (!idxs.length) return;
      let m = cl.masks.get(v);
      if (!m) {
        if (!VX[v]) throw new Error('the report has no data for vertex ' + v +
                                    ' (a plan reached beyond what the engine exported)');
        m = new Uint8Array(size[v]); cl.masks.set(v, m); cl.order.push(v); cl.parent.set(v, parent);
      }
      const fresh = [];
      for (const i of idxs) if (!m[i]) { m[i] = 1; fresh.push(i); }
      if (fresh.length) queue.push([v, fresh]);
    }
    for (const [v, idxs] of seeds) add(v, idxs, null);
    while (head < queue.length) {
      const [v, delta] = queue[head++];
      for (const ri of (A.get(v) || [])) {
        const r = RELS[ri];
        if (r[0] === 'm') {
          if (r[3] === null) add(r[1] === v ? r[2] : r[1], delta, [v, ri]);
          else {
            if (r[1] === v) add(r[2], forward(ri, delta), [v, ri]);
            if (r[2] === v) add(r[1], inverse(ri, delta), [v, ri]);
          }
        } else if (r[0] === 'b') applyBlock(cl, r, ri, v, add, policy);
      }
    }
    check(cl);
    return cl;
  }
  const pruned = (cl, v) => {
    const m = cl.masks.get(v), out = [];
    if (m) for (let i = 0; i < m.length; i++) if (m[i]) out.push(i);
    return out;
  };
  const count = (cl, v) => { const m = cl.masks.get(v); let n = 0; if (m) for (const x of m) n += x; return n; };

  function applyBlock(cl, r, ri, v, add, policy) {
    const sides = [r[1], r[2]];
    let elems = null;
    for (const side of sides) {
      const m = elementMask(side.map((x) => size[x]),
                            side.map((x) => (cl.masks.has(x) ? pruned(cl, x) : null)));
      if (elems === null) elems = m; else for (let e = 0; e < m.length; e++) elems[e] |= m[e];
    }
    for (const side of sides) {
      const sizes = side.map((x) => size[x]), expandable = side.map((x) => !isFixed(x));
      let prefer = null;
      if (policy !== 'cheapest' && side.length > 1)
        prefer = side.map((x) => isHead(x) === (policy === 'heads'));
      let res;
      try { res = decompose(elems, sizes, expandable, prefer); } catch (e) {
        cl.problems.push(`${nodeName(r[3])} (${r[4]}) reshapes the pruned channels together ` +
          'with a dim that cannot be pruned (batch, spatial or a model input), so they cannot ' +
          'be removed as whole slices');
        return;
      }
      const [perDim, widened] = res;
      let a = 0, b = 0;
      for (let e = 0; e < widened.length; e++) { a += widened[e]; b += elems[e]; }
      if (a > b) { cl.expanded = true; if (!cl.widenedAt) cl.widenedAt = r; elems = widened; }
      side.forEach((x, k) => add(x, perDim[k], [v, ri]));
    }
  }

  // ---- propagation._check: the engine's messages, per vertex ----------------------------------
  function check(cl) {
    for (const v of cl.order) {
      const m = cl.masks.get(v), f = VX[v];
      const n = count(cl, v);
      if (!n) continue;
      if (n >= size[v])
        cl.problems.push(`the plan would remove all ${size[v]} entries of ${f.lab}; prune fewer ` +
                         'channels so that every coupled layer keeps at least one');
      let list = f.pr || [];
      if (f.cov) {
        const cov = decodeRuns(f.cov, size[v]);
        for (let i = 0; i < m.length; i++) if (m[i] && !cov[i]) { list = f.pru || []; break; }
      }
      for (const p of list) cl.problems.push(p);
    }
  }

  // ---- PlanBuilder.build ----------------------------------------------------------------------
  function removedNumel(shape, cuts) {
    let before = 1, after = 1;
    shape.forEach((s, d) => { before *= s; after *= s - (cuts[d] || 0); });
    return before - after;
  }
  function valueShape(cl, val) {  // the shape a value will have after the plan
    const [, , shape, dims] = VALUES[val];
    return shape.map((s, d) => (dims[d] >= 0 ? s - count(cl, dims[d]) : s));
  }
  function callMacs(cl, f) {
    const sh = (val) => valueShape(cl, val);
    if (f[0] === 'conv') {
      const x = sh(f[1]), w = sh(f[2]), spatial = (f[4] ? x : sh(f[3])).slice(2);
      return x[0] * prod(w) * prod(spatial);
    }
    if (f[0] === 'mm') { const a = sh(f[1]), b = sh(f[2]); return a[0] * a[1] * b[1]; }
    if (f[0] === 'bmm') { const a = sh(f[1]), b = sh(f[2]); return a[0] * a[1] * a[2] * b[2]; }
    if (f[0] === 'sdpa') {
      const q = sh(f[1]), k = sh(f[2]), v = sh(f[3]);
      return q[0] * q[1] * q[2] * k[k.length - 2] * (q[3] + v[v.length - 1]);
    }
    // a formula only torch knows: exact while its shapes stay, unknown otherwise
    for (const val of f[2]) {
      const dims = VALUES[val][3];
      if (dims.some((x) => x >= 0 && count(cl, x))) return NaN;
    }
    return f[1];
  }

  const poly = (terms, c) => terms.reduce((a, [mono, k]) => a + k * mono.reduce((p, i) => p * c[i], 1), 0);

  function build(cl, root) {
    const steps = new Map(), nodeRank = new Map(), touched = [], touchedSet = new Set();
    function step(si, v, rank) {
      let s = steps.get(si);
      if (!s) steps.set(si, s = { si, anchor: v, cuts: [], rank });
      return s;
    }
    cl.order.forEach((v, ord) => {
      if (!count(cl, v)) return;
      const f = VX[v];
      if (f.k === 'v') {
        if (!nodeRank.has(f.n)) nodeRank.set(f.n, ord);
        if (f.s !== undefined) step(f.s, v, nodeRank.get(f.n));
        return;
      }
      if (f.k === 'p') {
        let rank = ord;
        if (f.rn.length) rank = Math.min(...f.rn.map((x) => (nodeRank.has(x) ? nodeRank.get(x) : ord)));
        step(f.s, v, rank).cuts.push(v);
        return;
      }
      f.nv.forEach((nid, j) => {
        if (!nodeRank.has(nid)) nodeRank.set(nid, ord);
        if (!touchedSet.has(nid)) { touchedSet.add(nid); touched.push(nid); }
        if (f.ps[j] >= 0) step(f.ps[j], v, nodeRank.get(nid));
      });
    });
    // predicted MACs per node (metrics.predicted_node_macs on the new shapes)
    const layerNodes = new Set(touched);
    for (const s of steps.values()) {
      const row = STEPS[s.si];
      if (row[1] === 'pass' || row[1] === 'param') continue;
      for (const n of row[4]) layerNodes.add(n);
    }
    const gone = new Map();
    for (const nid of layerNodes) {
      if (NODES[nid][1] < 0) continue;
      const mc = MACS[nid];
      gone.set(nid, mc ? mc[0] - mc[1].reduce((a, f) => a + callMacs(cl, f), 0) : 0);
    }
    const opaqueParams = new Map();
    for (const s of steps.values()) {  // opaque layers: the registry's costs, as polynomials
      const row = STEPS[s.si];
      if (row[1] !== 'opaque') continue;
      const o = OPAQUE[row[0]], counts = o.verts.map((v) => count(cl, v));
      opaqueParams.set(row[0], o.params ? poly(o.params, counts) : NaN);
      if (o.macs !== false) o.nodes.forEach((n, i) => gone.set(n, o.macs ? poly(o.macs[i], counts) : NaN));
    }
    let totalMacs = 0;
    for (const g of gone.values()) if (g > 0 || Number.isNaN(g)) totalMacs += g;
    // parameters (exact counts, a tensor cut along two dims counted once)
    let totalParams = 0;
    for (const p of opaqueParams.values()) totalParams += p;
    const cutDims = new Map();
    for (const s of steps.values()) for (const v of s.cuts) {
      const t = VX[v].t;
      if (!cutDims.has(t)) cutDims.set(t, {});
      cutDims.get(t)[VX[v].d] = count(cl, v);
    }
    for (const [t, dims] of cutDims) if (TENSORS[t][2]) totalParams += removedNumel(TENSORS[t][1], dims);

    const ordered = Array.from(steps.values());
    const idx = new Map(cl.order.map((v, i) => [v, i]));
    const key = (s) => [STEPS[s.si][0] === root && STEPS[s.si][1] !== 'pass' ? 0 : 1, s.rank,
      cl.order.length < 5000 ? idx.get(s.anchor) : 0];
    ordered.sort((a, b) => {
      const ka = key(a), kb = key(b);
      for (let i = 0; i < 3; i++) if (ka[i] !== kb[i]) return ka[i] - kb[i];
      return 0;
    });
    const counted = new Map(), result = [], highlighted = {};
    for (const s of ordered) {
      const [target, kind, fn, repr, base] = STEPS[s.si];
      let nodes = base.slice();
      if (kind !== 'pass' && kind !== 'param')
        for (const v of s.cuts) for (const n of TENSORS[VX[v].t][3]) if (!nodes.includes(n)) nodes.push(n);
      let params = 0;
      if (kind === 'opaque') params = opaqueParams.get(target);
      else if (kind !== 'pass') {
        for (const v of s.cuts) {
          const t = VX[v].t;
          if (!TENSORS[t][2]) continue;
          if (!counted.has(t)) counted.set(t, {});
          const done = counted.get(t), before = removedNumel(TENSORS[t][1], done);
          done[VX[v].d] = count(cl, v);
          params += removedNumel(TENSORS[t][1], done) - before;
        }
      }
      const isRoot = target === root && kind !== 'pass' && !result.length;
      const role = isRoot ? 'root' : ({ out: 'out', in: 'in', opaque: 'out', param: 'out' }[kind] || 'pass');
      const names = nodes.map(nodeName);
      const why = isRoot ? 'the root of the plan' : explain(cl, s.anchor, root, new Set(names), kind, repr);
      let macs = 0;
      for (const n of nodes) {
        if (kind === 'pass' && NODES[n][1] !== 1) continue;
        if (gone.has(n)) { macs += gone.get(n); gone.delete(n); }
      }
      let shown;
      if (kind === 'pass') {
        const outs = NODES[base[0]][4].filter((v) => count(cl, v));
        shown = pruned(cl, outs.length ? outs[0] : s.anchor);
      } else if (kind === 'opaque' || !s.cuts.length) shown = pruned(cl, s.anchor);
      else shown = pruned(cl, s.cuts[0]);
      const st = { target, kind, fn, idxs: shown, params, macs: Number.isNaN(macs) ? NaN : Math.max(macs, 0),
        why, module_repr: repr, nodes: names, role };
      result.push(st);
      for (const n of names) {
        const prev = highlighted[n];
        if (!prev || ROLE_RANK[role] < ROLE_RANK[prev.role])
          highlighted[n] = { role, idxs: shown, why, fn, step: result.length - 1 };
      }
    }
    return { steps: result, highlighted, params_removed: totalParams, macs_removed: totalMacs };
  }

  // ---- explain.explain ------------------------------------------------------------------------
  function path(cl, v) {
    const steps = [], seen = new Set();
    while (v !== null && v !== undefined && !seen.has(v)) {
      seen.add(v);
      const p = cl.parent.get(v);
      if (!p) break;
      steps.push(p); v = p[0];
    }
    return steps.reverse();
  }
  function note(cl, prev, r) {
    if (r[0] === 'm') return r[6] ? (isHead(prev) ? r[5] : null) : r[5];
    const flat = r[6];
    if (flat && flat[2].includes(prev)) {
      const m = cl.masks.get(flat[0]);
      const c = m ? m.indexOf(1) : -1;
      if (c >= 0) return `flattened at ${nodeName(r[3])}: channel ${c} → features ` +
                         `${c * flat[1]}–${(c + 1) * flat[1] - 1}`;
    }
    return r[5];
  }
  function explain(cl, v, root, own, kind, nodeType) {
    const p = path(cl, v);
    if (!p.length) return 'the root of the plan';
    const L = LAYERS[root];
    const roots = new Set(L && L.nodes.length ? L.nodes : [root]);
    const ops = [], notes = [];
    let join = null;
    for (const [prev, ri] of p) {
      const r = RELS[ri], N = NODES[r[0] === 'm' ? r[4] : r[3]];
      if (N[1] < 0) continue;
      const id = N[0];
      if (!own.has(id) && !roots.has(id) && N[1] === 1 && (!ops.length || ops[ops.length - 1] !== id))
        ops.push(id);
      if (join === null && JOINS[N[2]] && N[3] > 1 && !own.has(id)) join = N;
      const t = note(cl, prev, r);
      if (t && !notes.includes(t)) notes.push(t);
    }
    const via = ops.slice(0, 6).join(' → ') + (ops.length > 6 ? ' → …' : '');
    let text;
    if (kind === 'pass') text = `carries ${root}'s channels` + (via ? ` after ${via}` : '');
    else if (kind === 'in') text = `reads ${root}'s output` + (via ? ` through ${via}` : ' directly');
    else if (kind === 'param') {
      const where = join ? join[0] : (ops.length ? ops[ops.length - 1] : root);
      text = `a parameter used at ${where}, on ${root}'s channels`;
    } else if (join && join[2] !== 'cat' && join[2] !== 'stack') {
      text = `its output is ${JOINS[join[2]]} to ${root}'s channels at ${join[0]}`;
      if (join[2] === 'add' || join[2] === 'add_') text += ' (a residual connection)';
    } else if (NORMS.some((x) => nodeType.startsWith(x))) {
      text = !nodeType.startsWith('PReLU') ? `normalizes ${root}'s channels` + (via ? ` after ${via}` : '')
        : `acts per channel on ${root}'s output`;
    } else text = `shares ${root}'s channels` + (via ? ` through ${via}` : '');
    const sorted = notes.filter((n) => !n.startsWith('viewed as')).concat(
      notes.filter((n) => n.startsWith('viewed as')));
    if (sorted.length) text += '; ' + sorted.slice(0, 3).join('; ');
    return text;
  }

  // ---- DG.get_pruning_plan(layer, side, idxs, strict=False, policy) ---------------------------
  function where(layer, side, n) {
    return `${layer} (${LAYERS[layer].type}, ${n} ${side}put channels)`;
  }
  function plan(layer, side, idxs, policy) {
    const L = LAYERS[layer];
    if (!L) return { error: `${layer} is not a module of this model` };
    const seed = L[side];
    if (typeof seed !== 'number') return { error: seed || `${layer} has no ${side}put channels` };
    const n = size[seed], w = where(layer, side, n);
    const uniq = Array.from(new Set(idxs)).sort((a, b) => a - b);
    for (const i of idxs) {
      if (i < 0) return { error: `index ${i} for ${w} is negative; channel indices run from 0 to ${n - 1}` };
      if (i >= n) return { error: `index ${i} is out of range for ${w}, which has ${n} channels (valid: 0..${n - 1})` };
    }
    if (uniq.length !== idxs.length) {
      const dups = uniq.filter((i) => idxs.indexOf(i) !== idxs.lastIndexOf(i));
      return { error: `indices [${dups.join(', ')}] are given more than once for ${w}; list each channel once` };
    }
    if (!uniq.length) return { error: `no indices given for ${w}; pass e.g. idxs=[2, 6, 9]` };
    if (uniq.length >= n)
      return { error: `pruning ${uniq.length} of ${n} channels would remove every channel of ${w}; keep at least one` };
    const cl = close([[seed, uniq]], policy || 'cheapest');
    const out = build(cl, layer);
    out.root = layer; out.side = side; out.idxs = uniq; out.problems = cl.problems;
    out.expanded = cl.expanded; out.policy = policy || 'cheapest';
    out.rootPruned = pruned(cl, seed);
    if (cl.widenedAt) {
      const r = cl.widenedAt;
      out.widenedAt = { node: nodeName(r[3]), why: r[4], note: r[5],
        factors: [r[1], r[2]].map((s) => s.map((x) => size[x]).join(' × ')) };
    }
    return out;
  }
  function decodePick(pick, n) {  // a list, or "b64:" a little-endian bit mask
    if (typeof pick !== 'string' || !pick.startsWith('b64:')) return pick;
    const bytes = atob(pick.slice(4)), out = [];
    for (let i = 0; i < n; i++) if (bytes.charCodeAt(i >> 3) & (1 << (i & 7))) out.push(i);
    return out;
  }
  return { plan, close, decodeRuns, decodePick, size, layers: LAYERS, nodes: NODES, data: D };
}
