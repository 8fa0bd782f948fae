// Messages as readable cards: roles told apart, long content folded, tool calls shown.
//
// Content is shown as text only; a part that points at an image or file shows its
// address as text and is never fetched (the page makes no request beyond the API).

import { h, plural } from "./dom.js";

const FOLD_CHARS = 700;
const FOLD_LINES = 14;
const CHUNK = 200;
const KNOWN = new Set(["role", "content", "tool_calls", "name", "tool_call_id"]);

function pretty(value) {
  if (typeof value === "string") {
    try {
      return JSON.stringify(JSON.parse(value), null, 2);
    } catch {
      return value;
    }
  }
  return JSON.stringify(value, null, 2);
}

function foldable(node, text) {
  const lines = text.split("\n").length;
  if (text.length <= FOLD_CHARS && lines <= FOLD_LINES) return node;
  node.classList.add("folded");
  const btn = h("button", { type: "button", class: "link fold", "aria-expanded": "false" },
    `Show all (${plural(text.length, "character")})`);
  btn.addEventListener("click", () => {
    const open = node.classList.toggle("folded") === false;
    btn.setAttribute("aria-expanded", String(open));
    btn.textContent = open ? "Fold" : `Show all (${plural(text.length, "character")})`;
  });
  return h("div", { class: "foldable" }, node, btn);
}

function textBlock(text, cls = "text") {
  return foldable(h("div", { class: cls }, text), text);
}

function part(p) {
  if (typeof p === "string") return textBlock(p);
  if (p && typeof p === "object") {
    if (typeof p.text === "string") return textBlock(p.text);
    const ref = p.image_url?.url ?? p.image_url ?? p.url ?? p.file?.filename;
    if (typeof ref === "string") {
      const shown = ref.startsWith("data:") ? `${ref.slice(0, 40)}…` : ref;
      return h("div", { class: "part-ref" }, `[${p.type || "attachment"}] `, h("code", {}, shown));
    }
  }
  const text = pretty(p);
  return foldable(h("pre", { class: "json" }, text), text);
}

function content(c) {
  if (c === undefined || c === null || c === "") return null;
  if (typeof c === "string") return textBlock(c);
  if (Array.isArray(c)) return h("div", { class: "parts" }, c.map(part));
  const text = pretty(c);
  return foldable(h("pre", { class: "json" }, text), text);
}

function toolCall(tc) {
  const fn = tc?.function ?? tc ?? {};
  const name = fn.name ?? tc?.name ?? "tool";
  const args = fn.arguments ?? tc?.arguments ?? tc?.input ?? tc?.args;
  const text = args === undefined ? "" : pretty(args);
  return h("div", { class: "tool-call" },
    h("div", { class: "tool-head" }, h("span", { class: "tool-tag" }, "tool call"), " ",
      h("code", { class: "tool-name" }, name), tc?.id ? h("span", { class: "muted" }, ` ${tc.id}`) : null),
    text ? foldable(h("pre", { class: "json" }, text), text) : null);
}

/** One message as an <article>; index is its position in the session (0-based). */
export function messageCard(msg, index) {
  const m = msg && typeof msg === "object" && !Array.isArray(msg) ? msg : { content: msg };
  const role = typeof m.role === "string" ? m.role : "message";
  const roleClass = ["user", "assistant", "system", "tool", "developer", "function"]
    .includes(role) ? role : "other";
  const extra = Object.fromEntries(Object.entries(m).filter(([k]) => !KNOWN.has(k)));
  const calls = Array.isArray(m.tool_calls) ? m.tool_calls : [];
  return h("article", { class: `msg role-${roleClass}`, "data-index": index },
    h("header", { class: "msg-head" },
      h("span", { class: "role" }, role),
      m.name ? h("span", { class: "muted" }, String(m.name)) : null,
      m.tool_call_id ? h("span", { class: "muted" }, `for ${m.tool_call_id}`) : null,
      h("span", { class: "idx" }, `#${index + 1}`)),
    content(m.content),
    calls.length ? h("div", { class: "tool-calls" }, calls.map(toolCall)) : null,
    Object.keys(extra).length
      ? h("details", { class: "extra" }, h("summary", {}, `other fields (${Object.keys(extra).join(", ")})`),
        h("pre", { class: "json" }, pretty(extra)))
      : null);
}

/** A list of messages rendered CHUNK at a time, first at `offset` in the session.
 *  With `reveal`, enough chunks are shown at once for message `reveal` to be there. */
export function messageList(messages, { offset = 0, empty = "No messages.", reveal = null } = {}) {
  const list = h("div", { class: "messages" });
  if (!messages.length) {
    list.append(h("p", { class: "muted empty" }, empty));
    return list;
  }
  let shown = 0;
  const more = h("button", { type: "button", class: "more" });
  const step = () => {
    const frag = document.createDocumentFragment();
    const end = Math.min(shown + CHUNK, messages.length);
    for (let i = shown; i < end; i++) frag.append(messageCard(messages[i], offset + i));
    shown = end;
    more.before(frag);
    const left = messages.length - shown;
    more.hidden = left === 0;
    more.textContent = `Show ${Math.min(left, CHUNK)} more of ${left.toLocaleString()}`;
  };
  more.addEventListener("click", step);
  list.append(more);
  step();
  while (reveal !== null && shown < messages.length && shown <= reveal - offset) step();
  return list;
}
