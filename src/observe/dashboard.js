// The Cairn dashboard: polls /cairn/status.json every second and draws it. Members the node
// reports down, and members this page saw before that are missing now, are shown as down.
"use strict";
const POLL_MS = 1000;
const KEEP = 300; // samples in the charts (5 minutes)
const seen = new Map(); // node id -> last member record
let prev = null;
const series = { t: [], polls: [], handled: [], commits: [], commitMs: [], rssMb: [] };

function charts() {
  const opts = (title, labels) => ({
    title, width: 330, height: 200,
    series: [{}].concat(labels.map((l, i) => ({ label: l, stroke: ["#0969da", "#bf3989"][i] }))),
  });
  return {
    rate: new uPlot(opts("per second", ["process turns", "object messages"]), [[], [], []],
      document.getElementById("chart-rate")),
    commit: new uPlot(opts("storage", ["commits/s", "avg commit ms"]), [[], [], []],
      document.getElementById("chart-commit")),
    memory: new uPlot(opts("memory", ["resident MB"]), [[], []],
      document.getElementById("chart-memory")),
  };
}

function cell(tr, text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  tr.appendChild(td);
}

function drawMesh(members) {
  const svg = document.getElementById("mesh");
  while (svg.firstChild) svg.removeChild(svg.firstChild);
  const ns = "http://www.w3.org/2000/svg";
  const n = members.length, cx = 180, cy = 150, r = n > 1 ? 100 : 0;
  const pos = members.map((m, i) => [cx + r * Math.cos(2 * Math.PI * i / n - Math.PI / 2),
                                     cy + r * Math.sin(2 * Math.PI * i / n - Math.PI / 2)]);
  const me = members.findIndex((m) => m.self);
  members.forEach((m, i) => {
    if (i === me || me < 0 || m.state !== "up" || !m.connected) return;
    const line = document.createElementNS(ns, "line");
    line.setAttribute("x1", pos[me][0]); line.setAttribute("y1", pos[me][1]);
    line.setAttribute("x2", pos[i][0]); line.setAttribute("y2", pos[i][1]);
    line.setAttribute("stroke", "#8c959f");
    svg.appendChild(line);
  });
  members.forEach((m, i) => {
    const c = document.createElementNS(ns, "circle");
    c.setAttribute("cx", pos[i][0]); c.setAttribute("cy", pos[i][1]); c.setAttribute("r", 16);
    c.setAttribute("fill", m.state === "up" ? (m.self ? "#0969da" : "#2da44e") : "#cf222e");
    c.setAttribute("data-member", m.name);
    svg.appendChild(c);
    const t = document.createElementNS(ns, "text");
    t.setAttribute("x", pos[i][0]); t.setAttribute("y", pos[i][1] + 30);
    t.setAttribute("text-anchor", "middle");
    t.textContent = m.name + (m.region ? " (" + m.region + ")" : "");
    svg.appendChild(t);
  });
}

function render(s, ch) {
  document.getElementById("title").textContent = "Cairn node " + s.name;
  document.getElementById("subtitle").textContent =
    "id " + s.node + (s.region ? " · region " + s.region : "") + (s.listen ? " · " + s.listen : "");
  // Members: live ones from the node's view, earlier ones kept as down.
  const live = new Set();
  for (const m of (s.mesh ? s.mesh.members : [])) {
    if (m.state === "down") {
      if (!seen.has(m.node)) seen.set(m.node, Object.assign({}, m));
      continue;
    }
    live.add(m.node);
    seen.set(m.node, Object.assign({}, m, { state: "up" }));
  }
  for (const [id, m] of seen) if (!live.has(id)) m.state = "down";
  const members = [...seen.values()].sort((a, b) => a.name.localeCompare(b.name));
  const tbody = document.querySelector("#members tbody");
  tbody.textContent = "";
  for (const m of members) {
    const tr = document.createElement("tr");
    tr.setAttribute("data-member", m.name);
    tr.setAttribute("data-state", m.state);
    cell(tr, m.name + (m.self ? " (this node)" : ""));
    cell(tr, m.region || "-");
    cell(tr, m.incarnation == null ? "-" : String(m.incarnation));
    cell(tr, m.state, m.state);
    tbody.appendChild(tr);
  }
  document.getElementById("members").setAttribute("data-up", members.filter((m) => m.state === "up").length);
  drawMesh(members);

  const dt = prev ? Math.max((s.time_ms - prev.time_ms) / 1000, 0.001) : null;
  const rate = (now, before) => (dt ? (now - before) / dt : 0);
  const classes = Object.entries(s.objects).map(([name, c]) => ({
    name, c, msgs: prev && prev.objects[name] ? rate(c.handler_count, prev.objects[name].handler_count) : 0,
  })).sort((a, b) => b.msgs - a.msgs || b.c.active - a.c.active);
  const cbody = document.querySelector("#classes tbody");
  cbody.textContent = "";
  for (const { name, c, msgs } of classes) {
    const tr = document.createElement("tr");
    cell(tr, name); cell(tr, String(c.active)); cell(tr, msgs.toFixed(1));
    cell(tr, String(c.activations)); cell(tr, String(c.evictions)); cell(tr, String(c.handler_failures));
    cbody.appendChild(tr);
  }
  const sch = document.querySelector("#scheduler tbody");
  sch.textContent = "";
  for (const k of ["workers", "processes", "run_queue", "spawns", "steals", "parks", "full_refusals"]) {
    const tr = document.createElement("tr");
    cell(tr, k); cell(tr, String(s.scheduler[k]));
    sch.appendChild(tr);
  }

  if (prev) {
    const handled = (o) => Object.values(o.objects).reduce((n, c) => n + c.handler_count, 0);
    const commits = s.storage.commit_count - prev.storage.commit_count;
    series.t.push(s.time_ms / 1000);
    series.polls.push(rate(s.scheduler.polls, prev.scheduler.polls));
    series.handled.push(rate(handled(s), handled(prev)));
    series.commits.push(commits / dt);
    series.rssMb.push(s.rss_bytes == null ? null : s.rss_bytes / 1048576);
    series.commitMs.push(commits > 0 ? (s.storage.commit_sum_us - prev.storage.commit_sum_us) / commits / 1000 : null);
    for (const k in series) if (series[k].length > KEEP) series[k].shift();
    ch.rate.setData([series.t, series.polls, series.handled]);
    ch.commit.setData([series.t, series.commits, series.commitMs]);
    ch.memory.setData([series.t, series.rssMb]);
  }
  prev = s;
}

async function poll(ch) {
  try {
    const r = await fetch("/cairn/status.json", { cache: "no-store" });
    render(await r.json(), ch);
    document.body.setAttribute("data-polls", String(Number(document.body.getAttribute("data-polls") || 0) + 1));
  } catch (e) {
    document.getElementById("subtitle").textContent = "node unreachable: " + e;
  }
  setTimeout(() => poll(ch), POLL_MS);
}

poll(charts());
