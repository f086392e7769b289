// The log viewer: GET /api/logs with the form's filters, newest first; "Older entries" pages
// on with the answer's `next`; live tail polls `after=<latest>` and puts new lines on top.
"use strict";
(() => {
  const { api, el, ms, showErrors } = aivonx;
  const form = document.getElementById("log-filter");
  const rows = document.getElementById("log-rows");
  const older = document.getElementById("log-older");
  const tail = document.getElementById("live-tail");
  const errorLine = document.getElementById("log-error");
  const TAIL_MS = 2000;
  let next = null;
  let latest = null;
  let shown = 0;
  let timer = null;
  let generation = 0; // a newer search makes the answers of older requests stale

  function query(extra) {
    const params = new URLSearchParams();
    for (const name of ["source", "level", "q", "model", "node", "status"]) {
      const value = form.elements[name].value.trim();
      if (value) params.set(name, value);
    }
    for (const name of ["since", "until"]) {
      const value = form.elements[name].value;
      if (value) params.set(name, new Date(value).toISOString()); // the browser's time zone -> UTC
    }
    for (const [key, value] of Object.entries(extra || {})) params.set(key, value);
    return params;
  }

  function row(entry) {
    const time = entry.time ? new Date(entry.time) : null;
    const line = el("tr", { class: `entry level-${entry.level}` + (entry.malformed ? " malformed" : ""), "data-model": entry.model || "" },
      el("td", { text: time && !isNaN(time) ? time.toLocaleString() : "–" }),
      el("td", { text: entry.malformed ? "malformed" : entry.level || "" }),
      el("td", { text: entry.message || "" }),
      el("td", { text: entry.model || "" }),
      el("td", { text: entry.node || "" }),
      el("td", { text: entry.status === undefined || entry.status === null ? "" : String(entry.status) }),
      el("td", { text: entry.duration_ms === undefined ? "" : ms(entry.duration_ms) }),
      el("td", { class: "small", text: entry.request_id || "" }));
    line.addEventListener("click", () => {
      const open = line.nextElementSibling;
      if (open && open.classList.contains("detail")) { open.remove(); return; }
      const detail = { ...entry };
      delete detail.cursor;
      line.after(el("tr", { class: "detail" }, el("td", { colspan: "8" }, el("pre", { text: JSON.stringify(detail, null, 2) }))));
    });
    return line;
  }

  async function fetchPage(extra) {
    const response = await api("/api/logs?" + query(extra));
    const answer = await response.json();
    if (!response.ok) {
      if (!showErrors(form, answer)) errorLine.textContent = answer.detail;
      return null;
    }
    showErrors(form, null);
    errorLine.textContent = "";
    return answer;
  }

  function count() {
    document.getElementById("log-count").textContent = shown ? `${shown} ${shown === 1 ? "entry" : "entries"} shown` : "No entry matches.";
  }

  async function search(event) {
    if (event) event.preventDefault();
    const mine = ++generation;
    const page = await fetchPage({ limit: 100 });
    if (!page || mine !== generation) return;
    rows.replaceChildren(...page.entries.map(row));
    shown = page.entries.length;
    next = page.next;
    latest = page.latest;
    older.hidden = !next;
    count();
  }

  async function loadOlder() {
    if (!next) return;
    const mine = generation;
    const page = await fetchPage({ limit: 100, before: next });
    if (!page || mine !== generation) return;
    rows.append(...page.entries.map(row));
    shown += page.entries.length;
    next = page.next;
    older.hidden = !next;
    count();
  }

  async function poll() {
    if (!latest) { await search(); return; }
    const mine = generation;
    const page = await fetchPage({ limit: 500, after: latest });
    if (!page || mine !== generation) return;
    latest = page.latest;
    if (page.entries.length) {
      rows.prepend(...page.entries.map(row));
      shown += page.entries.length;
      count();
    }
  }

  function toggleTail() {
    if (timer) { clearInterval(timer); timer = null; }
    if (tail.checked) timer = setInterval(() => { if (!document.hidden) poll(); }, TAIL_MS);
  }

  form.addEventListener("submit", search);
  older.addEventListener("click", loadOlder);
  tail.addEventListener("change", toggleTail);
  search();
})();
