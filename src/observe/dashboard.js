// The Cairn dashboard: polls /cairn/status.json every second and draws it. Members the node
// reports down, and members this page saw before that are missing now, are shown as down.
// The mesh picture joins every two live members that talk (either lists the other in its
// `links`; a member that did not say this time keeps its last answer).
// The shard map shows which member leads and which follow each shard this node hosts, and
// the leader moves seen between polls. Supervision trees are collapsible: a supervisor's
// children are drawn only while it is expanded (a click on it), and what is expanded stays
// so across polls; `/cairn/dashboard#expand` expands every tree. The hottest objects are the
// node's sampled top list.
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
  const at = new Map(members.map((m, i) => [m.node, i]));
  const drawn = new Set();
  members.forEach((m, i) => {
    if (m.state !== "up") return;
    for (const peer of m.links || []) {
      const j = at.get(peer);
      if (j === undefined || j === i || members[j].state !== "up") continue;
      const pair = [m.name, members[j].name].sort().join(" ");
      if (drawn.has(pair)) continue;
      drawn.add(pair);
      const line = document.createElementNS(ns, "line");
      line.setAttribute("x1", pos[i][0]); line.setAttribute("y1", pos[i][1]);
      line.setAttribute("x2", pos[j][0]); line.setAttribute("y2", pos[j][1]);
      line.setAttribute("stroke", m.self || members[j].self ? "#57606a" : "#afb8c1");
      line.setAttribute("data-link", pair);
      svg.appendChild(line);
    }
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

// The shard map: one column per shard hosted here, one row per member; a member's cell is
// filled in its colour where it leads, faint where it follows, outlined where it learns.
const PALETTE = ["#0969da", "#2da44e", "#bf3989", "#bc4c00", "#8250df", "#1b7c83", "#9a6700", "#cf222e"];
let prevLeaders = new Map(); // shard -> the last leader seen (a shard between leaders keeps it)
const moves = []; // latest leader moves, newest last
let movesSeen = 0; // leader moves seen since the page was loaded
const MOVES_KEPT = 12;

function drawShards(sh, members) {
  const svg = document.getElementById("shardmap");
  const summary = document.getElementById("shard-summary");
  while (svg.firstChild) svg.removeChild(svg.firstChild);
  const mtable = document.querySelector("#shard-members tbody");
  mtable.textContent = "";
  if (!sh) { summary.textContent = "(no shard driver on this node)"; return; }
  summary.textContent = sh.map.length + " of " + sh.count + " shards hosted here · replication " +
    sh.replication + " · leads " + sh.led + " · leader changes seen " + sh.leader_changes;
  const name = (id) => { const m = seen.get(id); return m ? m.name : id; };
  const rows = [...new Set(members.map((m) => m.node).concat(
    sh.map.flatMap((v) => v.voters.concat(v.learners))))]
    .sort((a, b) => name(a).localeCompare(name(b)));
  const colour = new Map(rows.map((id, i) => [id, PALETTE[i % PALETTE.length]]));
  const ns = "http://www.w3.org/2000/svg";
  const cw = 6, rh = 18, left = 60, top = 4;
  svg.setAttribute("width", left + Math.max(sh.map.length, 1) * cw + 4);
  svg.setAttribute("height", top + rows.length * rh + 4);
  rows.forEach((id, r) => {
    const t = document.createElementNS(ns, "text");
    t.setAttribute("x", 0); t.setAttribute("y", top + r * rh + 13);
    t.textContent = name(id);
    svg.appendChild(t);
  });
  const led = new Map(), followed = new Map();
  sh.map.forEach((v, c) => {
    const before = prevLeaders.get(v.shard);
    const moved = before !== undefined && v.leader != null && before !== v.leader;
    if (v.leader != null) prevLeaders.set(v.shard, v.leader);
    if (moved) {
      moves.push({ seq: ++movesSeen, shard: v.shard, from: name(before), to: name(v.leader),
        text: new Date().toLocaleTimeString() + " s" + v.shard + ": " + name(before) +
          " \u2192 " + name(v.leader) });
      if (moves.length > MOVES_KEPT) moves.shift();
    }
    const g = document.createElementNS(ns, "g");
    g.setAttribute("data-shard", v.shard);
    g.setAttribute("data-leader", v.leader == null ? "" : name(v.leader));
    g.setAttribute("data-followers", v.voters.concat(v.learners).filter((n) => n !== v.leader).map(name).sort().join(" "));
    const title = document.createElementNS(ns, "title");
    title.textContent = "shard " + v.shard + " (term " + v.term + "): leader " +
      (v.leader == null ? "unknown" : name(v.leader)) + "; voters " + v.voters.map(name).join(", ") +
      (v.learners.length ? "; learners " + v.learners.map(name).join(", ") : "") +
      (v.lag ? "; follower lag " + v.lag : "");
    g.appendChild(title);
    rows.forEach((id, r) => {
      const voter = v.voters.includes(id), learner = v.learners.includes(id);
      if (!voter && !learner) return;
      const rect = document.createElementNS(ns, "rect");
      rect.setAttribute("x", left + c * cw); rect.setAttribute("y", top + r * rh);
      rect.setAttribute("width", cw - 1); rect.setAttribute("height", rh - 2);
      const leads = id === v.leader;
      rect.setAttribute("fill", learner ? "none" : colour.get(id));
      rect.setAttribute("fill-opacity", leads ? 1 : 0.35);
      rect.setAttribute("stroke", leads && moved ? "#000" : (learner ? colour.get(id) : "none"));
      g.appendChild(rect);
      if (leads) led.set(id, (led.get(id) || 0) + 1);
      else followed.set(id, (followed.get(id) || 0) + 1);
    });
    svg.appendChild(g);
  });
  for (const id of rows) {
    const tr = document.createElement("tr");
    tr.setAttribute("data-member", name(id));
    tr.setAttribute("data-led", String(led.get(id) || 0));
    tr.setAttribute("data-followed", String(followed.get(id) || 0));
    const swatch = document.createElement("td");
    swatch.textContent = "\u25a0 " + name(id);
    swatch.style.color = colour.get(id);
    tr.appendChild(swatch);
    cell(tr, String(led.get(id) || 0)); cell(tr, String(followed.get(id) || 0));
    mtable.appendChild(tr);
  }
  const ol = document.getElementById("shard-moves");
  ol.textContent = "";
  for (const m of moves.slice().reverse()) {
    const li = document.createElement("li");
    li.setAttribute("data-seq", m.seq);
    li.setAttribute("data-shard", m.shard);
    li.setAttribute("data-from", m.from);
    li.setAttribute("data-to", m.to);
    li.textContent = m.text;
    ol.appendChild(li);
  }
}

// Supervision trees. Expanded supervisors, by pid (a restarted one comes back collapsed).
const openSups = new Set();

function supNode(sv, label) {
  const d = document.createElement("details");
  d.setAttribute("data-sup", label);
  d.setAttribute("data-pid", sv.pid);
  d.setAttribute("data-strategy", sv.busy ? "" : sv.strategy);
  d.setAttribute("data-restarts", String(sv.restarts || 0));
  const summary = document.createElement("summary");
  const b = document.createElement("b");
  b.textContent = label;
  summary.appendChild(b);
  summary.appendChild(document.createTextNode(" " + sv.pid + (sv.busy ? " \u00b7 busy, not answering" :
    " \u00b7 " + sv.strategy.replace(/_/g, " ") + (sv.dynamic ? " (dynamic)" : "") + " \u00b7 " +
    sv.children_total + (sv.children_total === 1 ? " child" : " children") + " \u00b7 ")));
  if (!sv.busy) {
    const r = document.createElement("span");
    r.textContent = sv.restarts + " restarts";
    if (sv.restarts > 0) r.className = "restarted";
    summary.appendChild(r);
    summary.appendChild(document.createTextNode(" (at most " + sv.max_restarts + " in " + sv.period_ms / 1000 + " s)"));
  }
  d.appendChild(summary);
  const fill = () => {
    if (d.querySelector(":scope > ul")) return;
    const ul = document.createElement("ul");
    for (const c of sv.children || []) {
      const li = document.createElement("li");
      li.setAttribute("data-child", c.id);
      li.setAttribute("data-kind", c.kind);
      li.setAttribute("data-restarts", String(c.restarts));
      if (c.supervisor) {
        li.appendChild(supNode(c.supervisor, c.id));
      } else {
        li.textContent = "\u25cf " + c.id + (c.name ? " \u201c" + c.name + "\u201d" : "") + " " +
          (c.pid || "(not running)") + " \u00b7 " + c.kind + ", " + c.restart +
          (c.kind === "supervisor" && c.pid ? " (its tree is past the page's depth or size bound)" : "") +
          " \u00b7 ";
        const r = document.createElement("span");
        r.textContent = "restarted " + c.restarts + "\u00d7";
        if (c.restarts > 0) r.className = "restarted";
        li.appendChild(r);
      }
      ul.appendChild(li);
    }
    const more = (sv.children_total || 0) - (sv.children || []).length;
    if (more > 0) {
      const li = document.createElement("li");
      li.textContent = "\u2026 and " + more + " more";
      ul.appendChild(li);
    }
    d.appendChild(ul);
  };
  d.addEventListener("toggle", () => {
    if (d.open) { openSups.add(sv.pid); fill(); return; }
    openSups.delete(sv.pid);
    const ul = d.querySelector(":scope > ul");
    if (ul) ul.remove();
  });
  if (openSups.has(sv.pid)) { d.open = true; fill(); }
  return d;
}

function drawSupervision(s) {
  const box = document.getElementById("supervision");
  box.textContent = "";
  const trees = s.supervisors || [];
  document.getElementById("sup-summary").textContent = trees.length ? "(" + s.supervisors_total +
    " supervisors" + (s.supervisors_shown < s.supervisors_total ? ", " + s.supervisors_shown + " shown" : "") +
    "; click one to expand it)" : "";
  if (!trees.length) { box.textContent = "no supervisors on this node"; return; }
  for (const sv of trees) box.appendChild(supNode(sv, sv.name || "supervisor"));
  if (location.hash === "#expand") {
    // Expands what is still closed; what that reveals is expanded at the next poll.
    box.querySelectorAll("details:not([open]) > summary").forEach((el) => el.click());
  }
}

function drawHot(hot) {
  const tbody = document.querySelector("#hot tbody");
  tbody.textContent = "";
  for (const h of hot || []) {
    const tr = document.createElement("tr");
    tr.setAttribute("data-hot", h.key);
    tr.setAttribute("data-class", h.class);
    tr.setAttribute("data-rate", h.rate.toFixed(1));
    cell(tr, h.class + (h.region ? "@" + h.region : "") + "/" + h.key);
    cell(tr, h.rate.toFixed(1));
    cell(tr, String(h.messages));
    tbody.appendChild(tr);
  }
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
    const before = seen.get(m.node);
    const links = m.links != null ? m.links : (before && before.state === "up" ? before.links : null);
    seen.set(m.node, Object.assign({}, m, { state: "up", links }));
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
    // The exact decimal: an incarnation (nanoseconds) is beyond a double's exact integers.
    cell(tr, m.incarnation_exact || (m.incarnation == null ? "-" : String(m.incarnation)));
    cell(tr, m.state, m.state);
    cell(tr, m.state === "up" && m.rtt_ms != null ? m.rtt_ms.toFixed(2) : "-");
    tbody.appendChild(tr);
  }
  document.getElementById("members").setAttribute("data-up", members.filter((m) => m.state === "up").length);
  drawMesh(members);
  drawShards(s.shards, members);
  drawSupervision(s);
  drawHot(s.hot_objects);

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

// The charts, for whoever inspects the page (its test reads their data).
window.dashboardCharts = charts();
poll(window.dashboardCharts);
