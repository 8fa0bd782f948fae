// The version-history browser: a hash router over three pages, using only the HTTP API.
//
//   #/                    sessions (search with #/?q=…, pages with &cursor=…)
//   #/s/<sid>             one session: timeline of versions and the messages (?m=<index>:
//                         scrolled to that message, as a content search hit opens it)
//   #/s/<sid>/v/<seq>     one version: diff against the head or another version, restore

import * as api from "./api.js";
import { h, plural, timeEl, absTime, bytes, announce } from "./dom.js";
import { timeline, kindOf, describe } from "./timeline.js";
import { messageList, messageCard } from "./messages.js";
import { follow } from "./live.js";

const main = document.getElementById("main");
const PAGE_SIZE = 50;
const VERSION_PAGE = 500;
let renderToken = 0; // bumps on each navigation so a slow response cannot paint a stale page

// --- routing ------------------------------------------------------------------------------

function parseRoute() {
  const raw = location.hash.replace(/^#/, "") || "/";
  const [path, query = ""] = raw.split("?");
  const params = new URLSearchParams(query);
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  if (parts[0] === "s" && parts[1]) {
    if (parts[2] === "v" && /^\d+$/.test(parts[3] || "")) {
      return { page: "version", sid: parts[1], seq: Number(parts[3]), params };
    }
    return { page: "session", sid: parts[1], params };
  }
  return { page: "sessions", params };
}

export const sessionHref = (sid) => `#/s/${encodeURIComponent(sid)}`;
export const versionHref = (sid, seq) => `${sessionHref(sid)}/v/${seq}`;

let flash = null; // a message to show on the next page (e.g. after a restore)
// Versions this page made itself ("sid@seq"): their live events redraw, but the page has
// said what it did already, so they are not announced over that.
const ownVersions = new Set();

async function render({ live = false } = {}) {
  const mine = ++renderToken;
  const route = parseRoute();
  const current = () => mine === renderToken;
  if (!live && (route.page !== "sessions" || !main.querySelector("#session-search"))) {
    main.replaceChildren(h("p", { class: "muted loading" }, "Loading…"));
  }
  if (!live) {
    announce(flash?.text || "", flash?.kind);
    flash = null;
  }
  try {
    if (route.page === "sessions") await sessionsPage(route, current);
    else if (route.page === "session") await sessionPage(route, current, live);
    else await versionPage(route, current);
  } catch (err) {
    if (!current()) return;
    main.replaceChildren(errorPanel(err));
  }
  if (current()) document.dispatchEvent(new CustomEvent("page-rendered", { detail: route }));
}

function errorPanel(err) {
  const status = err instanceof api.ApiError ? err.status : 0;
  const title = status === 404 ? "Not found" : status === 401 ? "Not authorised" : "Something went wrong";
  return h("section", { class: "panel error", role: "alert" },
    h("h1", {}, title),
    h("p", {}, err.message || String(err)),
    err.code ? h("p", { class: "muted" }, `code: ${err.code}`) : null,
    h("p", {}, h("a", { href: "#/" }, "Back to sessions")));
}

/** Replace el's children, skipping the absent (null / false) ones. */
function fill(el, ...children) {
  el.replaceChildren(...children.filter((c) => c !== null && c !== undefined && c !== false));
}

function setTitle(text) {
  document.title = text ? `${text} · cas-store history` : "cas-store history";
}

function crumbs(...items) {
  const nav = h("nav", { class: "crumbs", "aria-label": "Breadcrumb" }, h("ol", {}));
  items.forEach(([text, href], i) => {
    const last = i === items.length - 1;
    nav.firstChild.append(h("li", {}, href && !last
      ? h("a", { href }, text)
      : h("span", { "aria-current": last ? "page" : null }, text)));
  });
  return nav;
}

// --- sessions page --------------------------------------------------------------------------

const cursorTrail = []; // cursors of the pages before the current one, for "Previous page"

function sessionsHref(q, cursor) {
  const p = new URLSearchParams();
  if (q) p.set("q", q);
  if (cursor) p.set("cursor", cursor);
  const qs = p.toString();
  return qs ? `#/?${qs}` : "#/";
}

async function sessionsPage(route, current) {
  const q = route.params.get("q") || "";
  const cursor = route.params.get("cursor") || "";
  setTitle(q ? `Sessions matching “${q}”` : "Sessions");
  let results = main.querySelector("#session-results");
  if (!results) {
    const input = h("input", {
      id: "session-search", type: "search", name: "q", value: q, autocomplete: "off",
      placeholder: "Search titles, ids and messages", "aria-label": "Search sessions and messages",
    });
    let timer = 0;
    const go = (replace) => {
      const href = sessionsHref(input.value.trim(), "");
      cursorTrail.length = 0;
      if (href === location.hash || (href === "#/" && !location.hash)) return;
      if (replace) {
        history.replaceState(null, "", href);
        render();
      } else {
        location.hash = href;
      }
    };
    input.addEventListener("input", () => {
      clearTimeout(timer);
      timer = setTimeout(() => go(true), 250);
    });
    const form = h("form", { role: "search", class: "search", onsubmit: (e) => {
      e.preventDefault();
      clearTimeout(timer);
      go(false);
    } }, input, h("button", { type: "submit" }, "Search"));
    results = h("div", { id: "session-results", "aria-live": "polite" });
    main.replaceChildren(h("h1", {}, "Sessions"), form, results);
  } else {
    const input = main.querySelector("#session-search");
    if (document.activeElement !== input) input.value = q;
  }
  results.setAttribute("aria-busy", "true");
  const [page, hits] = await Promise.all([
    api.listSessions({ q, cursor, limit: PAGE_SIZE }),
    q && !cursor ? messageHits(q) : null,
  ]);
  if (!current()) return;
  results.removeAttribute("aria-busy");
  results.replaceChildren(sessionsTable(page.sessions, q), pager(q, cursor, page.next_cursor),
    hits || "");
}

// --- content search ----------------------------------------------------------------------------

/** The hits of a full-text search as a section; a refused query says why, never throws. */
async function messageHits(q) {
  let found;
  try {
    found = await api.searchMessages({ q, limit: 20 });
  } catch (err) {
    if (!(err instanceof api.ApiError) || err.status === 401) throw err;
    return h("section", { class: "hits", id: "message-hits" },
      h("h2", {}, "Messages"), h("p", { class: "muted" }, err.message));
  }
  const list = h("ol", { class: "hit-list" });
  for (const hit of found.hits) {
    list.append(h("li", { class: "hit" },
      h("a", { href: `${sessionHref(hit.session_id)}?m=${hit.index}`,
        "data-sid": hit.session_id, "data-index": hit.index },
        h("span", { class: "sid" }, hit.session_id),
        h("span", { class: "muted small" }, ` message #${hit.index + 1} · ${hit.role || "message"}`)),
      h("p", { class: "snippet" }, snippetNodes(hit.snippet))));
  }
  return h("section", { class: "hits", id: "message-hits", "aria-labelledby": "hits-h" },
    h("h2", { id: "hits-h" }, `Messages matching “${q}”`),
    found.hits.length ? list : h("p", { class: "muted empty" }, "No message matches."));
}

const ENTITIES = { "&lt;": "<", "&gt;": ">", "&amp;": "&", "&quot;": "\"", "&#x27;": "'" };

/** The API's snippet (escaped text, <mark> around hits) as text nodes and <mark>s. */
function snippetNodes(snippet) {
  const text = (t) => t.replace(/&(lt|gt|amp|quot|#x27);/g, (e) => ENTITIES[e]);
  const out = [];
  snippet.split(/(<mark>.*?<\/mark>)/s).forEach((piece) => {
    if (piece.startsWith("<mark>") && piece.endsWith("</mark>")) {
      out.push(h("mark", {}, text(piece.slice(6, -7))));
    } else if (piece) {
      out.push(text(piece));
    }
  });
  return out;
}

function sessionsTable(sessions, q) {
  if (!sessions.length) {
    return h("p", { class: "muted empty" }, q ? `No session matches “${q}”.` : "No sessions yet.");
  }
  const body = document.createDocumentFragment();
  for (const s of sessions) {
    body.append(h("tr", { class: s.suspect_shrink ? "suspect" : null, "data-sid": s.session_id },
      h("td", { class: "title" },
        h("a", { href: sessionHref(s.session_id) }, s.title || "(untitled)"),
        h("span", { class: "sid" }, s.session_id),
        s.suspect_shrink ? suspectBadge() : null),
      h("td", { class: "num", "data-label": "messages" }, s.message_count.toLocaleString()),
      h("td", { class: "num", "data-label": "versions" }, s.seq.toLocaleString()),
      h("td", { class: "when", "data-label": "Updated" }, timeEl(s.updated_at))));
  }
  return h("table", { class: "sessions" },
    h("caption", { class: "visually-hidden" }, "Sessions, most recently updated first"),
    h("thead", {}, h("tr", {},
      h("th", { scope: "col" }, "Title"),
      h("th", { scope: "col", class: "num" }, "Messages"),
      h("th", { scope: "col", class: "num" }, "Versions"),
      h("th", { scope: "col" }, "Updated"))),
    h("tbody", {}, body));
}

function suspectBadge() {
  return h("span", { class: "badge suspect", title: "A save dropped messages unexpectedly" },
    "⚠ suspect shrink");
}

function pager(q, cursor, next) {
  const nav = h("nav", { class: "pager", "aria-label": "Pages" });
  if (cursor) {
    const prev = cursorTrail.length ? cursorTrail[cursorTrail.length - 1] : null;
    nav.append(h("a", { href: sessionsHref(q, ""), onclick: () => { cursorTrail.length = 0; } },
      "⇤ First page"));
    if (prev !== null && prev !== "") {
      nav.append(h("a", { href: sessionsHref(q, prev), onclick: () => { cursorTrail.pop(); } },
        "← Previous page"));
    }
  }
  if (next) {
    nav.append(h("a", { href: sessionsHref(q, next), rel: "next", class: "next",
      onclick: () => { cursorTrail.push(cursor); } }, "Next page →"));
  }
  return nav;
}

// --- shared by the session and version pages ----------------------------------------------------

async function loadVersions(sid) {
  return api.listVersions(sid, { limit: VERSION_PAGE });
}

/** The newest suspect shrink that no later restore or recovery resolved, or null. */
function unresolvedShrink(newestFirst) {
  for (const v of newestFirst) {
    if (v.op === "restore" || v.op === "recover") return null;
    if (v.suspect_shrink) return v;
  }
  return null;
}

function timelineSection(sid, newestFirst, current, onMore) {
  const asc = [...newestFirst].reverse();
  const head = newestFirst[0];
  const section = h("section", { class: "panel", "aria-labelledby": "tl-h" },
    h("h2", { id: "tl-h" }, "Timeline ", h("span", { class: "muted small" },
      `${plural(newestFirst.length, "version")}${newestFirst.length && newestFirst.at(-1).seq > 1 ? " (newest)" : ""}`)),
    h("p", { class: "muted small hint" }, "Messages per version. Select a point to open that version."),
    timeline(asc, { sid, current, head: head?.seq }));
  if (onMore && newestFirst.length && newestFirst.at(-1).seq > 1) {
    section.append(h("button", { type: "button", class: "more", onclick: onMore }, "Load older versions"));
  }
  section.append(versionsTable(sid, newestFirst, current));
  return section;
}

function versionsTable(sid, newestFirst, current) {
  const rows = document.createDocumentFragment();
  newestFirst.forEach((v, i) => {
    const prev = newestFirst[i + 1];
    const d = prev ? v.message_count - prev.message_count : null;
    const kind = kindOf(v);
    rows.append(h("tr", { class: `kind-${kind}${v.seq === current ? " current" : ""}` },
      h("td", {}, h("a", { href: versionHref(sid, v.seq), "aria-label": describe(v, prev) }, `v${v.seq}`),
        i === 0 ? h("span", { class: "badge head" }, "head") : null),
      h("td", {}, v.op.replace("_", " ")),
      h("td", { class: "num" }, v.message_count.toLocaleString(),
        d ? h("span", { class: d < 0 ? "delta neg" : "delta pos" }, ` ${d > 0 ? "+" : "−"}${Math.abs(d)}`) : null),
      h("td", {}, kind === "suspect" ? suspectBadge()
        : kind === "intentional" ? h("span", { class: "badge intentional" }, "intentional shrink") : ""),
      h("td", {}, timeEl(v.created_at))));
  });
  return h("details", { class: "versions" },
    h("summary", {}, "All versions as a table"),
    h("div", { class: "scroll-x" }, h("table", { class: "versions" },
      h("thead", {}, h("tr", {}, ["Version", "Change", "Messages", "Flag", "When"].map(
        (t) => h("th", { scope: "col" }, t)))),
      h("tbody", {}, rows))));
}

function metadataBlock(metadata) {
  const keys = Object.keys(metadata || {});
  return h("details", { class: "metadata" },
    h("summary", {}, `Metadata (${plural(keys.length, "key")})`),
    h("pre", { class: "json" }, JSON.stringify(metadata, null, 2)));
}

// --- session page ----------------------------------------------------------------------------

async function sessionPage(route, current, live = false) {
  const { sid } = route;
  const m = route.params.get("m");
  const target = /^\d+$/.test(m || "") ? Number(m) : null;
  const [session, versions] = await Promise.all([api.getSession(sid), loadVersions(sid)]);
  if (!current()) return;
  const title = session.metadata?.title || "(untitled)";
  setTitle(title);
  const shrink = unresolvedShrink(versions);
  const before = shrink && versions.find((v) => v.seq === shrink.seq - 1);
  const loaded = [...versions];
  const tlSlot = h("div", {});
  const drawTl = () => tlSlot.replaceChildren(timelineSection(sid, loaded, null, more));
  const more = async () => {
    const older = await api.listVersions(sid, { limit: VERSION_PAGE, before: loaded.at(-1).seq });
    loaded.push(...older);
    drawTl();
  };
  drawTl();
  fill(main,
    crumbs(["Sessions", "#/"], [title, null]),
    h("header", { class: "page-head" },
      h("h1", {}, title),
      h("p", { class: "facts" },
        h("span", {}, h("code", {}, session.session_id)),
        h("span", {}, plural(session.message_count, "message")),
        h("span", {}, bytes(session.bytes)),
        h("span", {}, `version ${session.seq}`),
        h("span", {}, "updated ", timeEl(session.updated_at)))),
    shrink ? shrinkWarning(sid, shrink, before, session) : null,
    tlSlot,
    h("section", { class: "panel", "aria-labelledby": "msgs-h" },
      h("h2", { id: "msgs-h" }, `Messages (${session.message_count.toLocaleString()})`),
      metadataBlock(session.metadata),
      messageList(session.messages, { reveal: target })));
  const card = target === null ? null : main.querySelector(`article.msg[data-index="${target}"]`);
  if (card) {
    card.classList.add("target");
    if (!live) {
      card.setAttribute("tabindex", "-1");
      card.scrollIntoView({ block: "center" });
      card.focus({ preventScroll: true });
    }
  }
}

/**
 * The "Messages were dropped" box: what recovery would produce (the dropped messages back,
 * plus everything written since), a Recover button, and a two-click restore of the version
 * before the shrink.
 */
function shrinkWarning(sid, shrink, before, session) {
  const box = h("section", { class: "panel warn", role: "note", id: "shrink-warning" },
    h("h2", {}, "Messages were dropped"),
    h("p", {}, `Version ${shrink.seq} (${absTime(shrink.created_at)}) went from `,
      before ? plural(before.message_count, "message") : "more messages",
      ` to ${plural(shrink.message_count, "message")} without saying it meant to.`));
  const recoverSlot = h("div", { class: "recover", "aria-live": "polite" },
    h("p", { class: "muted small" }, "Checking what recovery would bring back…"));
  box.append(recoverSlot);
  if (before) {
    const restoreBox = h("div", { class: "restore" },
      h("p", {},
        h("button", { type: "button", id: "restore",
          onclick: () => confirmRestore(sid, before.seq, before, session.seq, restoreBox) },
        `Restore version ${before.seq}`), " ",
        h("a", { href: versionHref(sid, before.seq) }, `or open version ${before.seq} to compare it first`)));
    box.append(restoreBox);
  }
  api.recover(sid, { dryRun: true }).then((plan) => {
    if (!plan || plan.action !== "would_recover") {
      recoverSlot.replaceChildren(h("p", { class: "muted small" },
        plan?.reason ? `Recovery cannot decide for this session: ${plan.reason}.`
          : "Recovery has nothing to bring back here."));
      return;
    }
    const since = before ? Math.max(plan.to_count - before.message_count, 0) : 0;
    const btn = h("button", { type: "button", id: "recover", class: "primary" }, "Recover");
    btn.onclick = async () => {
      btn.disabled = true;
      try {
        const done = await api.recover(sid);
        if (done && done.new_seq) ownVersions.add(`${sid}@${done.new_seq}`);
        flash = { text: done && done.action === "recovered"
          ? `Recovered: version ${done.new_seq} has ${plural(done.to_count, "message")}.`
          : "Nothing was recovered: the session changed meanwhile. Look again.", kind: done ? "ok" : "warn" };
        render();
      } catch (err) {
        btn.disabled = false;
        recoverSlot.append(h("div", { class: "note error", role: "alert" }, `Recovery failed: ${err.message}`));
      }
    };
    recoverSlot.replaceChildren(h("p", {}, btn, " ",
      h("span", { id: "recover-plan" },
        `makes a new version with ${plural(plan.to_count, "message")}`
        + (since ? `, including the ${plural(since, "message")} written since the drop.` : "."))),
      h("p", { class: "muted small" }, "Nothing is overwritten: the current head stays in the history."));
  }).catch((err) => {
    recoverSlot.replaceChildren(h("p", { class: "muted small" }, `Recovery check failed: ${err.message}`));
  });
  return box;
}

// --- version page ----------------------------------------------------------------------------

async function versionPage(route, current) {
  const { sid, seq } = route;
  const [version, versions] = await Promise.all([api.getVersion(sid, seq), loadVersions(sid)]);
  if (!current()) return;
  const head = versions[0];
  const entry = versions.find((v) => v.seq === seq);
  const sessionTitle = head ? (await headTitle(sid)) : sid;
  if (!current()) return;
  const title = version.metadata?.title || "(untitled)";
  setTitle(`Version ${seq} of ${sessionTitle}`);
  const isHead = head && head.seq === seq;

  const compareSel = h("select", { id: "compare-with", "aria-label": "Compare with version" });
  for (const v of versions) {
    if (v.seq === seq) continue;
    compareSel.append(h("option", { value: v.seq },
      v.seq === head.seq ? `the head (v${v.seq})` : `v${v.seq} · ${v.op.replace("_", " ")} · ${plural(v.message_count, "message")}`));
  }
  const diffBox = h("div", { id: "diff", "aria-live": "polite" });
  let diffAsked = 0; // a slow answer for an earlier choice must not replace a later one
  const showDiff = async () => {
    const mine = ++diffAsked;
    const other = Number(compareSel.value);
    diffBox.setAttribute("aria-busy", "true");
    let view;
    try {
      view = diffView(await api.getDiff(sid, other, seq), seq, other, other === head.seq);
    } catch (err) {
      view = errorPanel(err);
    }
    if (mine !== diffAsked) return;
    diffBox.replaceChildren(view);
    diffBox.removeAttribute("aria-busy");
  };
  compareSel.addEventListener("change", showDiff);

  const restoreBox = h("div", { class: "restore" });
  if (isHead) {
    restoreBox.append(h("p", { class: "muted" }, "This is the current head of the session."));
  } else {
    restoreBox.append(
      h("button", { type: "button", id: "restore", class: "primary",
        onclick: () => confirmRestore(sid, seq, version, head.seq, restoreBox) }, "Restore this version"),
      h("p", { class: "muted small" },
        `Makes a new version v${head.seq + 1} with this version's ${plural(version.message_count, "message")}.`
        + " The current head stays in the history."));
  }

  fill(main,
    crumbs(["Sessions", "#/"], [sessionTitle, sessionHref(sid)], [`Version ${seq}`, null]),
    h("header", { class: "page-head" },
      h("h1", {}, `Version ${seq}`, " ",
        entry ? versionBadge(entry) : null),
      h("p", { class: "facts" },
        entry ? h("span", {}, entry.op.replace("_", " ")) : null,
        entry ? h("span", {}, "saved ", timeEl(entry.created_at)) : null,
        h("span", {}, plural(version.message_count, "message")),
        h("span", {}, `title “${title}”`),
        head ? h("span", {}, isHead ? "current head" : `head is v${head.seq}`) : null),
      restoreBox),
    timelineSection(sid, versions, seq, null),
    versions.length > 1 ? h("section", { class: "panel", "aria-labelledby": "diff-h" },
      h("h2", { id: "diff-h" }, "Compare"),
      h("p", { class: "compare" }, h("label", { for: "compare-with" }, `Version ${seq} compared with `), compareSel),
      diffBox) : null,
    h("section", { class: "panel", "aria-labelledby": "vmsgs-h" },
      h("h2", { id: "vmsgs-h" }, `Messages in version ${seq} (${version.message_count.toLocaleString()})`),
      metadataBlock(version.metadata),
      messageList(version.messages)));
  if (versions.length > 1) await showDiff();
}

async function headTitle(sid) {
  try {
    const meta = await api.getMeta(sid);
    return meta.metadata?.title || sid;
  } catch {
    return sid; // a deleted session has no live head, but its versions still open
  }
}

function versionBadge(v) {
  const kind = kindOf(v);
  if (kind === "suspect") return suspectBadge();
  if (kind === "intentional") return h("span", { class: "badge intentional" }, "intentional shrink");
  if (kind === "restore") return h("span", { class: "badge restore" }, "restore");
  if (kind === "recover") return h("span", { class: "badge recover" }, "recovery");
  return null;
}

function diffView(d, seq, other, otherIsHead) {
  const otherName = otherIsHead ? `the head (v${other})` : `v${other}`;
  const out = h("div", { class: "diff" });
  const same = !d.added.length && !d.removed.length && !Object.keys(d.metadata_changes).length;
  out.append(h("p", { class: "diff-summary" }, same
    ? `No difference: version ${seq} and ${otherName} hold the same messages and metadata.`
    : `${plural(d.common_prefix, "message")} in common; then ${plural(d.added.length, "message")} only in v${seq}`
      + ` and ${plural(d.removed.length, "message")} only in ${otherName}.`));
  const side = (cls, heading, note, msgs) => h("section", { class: `diff-side ${cls}` },
    h("h3", {}, heading), note ? h("p", { class: "muted small" }, note) : null,
    msgs.length
      ? h("div", { class: "messages" }, msgs.map((m, i) => messageCard(m, d.common_prefix + i)))
      : h("p", { class: "muted" }, "None."));
  if (!same) {
    out.append(
      side("added", `Only in version ${seq} (${d.added.length})`,
        otherIsHead && d.added.length ? "Restoring this version brings these back." : "", d.added),
      side("removed", `Only in ${otherName} (${d.removed.length})`,
        otherIsHead && d.removed.length ? "Restoring leaves these in the history, not in the head." : "",
        d.removed));
  }
  const keys = Object.keys(d.metadata_changes);
  if (keys.length) {
    out.append(h("section", { class: "diff-meta" },
      h("h3", {}, `Metadata changes (${keys.length})`),
      h("div", { class: "scroll-x" }, h("table", {},
        h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Key"),
          h("th", { scope: "col" }, `In ${otherName}`), h("th", { scope: "col" }, `In v${seq}`))),
        h("tbody", {}, keys.map((k) => h("tr", {},
          h("th", { scope: "row" }, h("code", {}, k)),
          h("td", {}, metaValue(d.metadata_changes[k].from)),
          h("td", {}, metaValue(d.metadata_changes[k].to)))))))));
  }
  return out;
}

function metaValue(v) {
  if (v === undefined || v === null) return h("span", { class: "muted" }, "(absent)");
  return h("code", {}, typeof v === "string" ? v : JSON.stringify(v));
}

// --- restore ---------------------------------------------------------------------------------

async function confirmRestore(sid, seq, version, headSeq, box) {
  const dialog = document.getElementById("confirm-dialog");
  dialog.querySelector("#confirm-title").textContent = `Restore version ${seq}?`;
  // Messages of the head that the restored version lacks leave the head: say how many.
  let left = "";
  try {
    const d = await api.getDiff(sid, headSeq, seq);
    if (d.removed.length) {
      left = ` The ${plural(d.removed.length, "newer message")} of the head that version ${seq} lacks`
        + " will be in the history only (a Recover keeps them instead).";
    }
  } catch {
    left = "";
  }
  dialog.querySelector("#confirm-text").textContent =
    `The session will get a new version v${headSeq + 1} holding the ${plural(version.message_count, "message")}`
    + ` of version ${seq}. Version ${headSeq}, the current head, stays in the history.${left}`;
  dialog.returnValue = "";
  dialog.onclose = async () => {
    if (dialog.returnValue !== "confirm") return;
    const btn = box.querySelector("#restore");
    btn.disabled = true;
    try {
      const v = await api.restore(sid, seq, headSeq);
      ownVersions.add(`${sid}@${v.seq}`);
      flash = { text: `Restored version ${seq} as version ${v.seq} (${plural(v.message_count, "message")}).`, kind: "ok" };
      // From the session page itself the hash does not change, so draw it again here.
      if (location.hash === sessionHref(sid)) render();
      else location.hash = sessionHref(sid);
    } catch (err) {
      btn.disabled = false;
      box.querySelector(".conflict")?.remove();
      if (err instanceof api.ApiError && (err.status === 412 || err.code === "conflict")) {
        const now = err.currentSeq;
        box.append(h("div", { class: "note warn conflict", role: "alert" },
          h("p", {}, h("strong", {}, "The session has moved on. "),
            `It is now at version ${now ?? "?"}, not ${headSeq} as when this page loaded, so nothing was restored.`
            + " Reload to see the latest versions, then decide again."),
          h("button", { type: "button", id: "reload", onclick: () => render() }, "Reload")));
        box.querySelector("#reload").focus();
      } else {
        box.append(h("div", { class: "note error conflict", role: "alert" },
          `Restore failed: ${err.message}`));
      }
    }
  };
  dialog.showModal();
}

// --- token prompt ----------------------------------------------------------------------------

function askToken(refused) {
  const dialog = document.getElementById("token-dialog");
  const input = dialog.querySelector("input");
  dialog.querySelector(".refused").hidden = !refused;
  input.value = "";
  dialog.returnValue = "";
  return new Promise((resolve) => {
    dialog.onclose = () => {
      updateTokenControl();
      resolve(dialog.returnValue === "ok" && input.value.trim() ? input.value.trim() : null);
    };
    dialog.showModal();
    input.focus();
  });
}

function updateTokenControl() {
  const btn = document.getElementById("forget-token");
  btn.hidden = !api.currentToken();
}

// --- start -----------------------------------------------------------------------------------

api.setTokenPrompt(askToken);
document.getElementById("forget-token").addEventListener("click", () => {
  api.forgetToken();
  updateTokenControl();
  announce("The token was forgotten for this tab.", "info");
});
window.addEventListener("hashchange", () => {
  render().then(() => {
    updateTokenControl();
    const route = parseRoute();
    if (route.page === "session" && route.params.get("m")) return; // focused on that message
    if (route.page !== "sessions") main.focus({ preventScroll: true });
    window.scrollTo(0, 0);
  });
});

// Live updates: a change to what the list or a session page shows redraws it in place
// (same scroll), not while a dialog is open; a burst of changes redraws once.
let liveTimer = 0;
function onChange(change) {
  const route = parseRoute();
  const shown = route.page === "sessions" ? !route.params.get("cursor")
    : route.sid === change.session_id;
  if (!shown) return;
  if (route.page !== "sessions" && !ownVersions.has(`${change.session_id}@${change.seq}`)) {
    announce(change.deleted ? `This session was deleted (version ${change.seq}).`
      : `Session updated: version ${change.seq} (${plural(change.message_count, "message")}).`, "info");
  }
  // A version page is where a restore is decided: it is not redrawn under the reader
  // (a restore from it still checks the head it showed); the note above says what moved.
  if (route.page === "version") return;
  clearTimeout(liveTimer);
  liveTimer = setTimeout(async () => {
    if (document.querySelector("dialog[open]")) return;
    const y = window.scrollY;
    await render({ live: true });
    window.scrollTo(0, y);
    document.dispatchEvent(new CustomEvent("live-update", { detail: change }));
  }, 150);
}

const liveState = document.getElementById("live-state");
render().then(() => {
  updateTokenControl();
  follow({
    onChange,
    onReady: () => { liveState.hidden = false; },
    onDrop: () => { liveState.hidden = true; },
  });
});
