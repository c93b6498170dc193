"use strict";
// The demo page: join a room over a WebSocket, chat, see each room's
// members and their joins and leaves streamed from one node's /api/events
// (Server-Sent Events), and poll every node's /api/presence to show the
// live counts. URLs are relative, so the page works on a node
// ("api/presence") and on the supervisor of -nodes ("node/2/api/presence").
// URL parameters: room, name, tenant, node (with -nodes), autojoin=1 to
// join at once, bots=N to add N bots after joining.

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const POLL_MS = 500;

let info = null;          // GET api/info
let nodes = [];           // {index, instance, state, base}
const rooms = new Set();  // rooms on display
let conn = null;          // our chat connection: {ws, room, node, user, opened}
let bots = [];            // extra connections opened with "+5 bots"
let botSeq = 0;
let botRefusal = "";      // why the last refused bot was refused
let ghostPolls = 0;       // consecutive polls that saw counts of gone nodes
// Presence, from the event stream: room -> {seq, users, members: Map(user
// -> {connections, meta})}. seq is the room's last event applied.
const presence = new Map();
let stream = null;        // {es, node, key}: the EventSource of api/events
const MAX_STREAM_ROOMS = 100; // wsconn's limit on one stream

async function getJSON(url, opts) {
  const r = await fetch(url, { cache: "no-store", ...opts });
  if (!r.ok) throw new Error(`${r.status} ${(await r.text()).trim()}`);
  return r.json();
}

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c);
  return e;
}

// short shows random (UUID) instance IDs by their start, names in full.
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const short = (id) => (id && UUID.test(id) ? `${id.slice(0, 8)}…` : id);
const secs = (ms) => (ms >= 1000 ? `${ms / 1000}s` : `${ms}ms`);

// loadInfo reads the settings and, with -nodes, the nodes and their state.
async function loadInfo() {
  info = await getJSON("api/info");
  nodes = info.nodes
    ? info.nodes.map((n) => ({ ...n, base: `node/${n.index}/` }))
    : [{ index: 0, instance: info.instance, state: "up", base: "" }];
}

function showSetup() {
  const lax = info.lax.length ? info.lax.join(", ") : "none";
  const cap = info.tenant_cap ? `${info.tenant_cap} per tenant` : "none";
  $("setup").textContent =
    `Redis: ${info.redis} · namespace ${info.namespace} · dead-instance threshold ${secs(info.threshold_ms)}` +
    ` · heartbeat ${secs(info.heartbeat_ms)} · lax rooms: ${lax} · cap: ${cap}`;
  if (!info.nodes) {
    $("node-line").hidden = false;
    $("node-name").textContent = info.instance;
  }
  showEndpoints();
  if (info.nodes) {
    $("node-label").hidden = false;
    for (const n of nodes) $("node").append(el("option", { value: n.index }, n.instance));
    const want = params.get("node");
    if (want) $("node").value = want;
  }
}

