// Pull a model with a live progress bar per node (the management API streams NDJSON progress,
// read here line by line with fetch + ReadableStream), and delete a model from every node.
"use strict";
(() => {
  const { api, el, showErrors } = aivonx;
  const form = document.getElementById("pull-form");

  function bar(box, node) {
    let row = box.querySelector(`.progress[data-node="${CSS.escape(node)}"]`);
    if (!row) {
      row = el("div", { class: "progress", "data-node": node },
        el("div", { class: "text" }, el("strong", { text: node }), " ", el("span", { class: "status", text: "starting" })),
        el("div", { class: "track" }, el("div", { class: "bar" })));
      box.append(row);
    }
    return row;
  }

  // The API holds each node's own `success` back and ends with one line for all nodes:
  // `success`, or an `error` that names each node that failed ("gpu2: ...").
  function finish(box, last) {
    box.querySelectorAll(".progress").forEach((row) => {
      const failed = last.error && last.error.includes(row.dataset.node + ":");
      row.classList.add(failed ? "failed" : "done");
      if (!failed) {
        row.querySelector(".bar").style.width = "100%";
        row.querySelector(".status").textContent = "success";
      }
    });
  }

  function show(box, line) {
    if (!line.node) return; // the final line: see finish()
    const row = bar(box, line.node);
    let text = line.error ? "error: " + line.error : line.status || "";
    if (line.total) {
      const percent = Math.min(100, Math.round((100 * (line.completed || 0)) / line.total));
      row.querySelector(".bar").style.width = percent + "%";
      text += ` ${percent}%`;
    }
    if (line.status === "success") {
      row.classList.add("done");
      row.querySelector(".bar").style.width = "100%";
    }
    if (line.error) row.classList.add("failed");
    row.querySelector(".status").textContent = text;
  }

  async function pull(event) {
    event.preventDefault();
    const status = document.getElementById("pull-status");
    const box = document.getElementById("pull-progress");
    const button = document.getElementById("pull-button");
    const body = { model: form.model.value.trim() };
    if (form.node_id.value) body.node_id = Number(form.node_id.value);
    showErrors(form, null);
    box.replaceChildren();
    status.textContent = "pulling…";
    status.className = "muted";
    button.disabled = true;
    try {
      const response = await api("/api/proxy/pull", {
        method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
      });
      if (!response.ok) {
        const problem = await response.json();
        if (!showErrors(form, problem)) status.textContent = problem.detail;
        else status.textContent = "";
        status.className = "error";
        return;
      }
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      let buffered = "";
      let last = null;
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffered += decoder.decode(value, { stream: true });
        const lines = buffered.split("\n");
        buffered = lines.pop();
        for (const text of lines) {
          if (!text.trim()) continue;
          last = JSON.parse(text);
          show(box, last);
        }
      }
      if (last && !last.node) {
        finish(box, last);
        refreshList();
      }
      if (last && last.status === "success") {
        status.textContent = `${body.model}: success`;
        status.className = "ok";
      } else {
        status.textContent = `${body.model}: ${(last && last.error) || "the stream ended early"}`;
        status.className = "error";
      }
    } catch (error) {
      status.textContent = "pull failed: " + error.message;
      status.className = "error";
    } finally {
      button.disabled = false;
    }
  }

  // After a pull the list shows the new model without a reload (the bars stay).
  async function refreshList() {
    const response = await api("/api/proxy/state");
    if (!response.ok) return;
    const admin = Boolean(form);
    const body = document.querySelector("#model-list tbody");
    body.replaceChildren(...(await response.json()).models.map((m) => {
      const row = el("tr", { "data-model": m.model },
        el("td", { text: m.model }), el("td", { text: m.nodes.join(", ") }), el("td", { text: m.active_nodes.join(", ") || "–" }));
      if (admin) {
        const button = el("button", { type: "button", class: "danger delete-model", "data-model": m.model, text: "Delete" });
        button.addEventListener("click", remove);
        row.append(el("td", {}, button));
      }
      return row;
    }));
  }

  async function remove(event) {
    const model = event.target.dataset.model;
    if (!window.confirm(`Delete ${model} from every node?`)) return;
    const status = document.getElementById("delete-status");
    const response = await api("/api/proxy/models/" + encodeURIComponent(model).replace(/%2F/g, "/"), { method: "DELETE" });
    const answer = await response.json();
    if (response.ok) {
      const failed = Object.entries(answer.failed);
      status.textContent = `${model} deleted from ${answer.deleted_from.join(", ") || "no node"}`
        + (failed.length ? `; failed on ${failed.map(([n, e]) => n + ": " + e).join(", ")}` : "");
      status.className = failed.length ? "error" : "muted";
      if (!failed.length) event.target.closest("tr").remove();
    } else {
      status.textContent = answer.detail;
      status.className = "error";
    }
  }

  if (form) form.addEventListener("submit", pull);
  document.querySelectorAll(".delete-model").forEach((button) => button.addEventListener("click", remove));
})();
