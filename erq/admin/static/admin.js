// erq's status page: fetches page.json every few seconds and draws it.
// Every name from the server goes in as text (textContent), never as markup.
"use strict";

(function () {
  const REFRESH_MS = 5000;
  const SVG = "http://www.w3.org/2000/svg";
  const CHART_W = 160;
  const CHART_H = 36;
  const COLUMNS = [
    ["items", "Depth", count],
    ["bytes", "Bytes", bytes],
    ["in", "In /s", rate],
    ["out", "Out /s", rate],
    ["open", "Open", count],
    ["waiters", "Waiters", count],
    ["oldest", "Oldest", age],
  ];

  function byId(id) {
    return document.getElementById(id);
  }

  function count(n) {
    return n === null || n === undefined ? "–" : n.toLocaleString("en-US");
  }

  function bytes(n) {
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) {
      n /= 1024;
      i += 1;
    }
    return (i === 0 ? String(n) : n.toFixed(n < 10 ? 1 : 0)) + " " + units[i];
  }

  function rate(r) {
    if (r === null || r === undefined) return "–";
    if (r === 0) return "0";
    if (r < 0.1) return "<0.1";
    return r < 100 ? r.toFixed(1) : Math.round(r).toLocaleString("en-US");
  }

  function age(s) {
    if (s === null || s === undefined) return "–";
    if (s < 60) return s.toFixed(s < 10 ? 1 : 0) + " s";
    if (s < 3600) return Math.floor(s / 60) + " m " + Math.floor(s % 60) + " s";
    if (s < 86400) return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " m";
    return Math.floor(s / 86400) + " d " + Math.floor((s % 86400) / 3600) + " h";
  }

  function svg(name, attributes) {
    const element = document.createElementNS(SVG, name);
    for (const [key, value] of Object.entries(attributes)) {
      element.setAttribute(key, String(value));
    }
    return element;
  }

  // The stretch of time the charts show, the same for every queue: the
  // server's whole history span, or as much of it as was sampled yet.
  function chartSpan(doc) {
    const first = doc.times.length ? doc.times[0] : doc.time;
    const start = Math.max(doc.time - doc.span, first);
    const length = Math.max(doc.time - start, 2 * doc.interval);
    return { start: doc.time - length, length: length };
  }

  function minutes(seconds) {
    return seconds < 90 ? Math.round(seconds) + " s" : Math.round(seconds / 60) + " min";
  }

  // The queue's depth over that stretch, newest at the right.
  function chart(queue, doc, span) {
    const box = svg("svg", {
      viewBox: "0 0 " + CHART_W + " " + CHART_H,
      preserveAspectRatio: "none",
      class: "spark",
      role: "img",
    });
    // Its depths are those of the last samples; then the depth now.
    const offset = doc.times.length - queue.history.length;
    const points = queue.history
      .map((depth, i) => [doc.times[offset + i], depth])
      .concat([[doc.time, queue.items]]);
    const top = Math.max(1, ...points.map((p) => p[1]));
    const xy = points.map(([t, depth]) => [
      Math.max(0, ((t - span.start) / span.length) * CHART_W),
      CHART_H - 1 - (depth / top) * (CHART_H - 2),
    ]);
    const line = xy.map(([x, y]) => x.toFixed(1) + "," + y.toFixed(1)).join(" ");
    if (xy.length > 1) {
      const area = xy[0][0].toFixed(1) + "," + CHART_H + " " + line + " " +
        xy[xy.length - 1][0].toFixed(1) + "," + CHART_H;
      box.appendChild(svg("polygon", { points: area, class: "area" }));
      box.appendChild(svg("polyline", { points: line, class: "line" }));
    }
    const title = svg("title", {});
    title.textContent = queue.name + ": depth over the last " +
      minutes(span.length) + ", highest " + count(top);
    box.appendChild(title);
    return box;
  }

  function cell(label, text, className) {
    const td = document.createElement("td");
    td.dataset.label = label;
    if (className) td.className = className;
    td.textContent = text;
    return td;
  }

  function row(queue, doc, span) {
    const tr = document.createElement("tr");
    tr.dataset.queue = queue.name;
    const name = document.createElement("th");
    name.scope = "row";
    name.className = "name";
    name.textContent = queue.name;
    tr.appendChild(name);
    for (const [key, label, format] of COLUMNS) {
      tr.appendChild(cell(label, format(queue[key]), "num " + key));
    }
    const graph = cell("Depth, last " + minutes(span.length), "", "chart");
    graph.appendChild(chart(queue, doc, span));
    tr.appendChild(graph);
    if (queue.waiters === 0 && queue.items > 0 && queue.out === 0) {
      tr.classList.add("stalled");
    }
    return tr;
  }

  function render(doc) {
    byId("version").textContent = doc.version;
    const status = byId("status");
    status.textContent = doc.status;
    status.className = "status " + doc.status.toLowerCase();
    byId("uptime").textContent = age(doc.uptime);
    byId("queue-count").textContent = count(doc.queues.length);
    byId("items").textContent = count(doc.items);
    byId("bytes").textContent = bytes(doc.bytes);
    byId("connections").textContent = count(doc.connections);
    const span = chartSpan(doc);
    byId("chart-title").textContent = "Depth, last " + minutes(span.length);
    const rows = doc.queues.map((queue) => row(queue, doc, span));
    if (rows.length === 0) {
      const tr = document.createElement("tr");
      tr.className = "empty";
      const td = document.createElement("td");
      td.colSpan = COLUMNS.length + 2;
      td.textContent = "No queues yet: a set creates one.";
      tr.appendChild(td);
      rows.push(tr);
    }
    byId("queues").replaceChildren(...rows);
    document.title = "erq " + doc.status + " · " + doc.queues.length + " queues";
  }

  async function refresh() {
    const updated = byId("updated");
    try {
      const response = await fetch("page.json", { cache: "no-store" });
      if (!response.ok) throw new Error("HTTP " + response.status);
      render(await response.json());
      updated.textContent = "Updated " + new Date().toLocaleTimeString();
      updated.classList.remove("stale");
    } catch (error) {
      updated.textContent = "Cannot reach the server (" + error.message + "); retrying";
      updated.classList.add("stale");
    }
  }

  refresh();
  setInterval(refresh, REFRESH_MS);
})();