// showEndpoints lists what this server serves (info.endpoints), linking
// the pages one can simply open.
function showEndpoints() {
  $("endpoints-of").textContent = info.nodes ? "of the supervisor" : `of ${info.instance}`;
  $("node-endpoints-note").hidden = !info.nodes;
  $("endpoints-body").replaceChildren(...(info.endpoints || []).map((e) => {
    const rel = e.path.replace(/^\//, "");
    const plain = e.method === "GET" && !/[{?]/.test(e.path);
    return el("tr", {},
      el("td", { class: "muted" }, e.method),
      el("td", {}, plain ? el("a", { href: rel || "./" }, el("code", {}, e.path)) : el("code", {}, e.path)),
      el("td", {}, e.what));
  }));
}

// laxRoom tells whether room matches a -lax glob (Go's path.Match syntax).
function laxRoom(room) {
  return info.lax.some((p) => {
    const re = p.replace(/[.+^${}()|\\]/g, "\\$&").replace(/\*/g, "[^/]*").replace(/\?/g, "[^/]");
    try { return new RegExp(`^${re}$`).test(room); } catch { return false; }
  });
}

// ---- joining and chatting ----

function selectedNode() {
  return nodes.find((n) => String(n.index) === $("node").value) || nodes[0];
}

function wsURL(node, room, user, tenant) {
  const u = new URL(`${node.base}ws/${encodeURIComponent(room)}`, location.href);
  if (user) u.searchParams.set("user", user);
  if (tenant) u.searchParams.set("tenant", tenant);
  u.protocol = u.protocol === "https:" ? "wss:" : "ws:";
  return u;
}

function join(ev) {
  if (ev) ev.preventDefault();
  leave();
  const room = $("room").value.trim();
  if (!room) return;
  const node = selectedNode();
  const tenant = $("tenant").value.trim();
  const user = $("name").value.trim();
  const ws = new WebSocket(wsURL(node, room, user, tenant));
  const c = { ws, room, node, user, opened: false };
  conn = c;
  rooms.add(room);
  syncStream();
  setStatus(`connecting to ${node.instance}…`);
  ws.onopen = () => {
    c.opened = true;
    setJoined(true);
    setStatus(`connected to ${node.instance} in “${room}”`);
  };
  ws.onmessage = (m) => showEvent(JSON.parse(m.data));
  ws.onclose = (e) => {
    if (conn !== c) return;
    conn = null;
    setJoined(false);
    if (c.opened) setStatus(`disconnected: ${closeText(e)}`);
    else refusal(node, tenant).then((text) => setStatus(text, true));
  };
}

function leave() {
  if (!conn) return;
  const c = conn;
  conn = null;
  c.ws.close(1000, "leaving");
  setJoined(false);
  setStatus("not connected");
}

function closeText(e) {
  switch (e.code) {
    case 1000: return "closed";
    case 1001: return "the node is shutting down (1001, going away)";
    case 1006: return "connection lost (1006): the node crashed or went away";
    case 1009: return "message too big (1009)";
    case 1011: return "server error (1011)";
    case 1013: return `try again later (1013): ${e.reason}`;
    default: return `code ${e.code} ${e.reason}`;
  }
}

// A browser does not tell why a handshake failed (and a plain GET of the
// same URL gets 426 before names and limits are checked): guess from the
// tenant's count.
async function refusal(node, tenant) {
  if (tenant && info.tenant_cap) {
    try {
      const p = await getJSON(`${node.base}api/presence?tenant=${encodeURIComponent(tenant)}`);
      const n = p.tenants[tenant].total;
      if (n >= info.tenant_cap) return `refused (429): tenant “${tenant}” has ${n} connections, its cap`;
    } catch { /* the node is down: say so below */ }
  }
  return "refused: a bad room, name or tenant (400), or the node is down or draining";
}

function setStatus(text, bad = false) {
  $("status").textContent = text;
  $("status").className = bad ? "warn" : "muted";
}

function setJoined(on) {
  $("leave-btn").disabled = !on;
  $("text").disabled = $("send-btn").disabled = !on;
  $("text").placeholder = on ? "say something" : "join a room to chat";
  $("chat-room").textContent = on ? `in ${conn.room} on ${conn.node.instance}` : "";
  if (on) $("text").focus();
}

function say(ev) {
  ev.preventDefault();
  const text = $("text").value;
  if (!conn || !conn.opened || !text.trim()) return;
  conn.ws.send(text);
  $("text").value = "";
}

function showEvent(e) {
  const who = e.user || "anonymous";
  const time = new Date(e.time).toLocaleTimeString();
  let line;
  switch (e.type) {
    case "message":
      line = el("li", {}, el("time", {}, time), el("b", {}, who), el("span", { class: "muted" }, `@${short(e.instance)}`), " ", e.text);
      break;
    case "welcome":
      line = el("li", { class: "muted" }, el("time", {}, time), `you are ${who} in “${e.room}” on ${short(e.instance)}`);
      break;
    default:
      // join and leave of one connection: the chat shows the users' joins
      // and leaves from the event stream instead (showPresence).
      return;
  }
  logLine(line);
}

function logLine(line) {
  const log = $("log");
  log.append(line);
  while (log.children.length > 200) log.firstChild.remove();
  log.scrollTop = log.scrollHeight;
}

function addBots(n) {
  const room = (conn && conn.room) || $("room").value.trim();
  if (!room) return;
  const node = selectedNode();
  rooms.add(room);
  const tenant = $("tenant").value.trim();
  botRefusal = "";
  for (let i = 0; i < n; i++) {
    const ws = new WebSocket(wsURL(node, room, `bot-${++botSeq}`, tenant));
    const bot = { ws, room, node };
    ws.onclose = async () => {
      bots = bots.filter((b) => b !== bot);
      if (!bot.opened) botRefusal = await refusal(node, tenant);
      showBots();
    };
    ws.onopen = () => { bot.opened = true; showBots(); };
    bots.push(bot);
  }
}

function showBots() {
  const box = $("bots");
  box.replaceChildren();
  const open = bots.filter((b) => b.opened).length;
  if (open) {
    box.append(`${open} bot connection${open > 1 ? "s" : ""} open `,
      el("button", { type: "button", class: "link", onclick: () => bots.forEach((b) => b.ws.close(1000)) }, "close them"));
  }
  if (botRefusal) box.append(el("div", { class: "warn" }, `a bot was ${botRefusal}`));
}

// ---- members: the event stream ----

// streamNode is the node to read the event stream of: the one streaming
// already while it is up, else our chat's node, else any node up. Every
// node streams every room (the events are in Redis): a crashed node's
// users leave, with reason "crashed", on the others' streams.
function streamNode() {
  const up = nodes.filter((n) => n.state === "up");
  const live = stream && stream.es.readyState !== EventSource.CLOSED;
  return (live && up.find((n) => n.index === stream.node.index)) ||
    (conn && up.find((n) => n.index === conn.node.index)) || up[0] || null;
}

// syncStream (re)opens the event stream when the rooms on display or the
// node to read change, or the stream failed for good (a crashed node's
// proxy answers 502). A new stream resumes each room after the last event
// applied (last_event_id), so that no join or leave is lost or repeated;
// a room new to the page starts with a snapshot of its members.
function syncStream() {
  const list = [...rooms].sort().slice(0, MAX_STREAM_ROOMS);
  for (const r of presence.keys()) if (!list.includes(r)) presence.delete(r);
  const node = streamNode();
  const key = node && list.length ? `${node.index}\n${list.join("\n")}` : "";
  if (stream && stream.key === key && stream.es.readyState !== EventSource.CLOSED) return;
  if (stream) stream.es.close();
  stream = null;
  $("stream-node").textContent = "";
  if (!key) return renderMembers();
  const u = new URL(`${node.base}api/events`, location.href);
  const last = new URLSearchParams();
  for (const r of list) {
    u.searchParams.append("room", r);
    if (presence.has(r)) last.set(r, presence.get(r).seq);
  }
  if (last.toString()) u.searchParams.set("last_event_id", last.toString());
  const es = new EventSource(u);
  stream = { es, node, key };
  $("stream-node").textContent = `of ${node.instance}`;
  for (const kind of ["snapshot", "join", "leave", "occupied", "vacated"]) {
    es.addEventListener(kind, (m) => { if (stream && stream.es === es) onPresence(JSON.parse(m.data)); });
  }
  // The browser reconnects by itself (with Last-Event-ID) after a cut; a
  // refused reconnect closes the stream, and the next poll opens another,
  // on another node if this one is down.
  renderMembers();
}

// onPresence applies one event of the stream to the room's members, and
// shows the joins and leaves of our chat's room in the chat.
function onPresence(e) {
  let p = presence.get(e.room);
  if (e.kind === "snapshot") {
    const m = e.members;
    presence.set(e.room, {
      seq: e.seq, users: m.users,
      members: new Map(m.members.map((x) => [x.user, { connections: x.connections, meta: x.meta || "" }])),
    });
    return renderMembers();
  }
  if (!p || e.seq <= p.seq) return; // before its snapshot, or applied already
  p.seq = e.seq;
  const was = p.members.get(e.user);
  switch (e.kind) {
    case "join":
      p.users++;
      p.members.set(e.user, { connections: 1, meta: e.meta || "" });
      break;
    case "leave":
      p.users = Math.max(0, p.users - 1);
      p.members.delete(e.user);
      break;
    case "vacated":
      p.users = 0;
      p.members.clear();
      break;
  }
  if ((e.kind === "join" || e.kind === "leave") && conn && conn.room === e.room) {
    showPresence(e, (was && was.meta) || e.meta || e.user);
  }
  renderMembers();
}

// showPresence writes "ann joined", "ann left", or "ann left: node
// crashed" (her node died, and another one swept her connections) in the
// chat.
function showPresence(e, name) {
  const reasons = { crashed: "left: node crashed", drained: "left: node shut down" };
  const text = e.kind === "join" ? "joined" : reasons[e.reason] || "left";
  logLine(el("li", { class: `presence ${e.kind} ${e.reason || ""}` },
    el("time", {}, new Date().toLocaleTimeString()), el("b", {}, name), ` ${text}`,
    e.node ? el("span", { class: "muted" }, ` @${short(e.node)}`) : ""));
}

// updateTabs takes each member's connections (tabs) from a poll of
// api/presence?members=1: no event says that a user opened a second tab.
// The member list itself stays the stream's: a page read at another
// sequence than the one the stream is at is left for the next poll.
function updateTabs(answer) {
  if (!answer || answer.error || !answer.members) return;
  for (const [room, page] of Object.entries(answer.members)) {
    const p = presence.get(room);
    if (!p || page.seq !== p.seq) continue;
    for (const x of page.members) {
      const m = p.members.get(x.user);
      if (m) m.connections = x.connections;
    }
  }
}

function renderMembers() {
  const list = [...presence.keys()].sort();
  const blocks = list.map((r) => {
    const p = presence.get(r);
    const names = [...p.members.entries()].sort(([a], [b]) => a.localeCompare(b)).map(([user, m]) =>
      el("li", { class: conn && conn.room === r && user === conn.user ? "you" : "" },
        m.meta || user, el("span", { class: "muted" }, m.connections > 1 ? ` ${m.connections} tabs` : " 1 tab")));
    const unlisted = p.users - p.members.size;
    if (unlisted > 0) names.push(el("li", { class: "muted" }, `and ${unlisted} more`));
    return el("div", { class: "members", "data-room": r },
      el("div", {}, el("b", {}, r), el("span", { class: "muted" }, ` ${p.users} user${p.users === 1 ? "" : "s"}`)),
      el("ul", {}, ...names));
  });
  if (!blocks.length) blocks.push(el("p", { class: "muted" }, stream ? "waiting for the stream…" : "no rooms yet"));
  $("members").replaceChildren(...blocks);
}

// ---- counts ----

async function nodeAction(node, action) {
  try {
    await getJSON(`node/${node.index}/${action}`, { method: "POST" });
  } catch (e) {
    setStatus(`${action} ${node.instance}: ${e.message}`, true);
  }
  poll1();
}

async function poll1() {
  try {
    if (info.nodes) await loadInfo();
  } catch { /* keep the last known nodes */ }
  const up = nodes.filter((n) => n.state === "up");
  // Each node's own rooms; rooms of a crashed node stay on display (asked
  // for by name) until their counts are reaped.
  const own = await Promise.all(up.map((n) => getJSON(`${n.base}api/presence`).catch(() => null)));
  for (const p of own) if (p) Object.keys(p.rooms).forEach((r) => rooms.add(r));
  const list = [...rooms].sort();
  const q = list.map((r) => `room=${encodeURIComponent(r)}`).join("&");
  // The stream's node also lists the members, for their tabs.
  const ask = (n) => `${n.base}api/presence${q ? `?${q}` : ""}${q && stream && stream.node.index === n.index ? "&members=1" : ""}`;
  const seen = await Promise.all(up.map((n) => getJSON(ask(n)).catch((e) => ({ error: e.message }))));
  const byNode = new Map(up.map((n, k) => [n.index, seen[k]]));
  seen.forEach(updateTabs);
  render(list, byNode);
  for (const r of list) {
    const empty = [...byNode.values()].every((p) => p.error || !p.rooms[r] || p.rooms[r].total === 0);
    if (empty && !(conn && conn.room === r) && !bots.some((b) => b.room === r)) rooms.delete(r);
  }
  syncStream();
  renderMembers();
}

function render(list, byNode) {
  const answers = [...byNode.values()].filter((p) => !p.error);
  const total = answers.length ? answers[0].total.total : null;
  $("total-n").textContent = total === null ? "–" : total;

  // Connections counted for nodes that no longer run: the gap between the
  // cluster-wide total and what the live nodes hold themselves.
  const live = answers.reduce((s, p) => s + p.total.local, 0);
  const ghosts = total === null || answers.length < byNode.size ? 0 : total - live;
  ghostPolls = ghosts > 0 ? ghostPolls + 1 : 0;
  $("ghosts").hidden = ghostPolls < 2;
  $("ghosts").textContent = `${ghosts} connection${ghosts === 1 ? "" : "s"} still counted for a node that is gone;` +
    ` reaped once it has been unseen for ${secs(info.threshold_ms)} (it heartbeats every ${secs(info.heartbeat_ms)}).`;

  renderNodes(byNode);

  const head = [el("th", {}, "room"), el("th", {}, "total")];
  for (const n of nodes) head.push(el("th", { class: n.state === "up" ? "" : "down" }, `${n.instance} local`));
  $("rooms-head").replaceChildren(...head);
  const rows = list.map((r) => {
    const tr = el("tr", {}, el("td", {},
      r, laxRoom(r) ? el("span", { class: "tag" }, "lax") : "", conn && conn.room === r ? el("span", { class: "tag you" }, "you") : ""));
    // The total as each node reads it; they agree but for lax rooms
    // (within the flush interval) and reads in flight.
    const totals = [...new Set(answers.map((p) => p.rooms[r]?.total ?? 0))];
    tr.append(el("td", { class: "num" }, totals.length ? totals.join(" / ") : "–"));
    for (const n of nodes) {
      const p = byNode.get(n.index);
      tr.append(el("td", { class: "num" + (p && !p.error ? "" : " down") }, p && !p.error ? String(p.rooms[r]?.local ?? 0) : "–"));
    }
    return tr;
  });
  if (!rows.length) rows.push(el("tr", {}, el("td", { colspan: head.length, class: "muted" }, "no connections yet: join a room")));
  $("rooms-body").replaceChildren(...rows);
}

function renderNodes(byNode) {
  if (!info.nodes) {
    $("nodes").replaceChildren();
    return;
  }
  $("nodes").replaceChildren(...nodes.map((n) => {
    const p = byNode.get(n.index);
    const card = el("div", { class: `node ${n.state}` },
      el("div", { class: "node-name" }, n.instance, el("span", { class: "state" }, n.state)),
      el("div", { class: "muted small" }, n.addr));
    if (p && !p.error) card.append(el("div", {}, el("b", {}, String(p.total.local)), " local"));
    else if (p) card.append(el("div", { class: "warn small" }, "not answering"));
    card.append(n.state === "up"
      ? el("button", { type: "button", class: "danger", onclick: () => nodeAction(n, "crash"), title: "SIGKILL: its counts stay until reaped" }, "crash")
      : el("button", { type: "button", onclick: () => nodeAction(n, "restart"), title: "start again with the same instance ID" }, "restart"));
    return card;
  }));
}

async function pollLoop() {
  try { await poll1(); } catch (e) { setStatus(`polling failed: ${e.message}`, true); }
  setTimeout(pollLoop, POLL_MS);
}

async function start() {
  $("room").value = params.get("room") || "lobby";
  $("name").value = params.get("name") || `guest-${Math.floor(1000 + Math.random() * 9000)}`;
  $("tenant").value = params.get("tenant") || "";
  $("join").addEventListener("submit", join);
  $("leave-btn").addEventListener("click", leave);
  $("bots-btn").addEventListener("click", () => addBots(5));
  $("say").addEventListener("submit", say);
  await loadInfo();
  showSetup();
  if (params.get("autojoin")) {
    join();
    const n = Number(params.get("bots") || 0);
    if (n > 0) addBots(Math.min(n, 50));
  }
  pollLoop();
}

start().catch((e) => setStatus(`cannot load the page's settings: ${e.message}`, true));
