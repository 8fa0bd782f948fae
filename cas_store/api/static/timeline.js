// The version timeline: message count per version as an inline SVG chart.
//
// Every point is a link to its version (keyboard-focusable, with a <title> that says
// what happened). Suspect shrinks, intentional shrinks and restores / recoveries each
// get their own mark, so an accident stands out from a deliberate cut at a glance.

import { h, s, absTime, plural } from "./dom.js";

const HEIGHT = 190;
const PAD = { top: 30, right: 24, bottom: 30, left: 44 };
const STEP_MIN = 9; // px between points before the chart scrolls sideways
// Points sit this far inside the plot, so the first and last marks and the selection ring
// (r = 11, 3 px stroke) are drawn whole, clear of the count axis drawn over the left edge.
const INSET = 14;

export function kindOf(v) {
  if (v.suspect_shrink) return "suspect";
  // A restore that drops newer messages is flagged intentional too; say what it was.
  if (v.op === "restore" || v.op === "recover") return v.op;
  if (v.intentional_shrink) return "intentional";
  if (v.op === "delete") return "delete";
  return "plain";
}

const KIND_TEXT = {
  suspect: "suspect shrink",
  intentional: "intentional shrink",
  restore: "restore",
  recover: "recovery",
  delete: "deleted",
  plain: "",
};

/** A one-line description of a version, for tooltips and screen readers. */
export function describe(v, prev) {
  const parts = [`Version ${v.seq}`, v.op.replace("_", " "), plural(v.message_count, "message")];
  if (prev) {
    const d = v.message_count - prev.message_count;
    if (d) parts.push(`${d > 0 ? "+" : "−"}${Math.abs(d)}`);
  }
  if (KIND_TEXT[kindOf(v)] && !["restore", "recover"].includes(kindOf(v))) {
    parts.push(KIND_TEXT[kindOf(v)]);
  }
  parts.push(absTime(v.created_at));
  return parts.join(" · ");
}

function mark(kind, x, y, dense = false) {
  switch (kind) {
    case "suspect":
      return s("g", { class: "mark suspect" },
        s("path", { d: `M${x} ${y - 8} L${x + 8} ${y} L${x} ${y + 8} L${x - 8} ${y} Z` }),
        s("text", { x, y: y + 3.5, "text-anchor": "middle", class: "bang" }, "!"));
    case "intentional":
      return s("path", {
        class: "mark intentional",
        d: `M${x - 6} ${y - 5} L${x + 6} ${y - 5} L${x} ${y + 6} Z`,
      });
    case "delete":
      return s("path", {
        class: "mark delete",
        d: `M${x - 5} ${y - 5} L${x + 5} ${y + 5} M${x + 5} ${y - 5} L${x - 5} ${y + 5}`,
      });
    case "restore":
    case "recover":
      return s("circle", { class: `mark ${kind}`, cx: x, cy: y, r: 6 });
    default:
      return s("circle", { class: "mark plain", cx: x, cy: y, r: dense ? 3 : 4.5 });
  }
}

function niceMax(n) {
  if (n <= 4) return Math.max(n, 1);
  const mag = 10 ** Math.floor(Math.log10(n));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * mag >= n) return m * mag;
  return n;
}

/**
 * Draw versions (ascending by seq) into the element `into`.
 * opts: { sid, current (seq to highlight), head (seq) }.
 */
