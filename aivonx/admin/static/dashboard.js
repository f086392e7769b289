// The dashboard: nodes, strategy and totals polled from the management API, and a small
// SVG chart of requests and p95 latency. No page reload.
"use strict";
(() => {
  const { api, el, ms, ago } = aivonx;
  const POLL_MS = 2000;

  function tags(names, cls) {
    const box = el("div", { class: "tags" });
    for (const name of names) box.append(el("span", { class: "tag " + cls, text: name }));
    if (!names.length) box.append("–");
    return box;
  }

  function renderNodes(nodes) {
    const body = document.getElementById("nodes");
    body.replaceChildren();
    if (!nodes.length) {
      body.append(el("tr", {}, el("td", { colspan: "8", class: "muted", text: "No node yet: add one on the Nodes page." })));
      return;
    }
    for (const node of nodes) {
      body.append(el("tr", { "data-node": node.name },
        el("td", {}, el("strong", { text: node.name }), el("br"), el("span", { class: "muted small", text: node.base_url })),
        el("td", {}, el("span", { class: "pool pool-" + node.pool, text: node.pool })),
        el("td", { text: ms(node.latency_ms) }),
        el("td", { class: "active-requests", text: String(node.active_requests) }),
        el("td", {}, tags(node.models, "")),
        el("td", {}, tags(node.loaded_models, "loaded")),
        el("td", { class: "error-text", text: node.last_error || "" }),
        el("td", { text: ago(node.last_check) })));
    }
  }

  function renderStats(stats) {
    document.getElementById("stat-rpm").textContent = stats.requests_per_minute.toFixed(1);
    document.getElementById("stat-requests").textContent = stats.requests;
    document.getElementById("stat-errors").textContent = stats.errors + (stats.client_errors ? ` (+${stats.client_errors} 4xx)` : "");
    document.getElementById("stat-latency").textContent = ms(stats.latency_ms.p50) + " / " + ms(stats.latency_ms.p95);
    document.getElementById("stat-ttfb").textContent = ms(stats.first_byte_ms.p50) + " / " + ms(stats.first_byte_ms.p95);
    document.getElementById("stats-scope").textContent = `Totals over the last ${stats.window_seconds / 60} minutes, `
      + (stats.shared ? "for every worker and instance (Redis)." : "for this process (no Redis).");
    renderChart(stats.series);
  }

  const SVG = "http://www.w3.org/2000/svg";
  function svg(tag, attrs, text) {
    const node = document.createElementNS(SVG, tag);
    for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function renderChart(series) {
    const chart = document.getElementById("chart");
    const W = 960, H = 170, left = 34, right = 44, top = 8, bottom = 20;
    const width = W - left - right, height = H - top - bottom;
    const maxRequests = Math.max(1, ...series.map((p) => p.requests));
    const latencies = series.map((p) => p.p95_ms).filter((v) => v !== null);
    const maxLatency = Math.max(1, ...latencies);
    const step = width / series.length;
    chart.replaceChildren(
      svg("line", { class: "axis", x1: left, y1: top + height, x2: left + width, y2: top + height }),
      svg("text", { x: left - 4, y: top + 8, "text-anchor": "end" }, String(maxRequests)),
      svg("text", { x: left - 4, y: top + height, "text-anchor": "end" }, "0"),
      svg("text", { x: left + width + 4, y: top + 8 }, ms(maxLatency)),
      svg("text", { x: left, y: H - 4 }, "-15 min"),
      svg("text", { x: left + width, y: H - 4, "text-anchor": "end" }, "now"));
    const points = [];
    series.forEach((point, index) => {
      const x = left + index * step;
      const barHeight = (point.requests / maxRequests) * height;
      const errHeight = (point.errors / maxRequests) * height;
      const title = `${new Date(point.time).toLocaleTimeString()}: ${point.requests} requests, ${point.errors} errors, p95 ${ms(point.p95_ms)}`;
      const bar = svg("rect", { class: "bar", x: x + 1, y: top + height - barHeight, width: Math.max(1, step - 2), height: barHeight });
      bar.append(svg("title", {}, title));
      chart.append(bar);
      if (errHeight > 0) chart.append(svg("rect", { class: "bar err", x: x + 1, y: top + height - errHeight, width: Math.max(1, step - 2), height: errHeight }));
      if (point.p95_ms !== null) points.push(`${(x + step / 2).toFixed(1)},${(top + height - (point.p95_ms / maxLatency) * height).toFixed(1)}`);
    });
    if (points.length > 1) chart.append(svg("polyline", { class: "line", points: points.join(" ") }));
    else if (points.length === 1) {
      const [cx, cy] = points[0].split(",");
      chart.append(svg("circle", { cx, cy, r: 3, fill: "#b45309" }));
    }
  }

  async function refresh() {
    try {
      const [state, stats] = await Promise.all([api("/api/proxy/state"), api("/api/proxy/stats")]);
      if (state.ok) {
        const body = await state.json();
        document.getElementById("strategy").textContent = body.strategy;
        renderNodes(body.nodes);
      }
      if (stats.ok) renderStats(await stats.json());
      document.getElementById("updated").textContent = new Date().toLocaleTimeString();
    } catch (error) {
      document.getElementById("updated").textContent = "failed: " + error.message;
    }
  }

  refresh();
  setInterval(() => { if (!document.hidden) refresh(); }, POLL_MS);
})();
