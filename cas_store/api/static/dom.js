// DOM helpers. Data only ever becomes text nodes or attribute values, never markup.

const SVG_NS = "http://www.w3.org/2000/svg";

function build(el, attrs, children) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") {
      el.addEventListener(k.slice(2), v);
    } else if (k === "dataset") {
      Object.assign(el.dataset, v);
    } else {
      el.setAttribute(k, v === true ? "" : String(v));
    }
  }
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

/** Create an HTML element; strings among the children become text nodes. */
export function h(tag, attrs, ...children) {
  return build(document.createElement(tag), attrs, children);
}

/** Create an SVG element. */
export function s(tag, attrs, ...children) {
  return build(document.createElementNS(SVG_NS, tag), attrs, children);
}

const plural = (n, one, many = `${one}s`) => `${n.toLocaleString()} ${n === 1 ? one : many}`;
export { plural };

export function absTime(ts) {
  return new Date(ts * 1000).toLocaleString(undefined, {
    year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit",
  });
}

const UNITS = [
  ["year", 365 * 86400], ["month", 30 * 86400], ["week", 7 * 86400], ["day", 86400],
  ["hour", 3600], ["minute", 60],
];
const rtf = new Intl.RelativeTimeFormat(undefined, { numeric: "auto" });

export function relTime(ts) {
  const delta = ts - Date.now() / 1000;
  for (const [unit, secs] of UNITS) {
    if (Math.abs(delta) >= secs) return rtf.format(Math.round(delta / secs), unit);
  }
  return "just now";
}

/** A <time> element showing relative time, with the exact time on hover. */
export function timeEl(ts) {
  return h("time", { datetime: new Date(ts * 1000).toISOString(), title: absTime(ts) }, relTime(ts));
}

export function bytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KB`;
  return `${(n / 1024 / 1024).toFixed(1)} MB`;
}

/** Announce a message to screen readers and show it in the status bar. */
export function announce(text, kind = "info") {
  const bar = document.getElementById("status");
  bar.replaceChildren(text ? h("p", { class: `note ${kind}` }, text) : "");
}
