// The live change feed: one stream of /api/events per tab, read with fetch so that the
// bearer token goes in a header (EventSource cannot send one). Reconnects by itself
// with Last-Event-ID, so no move is missed while the connection was down.

import { currentToken } from "./api.js";

const RETRY_MS = [500, 1000, 2000, 5000];

/** Parse one SSE event block (lines without the blank line) into {id, event, data}. */
function parseBlock(block) {
  const ev = { id: null, event: "message", data: [] };
  for (const line of block.split("\n")) {
    if (!line || line.startsWith(":")) continue; // a heartbeat comment
    const i = line.indexOf(":");
    const key = i < 0 ? line : line.slice(0, i);
    const value = i < 0 ? "" : line.slice(i + 1).replace(/^ /, "");
    if (key === "data") ev.data.push(value);
    else if (key === "id") ev.id = value;
    else if (key === "event") ev.event = value;
  }
  return ev.data.length || ev.id !== null ? { ...ev, data: ev.data.join("\n") } : null;
}

/**
 * Follow every change of the store: onChange(change) per pointer move, onReady() each time
 * the stream (re)connects, onDrop() each time it is lost. Returns a function that stops.
 */
export function follow({ onChange, onReady = () => {}, onDrop = () => {} }) {
  let last = null;
  let stopped = false;
  let attempt = 0;
  let controller = null;

  async function connect() {
    while (!stopped) {
      controller = new AbortController();
      const headers = { Accept: "text/event-stream" };
      const token = currentToken();
      if (token) headers.Authorization = `Bearer ${token}`;
      if (last !== null) headers["Last-Event-ID"] = last;
      try {
        const res = await fetch("/api/events", { headers, cache: "no-store", signal: controller.signal });
        if (!res.ok || !res.body) throw new Error(`HTTP ${res.status}`);
        attempt = 0;
        const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
        let buf = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buf += value.replace(/\r\n?/g, "\n");
          let cut;
          while ((cut = buf.indexOf("\n\n")) >= 0) {
            const ev = parseBlock(buf.slice(0, cut));
            buf = buf.slice(cut + 2);
            if (!ev) continue;
            if (ev.id !== null) last = ev.id;
            if (ev.event === "ready") onReady();
            else if (ev.event === "message") {
              try {
                onChange(JSON.parse(ev.data));
              } catch {
                // a malformed event is skipped; the next one still arrives
              }
            }
          }
        }
      } catch {
        if (stopped) return;
      }
      onDrop();
      // Dropped (server restart, network, 401 before a token is given): try again later.
      await new Promise((r) => setTimeout(r, RETRY_MS[Math.min(attempt++, RETRY_MS.length - 1)]));
    }
  }

  connect();
  return () => {
    stopped = true;
    controller?.abort();
  };
}