export function drawTimeline(into, versions, opts) {
  const avail = Math.max(into.clientWidth || 0, 300);
  const n = versions.length;
  const width = Math.max(avail, PAD.left + PAD.right + 2 * INSET + STEP_MIN * Math.max(n - 1, 1));
  const plotW = width - PAD.left - PAD.right;
  const plotH = HEIGHT - PAD.top - PAD.bottom;
  const max = niceMax(Math.max(...versions.map((v) => v.message_count), 1));
  const spanW = plotW - 2 * INSET;
  const x = (i) => PAD.left + INSET + (n === 1 ? spanW / 2 : (spanW * i) / (n - 1));
  const y = (c) => PAD.top + plotH - (plotH * c) / max;

  const svg = s("svg", {
    class: "timeline-svg",
    width,
    height: HEIGHT,
    viewBox: `0 0 ${width} ${HEIGHT}`,
    role: "group",
    "aria-label": `Message count per version, ${plural(n, "version")}`,
  });

  // The count axis is drawn last, over the points, and follows sideways scrolling.
  const yaxis = s("g", { class: "yaxis" }, s("rect", { class: "yaxis-bg", x: 0, y: 0,
    width: PAD.left - 2, height: HEIGHT - PAD.bottom + 6 }));
  for (const t of [0, max / 2, max]) {
    svg.append(s("line", { class: "grid", x1: PAD.left, x2: width - PAD.right, y1: y(t), y2: y(t) }));
    yaxis.append(s("text", { class: "axis", x: PAD.left - 8, y: y(t) + 4, "text-anchor": "end" },
      Number.isInteger(t) ? t.toLocaleString() : t.toFixed(1)));
  }
  svg.append(s("text", { class: "axis", x: PAD.left, y: HEIGHT - 8 }, `v${versions[0].seq}`));
  if (n > 1) {
    svg.append(s("text", { class: "axis", x: width - PAD.right, y: HEIGHT - 8, "text-anchor": "end" },
      `v${versions[n - 1].seq}`));
  }
  if (n > 1) {
    svg.append(s("polyline", {
      class: "line",
      points: versions.map((v, i) => `${x(i)},${y(v.message_count)}`).join(" "),
    }));
  }

  versions.forEach((v, i) => {
    const kind = kindOf(v);
    const cx = x(i);
    const cy = y(v.message_count);
    const link = s("a", {
      href: `#/s/${encodeURIComponent(opts.sid)}/v/${v.seq}`,
      class: `point kind-${kind}${v.seq === opts.current ? " current" : ""}`,
      "data-seq": v.seq,
      "data-kind": kind,
      "aria-label": describe(v, versions[i - 1]),
    },
    s("title", {}, describe(v, versions[i - 1])),
    s("circle", { class: "hit", cx, cy, r: 10 }),
    v.seq === opts.current ? s("circle", { class: "ring", cx, cy, r: 11 }) : null,
    mark(kind, cx, cy, plotW / Math.max(n - 1, 1) < 14));
    if (kind === "restore" || kind === "recover" || kind === "suspect") {
      const label = kind === "restore" ? "restored" : kind === "recover" ? "recovered" : "suspect";
      const above = cy - 14 > PAD.top - 18;
      // Keep the label inside the chart at either end.
      const anchor = cx > width - PAD.right - INSET - 20 ? "end"
        : cx < PAD.left + INSET + 20 ? "start" : "middle";
      const lx = anchor === "end" ? cx + 8 : anchor === "start" ? cx - 8 : cx;
      link.append(s("text", {
        class: `label label-${kind}`, x: lx, y: above ? cy - 14 : cy + 22, "text-anchor": anchor,
      }, label));
    }
    svg.append(link);
  });

  svg.append(yaxis);
  into.replaceChildren(svg);
  into.onscroll = () => yaxis.setAttribute("transform", `translate(${into.scrollLeft} 0)`);
  if (width > into.clientWidth) {
    // A long history scrolls sideways: start with the version shown (or the newest) in view.
    const at = versions.findIndex((v) => v.seq === opts.current);
    const focusX = x(at >= 0 ? at : n - 1);
    into.scrollLeft = Math.max(0, focusX - into.clientWidth * 0.7);
    into.onscroll();
  }
}

/** The legend explaining the marks. */
export function legend() {
  const item = (kind, text) => {
    const icon = s("svg", { width: 20, height: 20, viewBox: "0 0 20 20", "aria-hidden": "true" },
      mark(kind, 10, 10));
    return h("li", {}, icon, text);
  };
  return h("ul", { class: "legend" },
    item("plain", "version"),
    item("intentional", "intentional shrink (retry, edit, undo)"),
    item("suspect", "suspect shrink (messages dropped unexpectedly)"),
    item("restore", "restore"),
    item("recover", "recovery"));
}

/** A timeline that redraws itself when its box changes width. */
export function timeline(versions, opts) {
  const box = h("div", { class: "timeline-box" });
  const fig = h("figure", { class: "timeline" }, box,
    h("figcaption", {}, legend()));
  let lastW = -1;
  const ro = new ResizeObserver(() => {
    if (!box.isConnected) {
      ro.disconnect();
      return;
    }
    const w = box.clientWidth;
    if (Math.abs(w - lastW) < 2) return;
    lastW = w;
    drawTimeline(box, versions, opts);
  });
  ro.observe(box);
  return fig;
}
