"""Where Graphviz drew each element, and which box a view should show to see a plan.

    boxes = element_boxes(layout.svg)            # element key -> (x0, y0, x1, y1)
    fit = plan_fit(boxes, spec)                   # {"key", "root": box, "steps": [box, ...]}

Boxes are in the SVG's viewBox units (points, origin top left, y down), the units the canvas
scales by its zoom. ``plan_fit`` orders the plan's elements by distance from the root and
returns the growing union of their boxes: the canvas shows the last step that still fits at a
readable zoom (the whole plan when it fits, else the root and its nearest coupled layers).
"""

from __future__ import annotations

import html
import math
import re

Box = tuple[float, float, float, float]

_TRANSFORM_RE = re.compile(r'<g id="graph0" class="graph" transform="scale\(([-\d.]+)(?: '
                           r'([-\d.]+))?\) rotate\([-\d.]+\) translate\(([-\d.]+) ([-\d.]+)\)"')
_ELEMENT_RE = re.compile(r'<g id="[nce]\d+" class="node[^"]*" (data-node|data-module|data-fold)'
                         r'="([^"]*)"[^>]*>(.*?)</g>', re.S)
_POINTS_RE = re.compile(r' (?:points|d)="([^"]*)"')
_NUM_PAIR_RE = re.compile(r"(-?\d+(?:\.\d+)?),(-?\d+(?:\.\d+)?)")
_ELLIPSE_RE = re.compile(r'<ellipse[^>]* cx="([-\d.]+)" cy="([-\d.]+)" rx="([-\d.]+)" '
                         r'ry="([-\d.]+)"')
_PREFIX = {"data-node": "", "data-module": "module:", "data-fold": "fold:"}


def element_boxes(svg: str) -> dict[str, Box]:
    """Element key (as ``Layout.elements`` and the canvas name them: a node id,
    ``module:PATH`` or ``fold:PATH``) -> its outline's box in viewBox units."""
    m = _TRANSFORM_RE.search(svg)
    sx, sy, tx, ty = 1.0, 1.0, 0.0, 0.0
    if m:
        sx = float(m.group(1))
        sy = float(m.group(2)) if m.group(2) else sx
        tx, ty = float(m.group(3)), float(m.group(4))
    out: dict[str, Box] = {}
    for attr, value, body in _ELEMENT_RE.findall(svg):
        xs: list[float] = []
        ys: list[float] = []
        for pts in _POINTS_RE.findall(body):
            for x, y in _NUM_PAIR_RE.findall(pts):
                xs.append(float(x))
                ys.append(float(y))
        for cx, cy, rx, ry in _ELLIPSE_RE.findall(body):
            cx, cy, rx, ry = float(cx), float(cy), float(rx), float(ry)
            xs += [cx - rx, cx + rx]
            ys += [cy - ry, cy + ry]
        if not xs:
            continue
        key = _PREFIX[attr] + html.unescape(value)
        out[key] = ((min(xs) + tx) * sx, (min(ys) + ty) * sy,
                    (max(xs) + tx) * sx, (max(ys) + ty) * sy)
    return out


def union(a: Box, b: Box) -> Box:
    return (min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]))


def _center(b: Box) -> tuple[float, float]:
    return ((b[0] + b[2]) / 2, (b[1] + b[3]) / 2)


def plan_fit(boxes: dict[str, Box], spec: dict) -> dict | None:
    """What to bring into view for a highlight spec (``GraphView.highlight_spec``):
    ``{"key": root element, "root": box, "steps": [box, ...]}``, each step the union of the root and the next
    nearest touched element (by centre distance), the last step the whole plan. None when
    nothing drawn is touched."""
    roles = dict(spec.get("inside") or {})
    roles.update(spec.get("nodes") or {})
    keys = [k for k in roles if k in boxes]
    if not keys:
        return None
    roots = [k for k in keys if roles[k] == "root"]
    root = roots[0] if roots else keys[0]
    rx, ry = _center(boxes[root])

    def dist(k: str) -> tuple[float, str]:
        x, y = _center(boxes[k])
        return (math.hypot(x - rx, y - ry), k)

    box = boxes[root]
    steps = [box]
    for k in sorted((k for k in keys if k != root), key=dist):
        box = union(box, boxes[k])
        if box != steps[-1]:
            steps.append(box)
    r = lambda b: [round(v, 1) for v in b]  # noqa: E731 - JSON-sized numbers
    return {"key": root, "root": r(boxes[root]), "steps": [r(b) for b in steps]}
