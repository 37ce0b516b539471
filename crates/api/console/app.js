// switchyard console: a client of the public APIs, nothing more.
//
// Pages are rendered from the Neutron API (/v2.0), the lab's compute API
// (/compute/v2.1, absent under `switchyard server`) and refreshed when the
// commit stream (/switchyard/v1/events, read with fetch so that the token
// travels in a header) says something they show has changed. Everything the
// APIs return is inserted as text, never as markup.

import { topologyPage } from "./topology.js";

const $ = (sel) => document.querySelector(sel);

const session = {
  get token() { return sessionStorage.getItem("sy-token"); },
  get who() { return sessionStorage.getItem("sy-who"); },
  // Whether to offer actions: a member or admin of the project (noauth is
  // the admin). Only a hint for the page: the APIs decide.
  get roles() { return (sessionStorage.getItem("sy-roles") || "").split(","); },
  get canAct() { return !this.token || this.roles.includes("admin") || this.roles.includes("member"); },
  // Live migration and the hosts list are admin-only in Nova's default policy.
  get isAdmin() { return !this.token || this.roles.includes("admin"); },
  set(token, who, roles) {
    sessionStorage.setItem("sy-token", token);
    sessionStorage.setItem("sy-who", who);
    sessionStorage.setItem("sy-roles", roles.join(","));
  },
  clear() {
    for (const k of ["sy-token", "sy-who", "sy-roles"]) sessionStorage.removeItem(k);
  },
};

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

// The message of an OpenStack error body: Neutron's {"NeutronError": {...}},
// Nova's {"itemNotFound": {"message": ...}}, Keystone's {"error": {...}}.
function messageOf(body) {
  if (!body || typeof body !== "object") return typeof body === "string" ? body : "";
  const inner = body.NeutronError || body.error || Object.values(body)[0];
  return (inner && inner.message) || "";
}

// `token`: send this one rather than the session's (a cleanup that must
// run after sign-out); `quiet`: a 401 does not ask to sign in again.
async function api(path, { method = "GET", json, headers = {}, token, quiet = false } = {}) {
  const h = new Headers(headers);
  const t = token === undefined ? session.token : token;
  if (t) h.set("X-Auth-Token", t);
  let body;
  if (json !== undefined) {
    h.set("Content-Type", "application/json");
    body = JSON.stringify(json);
  }
  const r = await fetch(path, { method, headers: h, body, cache: "no-store" });
  const text = await r.text();
  let parsed = null;
  try { parsed = text ? JSON.parse(text) : null; } catch { parsed = text; }
  if (r.status === 401) {
    if (!quiet) askSignIn();
    throw new ApiError(401, "Sign in first.");
  }
  if (!r.ok) throw new ApiError(r.status, messageOf(parsed) || `${r.status} ${r.statusText}`);
  return parsed;
}

// ---- DOM helpers ---------------------------------------------------------------

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function table(caption, headers, rows, attrs = {}) {
  return el("div", { class: "table-wrap" },
    el("table", attrs,
      el("caption", {}, caption),
      el("thead", {}, el("tr", {}, headers.map((h) => el("th", { scope: "col" }, h)))),
      el("tbody", {}, rows)));
}

const VIF_LABELS = { ovs: "OVS", vrouter: "vRouter", hw_veb: "SR-IOV" };

function vifBadge(vifType) {
  // Absent: Neutron's policy shows binding attributes to admins only.
  if (vifType === undefined) {
    return el("span", { class: "badge other", "data-vif-type": "", title: "Binding attributes are shown to admins" }, "hidden");
  }
  const t = vifType || "unbound";
  const known = Object.hasOwn(VIF_LABELS, t);
  return el("span", {
    class: `badge ${known ? t : "other"}`,
    "data-vif-type": t,
    title: `binding:vif_type ${t}`,
  }, known ? VIF_LABELS[t] : t);
}

function status(s) {
  return el("span", { class: `status ${s}` }, s);
}

function count(n, one, many = `${one}s`) {
  return `${n} ${n === 1 ? one : many}`;
}

function short(id) {
  return el("span", { class: "mono", title: id }, (id || "").slice(0, 8));
}

// ---- pages --------------------------------------------------------------------

const PORT_FIELDS = ["id", "name", "network_id", "device_id", "device_owner", "mac_address",
  "fixed_ips", "status", "binding:host_id", "binding:vif_type"];

function fieldsQuery(fields) {
  return fields.map((f) => `fields=${encodeURIComponent(f)}`).join("&");
}

const pages = {
  nodes: {
    title: "Nodes",
    // `node`: a node's session, acks and liveness (not commits, announced
    // on the same stream).
    kinds: ["node", "agent", "port", "network", "subnet", "router", "floatingip"],
    // A node's page: `node` events for other hosts do not change it.
    wants(changes) {
      const host = pageArg();
      return changes.some((c) => this.kinds.includes(c.kind) && (c.kind !== "node" || !host || c.id === host));
    },
    async render() {
      if (!session.isAdmin) {
        return el("p", { class: "note" }, "Nodes and their sync state are shown to admins.");
      }
      const host = pageArg();
      return host ? this.node(host) : this.list();
    },

    async list() {
      const [nodes, agents] = await Promise.all([
        api("/switchyard/v1/nodes"),
        api("/v2.0/agents?fields=host&fields=agent_type"),
      ]);
      const types = new Map(agents.agents.map((a) => [a.host, a.agent_type]));
      const rows = nodes.nodes.map((n) => el("tr", { "data-node": n.host },
        el("th", { scope: "row" }, el("a", { href: `#/nodes/${encodeURIComponent(n.host)}` }, n.host)),
        el("td", {}, types.get(n.host) || ""),
        el("td", {}, el("span", { class: `node ${n.state}` }, n.state)),
        el("td", {}, n.alive ? "yes" : "no"),
        el("td", { class: "num" }, n.desired_version),
        el("td", { class: "num" }, n.sent_version),
        el("td", { class: "num" }, n.acked_version),
        el("td", { class: "num" }, n.item_count),
        el("td", {}, n.failed || n.last_error || "")));
      return table(count(nodes.nodes.length, "node"),
        ["Host", "Agent", "State", "Alive", "Desired", "Sent", "Acked", "Items", "Error"], rows, { id: "nodes" });
    },

    async node(host) {
      const { node } = await api(`/switchyard/v1/nodes/${encodeURIComponent(host)}`);
      const a = node.applied;
      const parts = [
        el("p", {}, el("a", { href: "#/nodes" }, "All nodes"), ` · ${host}: `,
          el("span", { class: `node ${node.state}` }, node.state),
          ` · desired ${node.desired_version}, sent ${node.sent_version}, acked ${node.acked_version}`,
          ` · ${count(node.item_count, "item")}`),
      ];
      if (!a) {
        parts.push(el("p", { class: "error", role: "alert" },
          `The node's agent did not say what it runs: ${node.applied_error || "no answer"}`));
        return el("div", {}, parts);
      }
      parts.push(el("h2", {}, "Interfaces"),
        table(count(a.interfaces.length, "interface"),
          ["Port", "Local port", "MAC", "IP addresses", "Backend", "VLAN", "VNI", "Status", "Plugged"],
          a.interfaces.map((i) => el("tr", { "data-port": i.port_id },
            el("th", { scope: "row", class: "mono" }, i.port_id || "(not plugged by the agent)"),
            el("td", { class: "num" }, i.local_port),
            el("td", { class: "mono" }, i.mac),
            el("td", { class: "mono" }, i.ips.join(", ")),
            el("td", {}, vifBadge(i.vif_type)),
            el("td", {}, i.vlan ?? ""),
            el("td", {}, i.vni ?? ""),
            el("td", {}, status(i.status)),
            el("td", {}, i.plugged ? "yes" : "no"))),
          { id: "interfaces" }));
      for (const n of a.networks) {
        const name = [n.vni != null ? `VNI ${n.vni}` : "", n.vlan != null ? `VLAN ${n.vlan}` : ""]
          .filter(Boolean).join(", ");
        parts.push(el("h2", {}, `Network ${name}`),
          el("p", {}, `Flood list: ${n.flood.length ? n.flood.join(", ") : "(none)"}`),
          table(`Bridge table, ${count(n.bridge.length, "entry", "entries")}`, ["MAC", "Goes to"],
            n.bridge.map((b) => el("tr", {}, el("td", { class: "mono" }, b.mac), el("td", {}, b.points_to)))),
          table(`ARP table, ${count(n.arp.length, "entry", "entries")}`, ["IP", "MAC"],
            n.arp.map((e) => el("tr", {}, el("td", { class: "mono" }, e.ip), el("td", { class: "mono" }, e.mac)))));
      }
      const c = a.counters;
      parts.push(el("h2", {}, "Counters"),
        el("p", {}, `received ${c.rx}, sent ${c.tx}, not learned ${c.not_learned}`),
        table("Drops by reason", ["Reason", "Frames"],
          Object.entries(c.drops).map(([k, v]) => el("tr", {}, el("td", {}, k), el("td", { class: "num" }, v)))));
      return el("div", {}, parts);
    },
  },

  verify: {
    title: "Verify",
    kinds: [],
    shown: 0,
    async render() {
      if (!session.isAdmin) {
        // The run pings from every guest: the lab's guests are an admin's.
        return el("p", { class: "note" }, "Verify runs are an admin's: they ping from every guest of the lab.");
      }
      let history;
      try {
        history = (await api("/switchyard/v1/lab/verify")).runs;
      } catch (e) {
        if (e.status === 404) {
          return el("p", { class: "note" }, "There is no lab here: `switchyard verify` runs against a lab.");
        }
        throw e;
      }
      if (this.shown >= history.length) this.shown = 0;
      const run = history[this.shown];
      const status = el("p", { id: "verify-status", role: "status", class: run && !run.ok ? "error" : "" },
        run ? `${verifySummary(run)} (run at ${run.at}${run.network ? ` on ${run.network}` : ""})` : "No run yet.");
      const button = el("button", {
        type: "button", id: "verify-run",
        onclick: () => once(button, async () => {
          status.className = "";
          status.textContent = "Running: every guest pings every other guest…";
          try {
            await api("/switchyard/v1/lab/verify", { method: "POST", json: { verify: {} } });
            this.shown = 0;
            refresh();
          } catch (e) {
            status.className = "error";
            status.textContent = e.status === 404
              ? "There is no lab here: `switchyard verify` runs against a lab."
              : `Verify failed: ${e.message}`;
          }
        }),
      }, "Run verify");
      const past = history.map((h, i) => el("li", {},
        el("button", {
          type: "button", class: "link", "aria-current": i === this.shown ? "true" : null,
          onclick: () => { this.shown = i; refresh(); },
        }, `${h.at}: ${verifySummary(h)}`)));
      return el("div", {},
        el("p", { class: "note" },
          "Every guest pings every other guest (5 pings a path); a path is as expected when it " +
          "answers, or stays silent where security groups close it."),
        button,
        status,
        run ? verifyGrid(run) : null,
        history.length ? el("h2", {}, "Runs kept by the lab (the last 20)") : null,
        history.length ? el("ul", { class: "history" }, past) : null);
    },
  },

  instances: {
    title: "Instances",
    kinds: ["server", "migration", "port", "network", "subnet", "floatingip"],
    // Above the page, built when the page is shown (not on each refresh, so
    // that what is being typed stays).
    async tools() {
      if (!session.canAct) return null;
      try {
        return bootForm(session.isAdmin ? await computeHosts() : []);
      } catch { return null; }
    },
    pageSize: 50,
    // Markers of the pages before this one (Nova pages by marker).
    markers: [],
    marker: null,
    async render() {
      let servers;
      let more = false;
      try {
        const q = [`limit=${this.pageSize}`];
        if (this.marker) q.push(`marker=${encodeURIComponent(this.marker)}`);
        const r = await api(`/compute/v2.1/servers/detail?${q.join("&")}`);
        servers = r.servers;
        more = Boolean(r.servers_links && r.servers_links.some((l) => l.rel === "next"));
      } catch (e) {
        if (e.status === 404) {
          return el("p", { class: "note" },
            "There is no compute API here: instances are managed by Nova. ",
            "The Networks and Ports pages show their ports.");
        }
        // The page's marker server was deleted: back to the first page.
        if (e.status === 400 && this.marker) {
          this.marker = null;
          this.markers = [];
          return this.render();
        }
        throw e;
      }
      const byDevice = new Map();
      if (servers.length > 0) {
        const q = servers.map((s) => `device_id=${encodeURIComponent(s.id)}`).join("&");
        const ports = (await api(`/v2.0/ports?${q}&${fieldsQuery(PORT_FIELDS)}`)).ports;
        for (const p of ports) {
          if (!byDevice.has(p.device_id)) byDevice.set(p.device_id, []);
          byDevice.get(p.device_id).push(p);
        }
      }
      const act = session.canAct;
      const admin = session.isAdmin;
      const migrations = admin
        ? (await api("/compute/v2.1/os-migrations")).migrations
        : null;
      const rows = servers.map((s) => {
        const ports = byDevice.get(s.id) || [];
        const ips = Object.values(s.addresses || {}).flat();
        const macs = [...new Set(ips.map((a) => a["OS-EXT-IPS-MAC:mac_addr"]).filter(Boolean))];
        const host = s["OS-EXT-SRV-ATTR:host"] || "";
        return el("tr", { "data-server": s.name },
          el("th", { scope: "row" }, s.name),
          el("td", {}, status(s.status)),
          el("td", {}, host),
          el("td", { class: "mono" }, ips.map((a) => a.addr).join(", ")),
          el("td", { class: "mono" }, macs.join(", ")),
          el("td", {}, ports.length ? ports.map((p) => vifBadge(p["binding:vif_type"])) : vifBadge(null)),
          act ? el("td", { class: "actions" },
            admin ? el("button", {
              type: "button", disabled: s.status !== "ACTIVE",
              "aria-label": `Live-migrate ${s.name}`,
              onclick: () => migrateDialog(s, ports).catch((e) => actionFailed(`Migrating ${s.name}`, e)),
            }, "Migrate…") : null,
            el("button", {
              type: "button", "aria-label": `Delete ${s.name}`,
              onclick: () => deleteServer(s),
            }, "Delete")) : null);
      });
      const names = new Map(servers.map((s) => [s.id, s.name]));
      const migRows = (migrations || []).slice(0, 10).map((m) => el("tr", { "data-migration": m.id },
        el("th", { scope: "row" }, names.get(m.instance_uuid) || short(m.instance_uuid)),
        el("td", {}, `${m.source_compute} → ${m.dest_compute}`),
        el("td", {}, el("span", { class: `migration ${m.status}` }, m.status)),
        el("td", {}, m["switchyard:error"] || ""),
        el("td", {}, m.updated_at || m.created_at || "")));
      const first = this.markers.length * this.pageSize + 1;
      const paged = more || this.markers.length > 0;
      return el("div", {},
        table(paged
          ? (servers.length ? `Instances ${first}–${first + servers.length - 1}, ${this.pageSize} a page` : "No instances on this page")
          : count(servers.length, "instance"),
        ["Name", "Status", "Host", "IP addresses", "MAC", "Backend", act ? "Actions" : null].filter(Boolean),
        rows, { id: "instances" }),
        paged ? pager(this, more, servers, "instances") : null,
        el("p", { id: "action-error", class: "error", role: "alert" }, lastActionError),
        el("h2", {}, "Live migrations"),
        migrations === null
          ? el("p", { class: "note" }, "Live migrations are shown to admins.")
          : table(`${count(migrations.length, "migration")}, latest first`,
            ["Instance", "Move", "Status", "Error", "Updated"], migRows, { id: "migrations" }));
    },
  },

  networks: {
    title: "Networks",
    kinds: ["network", "subnet", "segment", "router", "floatingip"],
    async render() {
      const [nets, subnets, routers, fips] = await Promise.all([
        api("/v2.0/networks"), api("/v2.0/subnets"), api("/v2.0/routers"), api("/v2.0/floatingips"),
      ]);
      const cidrs = new Map();
      for (const s of subnets.subnets) {
        if (!cidrs.has(s.network_id)) cidrs.set(s.network_id, []);
        cidrs.get(s.network_id).push(s.cidr);
      }
      const netName = new Map(nets.networks.map((n) => [n.id, n.name || n.id]));
      const netRows = nets.networks.map((n) => el("tr", { "data-network": n.name },
        el("th", { scope: "row" }, n.name || short(n.id)),
        el("td", {}, n["provider:network_type"] || ""),
        el("td", {}, n["provider:physical_network"] || ""),
        el("td", {}, n["provider:segmentation_id"] ?? ""),
        el("td", { class: "mono" }, (cidrs.get(n.id) || []).join(", ")),
        el("td", {}, [n.shared ? "shared" : "", n["router:external"] ? "external" : ""].filter(Boolean).join(", ")),
        el("td", {}, status(n.status))));
      const routerRows = routers.routers.map((r) => {
        const gw = r.external_gateway_info;
        const gwIps = gw ? (gw.external_fixed_ips || []).map((f) => f.ip_address).join(", ") : "";
        return el("tr", {},
          el("th", { scope: "row" }, r.name || short(r.id)),
          el("td", {}, gw ? netName.get(gw.network_id) || gw.network_id : ""),
          el("td", { class: "mono" }, gwIps),
          el("td", {}, gw ? (gw.enable_snat ? "on" : "off") : ""),
          el("td", {}, status(r.status)));
      });
      const fipRows = fips.floatingips.map((f) => el("tr", {},
        el("th", { scope: "row", class: "mono" }, f.floating_ip_address),
        el("td", { class: "mono" }, f.fixed_ip_address || ""),
        el("td", {}, f.port_id ? short(f.port_id) : ""),
        el("td", {}, f.router_id ? short(f.router_id) : ""),
        el("td", {}, status(f.status))));
      return el("div", {},
        table(count(nets.networks.length, "network"),
          ["Name", "Type", "Physical network", "Segment", "Subnets", "Flags", "Status"], netRows, { id: "networks" }),
        el("h2", {}, "Routers"),
        table(count(routers.routers.length, "router"),
          ["Name", "External network", "Gateway IPs", "SNAT", "Status"], routerRows, { id: "routers" }),
        el("h2", {}, "Floating IPs"),
        table(count(fips.floatingips.length, "floating IP"),
          ["Floating IP", "Fixed IP", "Port", "Router", "Status"], fipRows, { id: "floatingips" }));
    },
  },

  ports: {
    title: "Ports",
    kinds: ["port", "network", "segment"],
    pageSize: 50,
    // Markers of the pages before this one (Neutron pages by marker).
    markers: [],
    marker: null,
    async render() {
      const id = pageArg();
      return id ? this.port(id) : this.list();
    },

    // One port: its attributes, and for admins its bindings with their
    // levels (driver, segment, VLAN/VNI) and the node that applied it.
    async port(id) {
      const { port: p } = await api(`/v2.0/ports/${encodeURIComponent(id)}`);
      let b = null;
      if (session.isAdmin) {
        b = (await api(`/switchyard/v1/ports/${encodeURIComponent(id)}/binding`)).binding;
      }
      const dl = (pairs) => el("dl", { class: "facts" },
        pairs.filter(([, v]) => v !== null && v !== undefined && v !== "")
          .flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
      const node = b && b.node;
      const parts = [
        el("p", {}, el("a", { href: "#/ports" }, "All ports"), ` · ${p.name || p.id}`),
        dl([
          ["ID", el("span", { class: "mono" }, p.id)],
          ["Status", status(p.status)],
          ["Network", el("span", { class: "mono" }, p.network_id)],
          ["Owner", p.device_owner || p.device_id
            ? el("span", {}, p.device_owner || "", p.device_id ? " " : "", p.device_id ? short(p.device_id) : null)
            : null],
          ["MAC", el("span", { class: "mono" }, p.mac_address)],
          ["IP addresses", el("span", { class: "mono" }, (p.fixed_ips || []).map((f) => f.ip_address).join(", "))],
          ["binding:host_id", p["binding:host_id"]],
          ["binding:vnic_type", p["binding:vnic_type"]],
          ["binding:vif_type", vifBadge(p["binding:vif_type"])],
          ["binding:vif_details", el("code", { id: "vif-details" }, JSON.stringify(p["binding:vif_details"] || {}))],
          ["Applied by", b ? (b.applied_by
            ? el("span", { id: "applied-by" }, el("a", { href: `#/nodes/${encodeURIComponent(b.applied_by)}` }, b.applied_by),
              node ? ` (node ${node.state}, acked ${node.acked_version} of ${node.desired_version})` : "")
            : el("span", { id: "applied-by" }, "not yet: no agent has reported the port up")) : null],
        ]),
      ];
      if (!b) {
        parts.push(el("p", { class: "note" }, "Binding levels name segments, which only admins see."));
        return el("div", {}, parts);
      }
      for (const x of b.bindings) {
        parts.push(el("h2", {}, `Binding on ${x.host || "no host"} (${x.status})`),
          table(`${count(x.levels.length, "level")}, ${x.vif_type}`,
            ["Level", "Driver", "Segment", "Type", "Physical network", "VLAN / VNI"],
            x.levels.map((l) => el("tr", { "data-level": l.level },
              el("th", { scope: "row", class: "num" }, l.level),
              el("td", {}, l.driver),
              el("td", { class: "mono" }, short(l.segment_id)),
              el("td", {}, l.network_type || "(segment gone)"),
              el("td", {}, l.physical_network || ""),
              el("td", { class: "num" }, l.segmentation_id ?? ""))),
            { class: "levels", "data-host": x.host }));
      }
      return el("div", {}, parts);
    },

    async list() {
      const q = [`limit=${this.pageSize}`, fieldsQuery(PORT_FIELDS)];
      if (this.marker) q.push(`marker=${encodeURIComponent(this.marker)}`);
      let ports;
      let nets;
      try {
        [ports, nets] = await Promise.all([
          api(`/v2.0/ports?${q.join("&")}`),
          api("/v2.0/networks?fields=id&fields=name"),
        ]);
      } catch (e) {
        // The page's marker port was deleted: back to the first page.
        if (e.status === 404 && this.marker) {
          this.marker = null;
          this.markers = [];
          return this.list();
        }
        throw e;
      }
      const netName = new Map(nets.networks.map((n) => [n.id, n.name || n.id]));
      const list = ports.ports;
      const rows = list.map((p) => el("tr", { "data-port": p.id },
        el("th", { scope: "row" }, el("a", { href: `#/ports/${encodeURIComponent(p.id)}` }, p.name || short(p.id))),
        el("td", {}, netName.get(p.network_id) || short(p.network_id)),
        el("td", {}, p.device_owner || ""),
        el("td", { class: "mono" }, p.mac_address),
        el("td", { class: "mono" }, (p.fixed_ips || []).map((f) => f.ip_address).join(", ")),
        el("td", {}, p["binding:host_id"] || ""),
        el("td", {}, vifBadge(p["binding:vif_type"])),
        el("td", {}, status(p.status))));
      const more = Boolean(ports.ports_links && ports.ports_links.some((l) => l.rel === "next"));
      return el("div", {},
        table(`Ports, ${this.pageSize} a page`,
          ["Name", "Network", "Owner", "MAC", "IP addresses", "Host", "Backend", "Status"], rows, { id: "ports" }),
        pager(this, more, list, "ports"));
    },
  },
};

pages.topology = topologyPage({ api, el, table, count, session, fieldsQuery });

// Previous / Next for a page listed by marker (`page.marker`, and the
// markers of the pages before it in `page.markers`); `items` are the ones
// shown, each with an `id`.
function pager(page, more, items, what) {
  const first = page.markers.length * page.pageSize + 1;
  const last = items.length ? items[items.length - 1].id : null;
  return el("div", { class: "pager" },
    el("button", {
      type: "button", disabled: page.markers.length === 0,
      onclick: () => { page.marker = page.markers.pop() ?? null; refresh(); },
    }, "Previous"),
    el("span", {}, last ? `${what} ${first}–${first + items.length - 1}` : `no ${what}`),
    el("button", {
      type: "button", disabled: !more || !last,
      onclick: () => { page.markers.push(page.marker); page.marker = last; refresh(); },
    }, "Next"));
}

// ---- instance actions (the lab's compute API, as Nova's clients call it) ------------

// The microversion the actions use: `host` with `block_migration: "auto"`.
const COMPUTE_VERSION = { "OpenStack-API-Version": "compute 2.30" };
let lastActionError = "";

function actionFailed(what, e) {
  lastActionError = `${what}: ${e.message}`;
  const p = $("#action-error");
  if (p) p.textContent = lastActionError;
}

async function computeHosts() {
  const h = await api("/compute/v2.1/os-hypervisors");
  return h.hypervisors.map((x) => x.hypervisor_hostname);
}

// Runs `work` with `button` disabled: one click, one request.
async function once(button, work) {
  if (button.disabled) return;
  button.disabled = true;
  try { await work(); } finally { button.disabled = false; }
}

// Boot: a network (a new port) or a free port, a flavor and the image when
// the compute service has them, a host or the scheduler. The choices are read
// again each time the form is opened.
function bootForm(hosts) {
  const attach = el("select", { id: "boot-network", name: "attach", required: true });
  const flavor = el("select", { id: "boot-flavor", name: "flavor" });
  const image = el("select", { id: "boot-image", name: "image" });
  const fill = async () => {
    const [nets, ports, flavors, images] = await Promise.all([
      api("/v2.0/networks?router:external=false&fields=id&fields=name").then((n) => n.networks),
      api(`/v2.0/ports?device_id=&limit=200&${fieldsQuery(["id", "name", "network_id", "binding:vnic_type", "fixed_ips"])}`)
        .then((p) => p.ports).catch(() => []),
      api("/compute/v2.1/flavors").then((f) => f.flavors).catch(() => []),
      api("/image/v2/images").then((i) => i.images).catch(() => []),
    ]);
    const chosen = attach.value;
    const netName = new Map(nets.map((x) => [x.id, x.name || x.id]));
    const groups = [el("optgroup", { label: "New port on network" },
      nets.map((x) => el("option", { value: `net:${x.id}` }, x.name || x.id)))];
    if (ports.length) {
      groups.push(el("optgroup", { label: "Existing free port" },
        ports.map((p) => el("option", { value: `port:${p.id}` },
          `${p.name || p.id.slice(0, 8)} (${netName.get(p.network_id) || p.network_id.slice(0, 8)}` +
          `${p["binding:vnic_type"] && p["binding:vnic_type"] !== "normal" ? `, ${p["binding:vnic_type"]}` : ""})`))));
    }
    attach.replaceChildren(...groups);
    if (chosen && [...attach.options].some((o) => o.value === chosen)) attach.value = chosen;
    flavor.replaceChildren(el("option", { value: "" }, "none"),
      ...flavors.map((f) => el("option", { value: f.id }, f.name)));
    image.replaceChildren(el("option", { value: "" }, "none"),
      ...images.map((i) => el("option", { value: i.id }, i.name || i.id)));
  };
  fill().catch(() => {});
  const form = el("form", {
    id: "boot", class: "inline",
    onsubmit: (ev) => {
      ev.preventDefault();
      const form = ev.target;
      const f = new FormData(form);
      const [kind, id] = String(f.get("attach")).split(/:(.*)/s);
      const server = { name: f.get("name"), networks: [kind === "port" ? { port: id } : { uuid: id }] };
      if (f.get("host")) server.availability_zone = `nova:${f.get("host")}`;
      if (f.get("flavor")) server.flavorRef = f.get("flavor");
      if (f.get("image")) server.imageRef = f.get("image");
      lastActionError = "";
      return once(form.querySelector("button[type=submit]"), async () => {
        try {
          await api("/compute/v2.1/servers", { method: "POST", json: { server }, headers: COMPUTE_VERSION });
          form.querySelector("#boot-name").value = "";
          refresh();
          fill().catch(() => {});
        } catch (e) { actionFailed(`Booting ${server.name}`, e); }
      });
    },
  },
  el("label", { for: "boot-name" }, "Name"),
  el("input", { id: "boot-name", name: "name", required: true, maxlength: 255 }),
  el("label", { for: "boot-network" }, "Attach to"),
  attach,
  el("label", { for: "boot-flavor" }, "Flavor"),
  flavor,
  el("label", { for: "boot-image" }, "Image"),
  image,
  el("label", { for: "boot-host" }, "Host"),
  el("select", { id: "boot-host", name: "host" },
    el("option", { value: "" }, "any (scheduler)"),
    hosts.map((h) => el("option", { value: h }, h))),
  el("button", { type: "submit" }, "Boot"));
  const box = el("details", { class: "boot" }, el("summary", {}, "Boot an instance"), form);
  box.addEventListener("toggle", () => { if (box.open) fill().catch(() => {}); });
  return box;
}

async function deleteServer(s) {
  if (!window.confirm(`Delete ${s.name}?`)) return;
  lastActionError = "";
  try {
    await api(`/compute/v2.1/servers/${encodeURIComponent(s.id)}`, { method: "DELETE" });
    refresh();
  } catch (e) { actionFailed(`Deleting ${s.name}`, e); }
}

// What a live migration goes through, in order (the compute service's
// `switchyard:steps`).
const MIGRATION_STEPS = ["binding created", "destination plugged", "memory copied", "activated", "source unbound"];
// The ping stream runs this long before the request and after the end (the
// guest announces itself for a while after the move).
const STREAM_LEAD_MS = 300;
const STREAM_TAIL_MS = 1000;
// A migration not over after this is left to the Live migrations table.
const MIGRATION_WATCH_MS = 120_000;

// Functions told of every change the stream names, besides the page (a
// migration's progress view).
const watchers = new Set();
// What must be undone before signing out (a running ping stream): each a
// function returning a promise.
const cleanups = new Set();

// The host picker: every host, and whether it would take the server or why
// not, as the compute service says; the lab's guests a ping stream can run
// from.
async function migrateDialog(s, ports) {
  const id = encodeURIComponent(s.id);
  const [dests, guests] = await Promise.all([
    api(`/switchyard/v1/lab/servers/${id}/destinations`).then((d) => d.destinations)
      .catch(async () => (await computeHosts()).map((h) => ({ host: h, fits: true, reason: null }))),
    api("/switchyard/v1/lab/guests").then((g) => g.guests).catch(() => []),
  ]);
  const mine = new Set(ports.map((p) => p.id));
  const peers = guests.filter((g) => g.ip && !mine.has(g.port_id)).map((g) => g.name).sort();
  const target = (Object.values(s.addresses || {}).flat().find((a) => a.version === 4) || {}).addr;
  const error = el("p", { id: "migrate-error", class: "error", role: "alert" });
  const current = s["OS-EXT-SRV-ATTR:host"];
  const choice = (value, label, why, attrs = {}) => {
    const input = el("input", { type: "radio", name: "host", value, id: `migrate-to-${value || "any"}`, ...attrs });
    return el("li", {}, input, " ",
      el("label", { for: input.id }, label),
      why ? el("span", { class: `why ${attrs.disabled ? "" : "unfit"}` }, ` — ${why}`) : null);
  };
  const hostList = el("ul", { id: "migrate-hosts", class: "choices" },
    choice("", "any (the scheduler picks a host that fits)", null, { checked: true }),
    dests.map((d) => {
      const here = d.host === current;
      const load = d.capacity ? `, ${d.instances} of ${d.capacity} instances` : "";
      const label = `${d.host}${d.backend ? ` (${d.backend}${load})` : ""}`;
      return choice(d.host, label, d.fits ? null : (here ? d.reason : `not expected to take it: ${d.reason}`),
        { disabled: here || null, "data-fits": String(d.fits) });
    }));
  const peer = el("select", { id: "migrate-peer", name: "peer", disabled: !target || null },
    el("option", { value: "" }, "no ping stream"),
    peers.map((g) => el("option", { value: g }, g)));
  const form = el("form", {
    method: "dialog",
    onsubmit: (ev) => {
      ev.preventDefault();
      const f = new FormData(ev.target);
      return once(ev.target.querySelector("button[type=submit]"), () =>
        runMigration(s, f.get("host") || null, f.get("peer") || null, target, dialog, error));
    },
  },
  el("h2", { id: "migrate-title" }, `Live-migrate ${s.name}`),
  el("p", {}, `Now on ${current || "no host"}${target ? `, ${target}` : ""}.`),
  el("fieldset", {}, el("legend", {}, "Destination host"), hostList),
  el("label", { for: "migrate-peer" }, "Measure with a ping every 10 ms from"),
  peer,
  error,
  el("div", { class: "buttons" },
    el("button", { type: "submit" }, "Migrate"),
    el("button", { type: "button", onclick: () => dialog.close() }, "Cancel")));
  const dialog = el("dialog", { id: "migrate", "aria-labelledby": "migrate-title" }, form);
  dialog.addEventListener("close", () => dialog.remove());
  document.body.append(dialog);
  dialog.showModal();
}

// Requests the migration (under a ping stream from `peer` when asked) and
// turns the dialog into its progress: each step as the compute service
// records it, then the pings lost and the longest outage. Closing the dialog
// (Cancel, Escape, sign-out) before the request sends none; after it, stops
// watching and stops the ping stream (the migration itself goes on, and the
// Live migrations table shows it).
async function runMigration(s, host, peer, target, dialog, error) {
  const closed = new AbortController();
  dialog.addEventListener("close", () => closed.abort(), { once: true });
  // The stream is stopped with the token it was started with, even after a
  // sign-out, and without asking to sign in again.
  const token = session.token;
  const stream = peer ? `/switchyard/v1/lab/guests/${encodeURIComponent(peer)}/stream` : null;
  let streaming = false;
  let stopping = null;
  const stopStream = () => {
    if (streaming && !stopping) {
      stopping = api(stream, { method: "DELETE", token, quiet: true }).catch(() => null);
    }
    return stopping || Promise.resolve(null);
  };
  // A tab closed mid-migration still stops its stream.
  const onHide = () => {
    if (!streaming || stopping) return;
    fetch(stream, { method: "DELETE", keepalive: true, headers: token ? { "X-Auth-Token": token } : {} });
  };
  window.addEventListener("pagehide", onHide);
  const cleanup = () => { closed.abort(); return stopStream(); };
  cleanups.add(cleanup);
  const sleep = (ms) => new Promise((res) => {
    if (closed.signal.aborted) { res(); return; }
    const done = () => { clearTimeout(t); closed.signal.removeEventListener("abort", done); res(); };
    const t = setTimeout(done, ms);
    closed.signal.addEventListener("abort", done, { once: true });
  });
  let heard = () => {};
  const watcher = (kinds) => { if (kinds.includes("migration") || kinds.includes("server")) heard(); };
  watchers.add(watcher);
  closed.signal.addEventListener("abort", () => { heard(); stopStream(); }, { once: true });
  let problem = error;
  try {
    if (stream) {
      await api(stream, { method: "PUT", json: { stream: { target, interval_ms: 10 } } });
      streaming = true;
      await sleep(STREAM_LEAD_MS);
    }
    if (closed.signal.aborted) {
      await stopStream();
      return;
    }
    const body = { "os-migrateLive": { host, block_migration: "auto" } };
    try {
      await api(`/compute/v2.1/servers/${encodeURIComponent(s.id)}/action`,
        { method: "POST", json: body, headers: COMPUTE_VERSION });
    } catch (e) {
      // Nova's pre-check says why (a VF cannot move to a vRouter host, …).
      await stopStream();
      error.textContent = e.message;
      return;
    }
    const steps = el("ol", { id: "migrate-steps", class: "steps" },
      MIGRATION_STEPS.map((name) => el("li", { "data-step": name, "data-done": "false" }, name)));
    const state = el("p", { id: "migrate-status", role: "status" }, "Requested…");
    const pings = el("p", { id: "migrate-pings" }, stream ? `Pinging ${target} from ${peer} every 10 ms…` : "");
    problem = el("p", { id: "migrate-error", class: "error", role: "alert" });
    const close = el("button", { type: "button", onclick: () => dialog.close() }, "Close");
    dialog.querySelector("form").replaceChildren(
      el("h2", { id: "migrate-title" }, `Live-migrating ${s.name}`), steps, state, pings, problem,
      el("div", { class: "buttons" }, close));
    close.focus();
    refresh();
    const started = Date.now();
    while (!closed.signal.aborted) {
      const woke = new Promise((res) => { heard = res; });
      const list = await api(`/compute/v2.1/os-migrations?instance_uuid=${encodeURIComponent(s.id)}`,
        { quiet: true }).catch(() => ({ migrations: [] }));
      const m = list.migrations[0] || null;
      if (m) showSteps(m, steps, state);
      if ((m && ["completed", "error"].includes(m.status)) || Date.now() - started > MIGRATION_WATCH_MS) break;
      // Woken by the commit stream; a stream that dropped is covered by a
      // slow look.
      await Promise.race([woke, sleep(5000)]);
    }
    if (stream && !closed.signal.aborted) {
      await sleep(STREAM_TAIL_MS);
      const r = await stopStream();
      pings.textContent = r ? pingSummary(r.stream) : "The ping stream's report was not available.";
    }
  } catch (e) {
    await stopStream();
    problem.textContent = e.message;
  } finally {
    watchers.delete(watcher);
    cleanups.delete(cleanup);
    window.removeEventListener("pagehide", onHide);
  }
}

function showSteps(m, list, state) {
  const done = new Map((m["switchyard:steps"] || []).map((x) => [x.step, x]));
  for (const li of list.children) {
    const x = done.get(li.dataset.step);
    // A step part of which failed (and which the migration went on from)
    // is not shown as done.
    li.dataset.done = x ? (x.error ? "failed" : "true") : "false";
    li.textContent = x
      ? `${li.dataset.step} — ${x.at.slice(11, 23)}${x.error ? ` (failed: ${x.error})` : ""}`
      : li.dataset.step;
  }
  state.className = `migration ${m.status}`;
  state.textContent = m.status === "error"
    ? `Failed, rolled back: ${m["switchyard:error"] || "no reason given"}`
    : `${m.status}: ${m.source_compute} → ${m.dest_compute}`;
}

// The stream's report as an operator reads it; the request in flight when
// the stream stopped is not counted as lost.
function pingSummary(r) {
  const lost = (r.lost || []).filter((n) => n + 1 < r.sent).length;
  return `Lost ${lost} of ${r.sent} pings (every ${r.interval_ms} ms); longest outage ${r.outage_ms} ms.`;
}

// ---- verify: the connectivity matrix, run by the lab -----------------------------------

function rtt(ms) {
  if (ms == null) return "answered";
  return ms < 0.01 ? "<0.01 ms" : `${ms.toFixed(2)} ms`;
}

function verifyGrid(run) {
  const names = [...new Set(run.pairs.flatMap((p) => [p.from, p.to]))].sort();
  const at = new Map(run.pairs.map((p) => [`${p.from}\u0000${p.to}`, p]));
  const rows = names.map((from) => el("tr", {},
    el("th", { scope: "row" }, from),
    names.map((to) => {
      const p = at.get(`${from}\u0000${to}`);
      if (!p) return el("td", { class: "cell none" }, "—");
      const what = p.expect_reply
        ? (p.ok ? rtt(p.rtt_ms) : "no reply")
        : (p.ok ? "closed" : "open!");
      return el("td", {
        class: `cell ${p.ok ? "ok" : "bad"}`,
        "data-ok": String(p.ok),
        "data-from": from,
        "data-to": to,
        title: `${from} (${p.from_backend}) → ${to} (${p.to_backend}) ${p.to_ip}: ` +
          `${p.answered} of ${p.sent} answered; ${p.expect_reply ? "should answer" : "security groups close it"}`,
      }, what);
    })));
  return table(`From (rows) to (columns), ${count(run.pairs.length, "path")}`,
    ["", ...names], rows, { id: "verify-grid", class: "grid" });
}

function verifySummary(run) {
  const bad = run.pairs.filter((p) => !p.ok).length;
  return bad === 0
    ? `All ${count(run.pairs.length, "path")} as expected`
    : `${bad} of ${count(run.pairs.length, "path")} not as expected`;
}

// ---- navigation and refresh ------------------------------------------------------

let current = null;
// Counts sign-outs: a render started for one user is not shown to the next.
let signedOutTimes = 0;
let busy = false;
let again = false;

// What follows the page's name in the address (`#/nodes/compute-4`).
function pageArg() {
  const rest = location.hash.split("/").slice(2).join("/");
  return rest ? decodeURIComponent(rest) : null;
}

function pageFromHash() {
  const name = (location.hash.match(/^#\/(\w+)/) || [])[1];
  return Object.hasOwn(pages, name) ? name : "instances";
}

// Renders the current page; a refresh asked for while one runs runs after it.
async function refresh() {
  if (busy) { again = true; return; }
  busy = true;
  const shown = current;
  const who = signedOutTimes;
  const page = pages[shown];
  const target = $("#page");
  try {
    const content = await page.render();
    // Another page was opened meanwhile: this one's content is not shown.
    if (current === shown && who === signedOutTimes) target.replaceChildren(content);
  } catch (e) {
    if (e.status !== 401 && current === shown && who === signedOutTimes) {
      target.replaceChildren(el("p", { class: "error", role: "alert" }, e.message));
    }
  } finally {
    busy = false;
  }
  if (again) { again = false; refresh(); }
}

function show() {
  const was = current;
  current = pageFromHash();
  if (was && was !== current && pages[was].leave) pages[was].leave();
  for (const a of document.querySelectorAll("nav a")) {
    if (a.dataset.page === current) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  document.title = `${pages[current].title} · switchyard console`;
  $("#title").textContent = pages[current].title;
  const page = pages[current];
  const tools = $("#tools");
  tools.replaceChildren();
  if (page.tools) {
    const shown = current;
    page.tools().then((t) => { if (t && current === shown) tools.replaceChildren(t); });
  }
  refresh();
}

// ---- the commit stream ------------------------------------------------------------

function setLive(on, text) {
  const l = $("#live");
  l.className = `live ${on ? "on" : "off"}`;
  l.textContent = text || (on ? "live" : "reconnecting…");
}

let refreshSoon = null;
function changed(changes) {
  const kinds = [...new Set(changes.map((c) => c.kind))];
  for (const w of watchers) w(kinds);
  if (!current) return;
  const page = pages[current];
  const wanted = page.wants ? page.wants(changes) : kinds.some((k) => page.kinds.includes(k));
  if (!wanted) return;
  clearTimeout(refreshSoon);
  refreshSoon = setTimeout(refresh, 100);
}

function dispatch(block) {
  let event = "message";
  const data = [];
  for (const line of block.split("\n")) {
    if (line.startsWith(":")) continue;
    const i = line.indexOf(":");
    const field = i < 0 ? line : line.slice(0, i);
    const value = i < 0 ? "" : line.slice(i + 1).replace(/^ /, "");
    if (field === "event") event = value;
    else if (field === "data") data.push(value);
  }
  if (event === "ready") {
    setLive(true);
    refresh();
  } else if (event === "change") {
    try {
      const { changes } = JSON.parse(data.join("\n"));
      changed(changes);
    } catch { refresh(); }
  } else if (event === "resync") {
    refresh();
  }
}

// The stream's reader; aborted on sign-out (so that a sign-in again opens
// one stream, not one more) and when it has been silent for twice the
// server's keep-alive (a connection that died without closing).
let stream = null;
const SILENT_MS = 35_000;

async function listen() {
  if (stream) return;
  const mine = new AbortController();
  stream = mine;
  while (!mine.signal.aborted) {
    let silent = null;
    const quiet = () => {
      clearTimeout(silent);
      silent = setTimeout(() => mine.abort(), SILENT_MS);
    };
    try {
      const headers = session.token ? { "X-Auth-Token": session.token } : {};
      quiet();
      const r = await fetch("/switchyard/v1/events", { headers, cache: "no-store", signal: mine.signal });
      if (r.status === 401) { askSignIn(); break; }
      if (!r.ok || !r.body) throw new Error(`events: ${r.status}`);
      const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        quiet();
        buf += value.replace(/\r\n?/g, "\n");
        let i;
        while ((i = buf.indexOf("\n\n")) >= 0) {
          dispatch(buf.slice(0, i));
          buf = buf.slice(i + 2);
        }
      }
    } catch { /* reconnect below */ }
    clearTimeout(silent);
    if (stream !== mine) break;
    if (mine.signal.aborted) {
      // Silent too long: a fresh controller, and go again.
      stream = null;
      listen();
      return;
    }
    setLive(false);
    await new Promise((res) => setTimeout(res, 2000));
  }
  if (stream === mine) stream = null;
}

function stopListening() {
  const s = stream;
  stream = null;
  if (s) s.abort();
}

// ---- identity ---------------------------------------------------------------------

function askSignIn() {
  signedOutTimes += 1;
  stopListening();
  // What one user had open is not kept for the next.
  for (const p of Object.values(pages)) {
    if (p.leave) p.leave();
    if (p.markers) { p.markers = []; p.marker = null; }
  }
  clearTimeout(refreshSoon);
  for (const d of document.querySelectorAll("dialog")) d.close();
  $("#tools").replaceChildren();
  session.clear();
  $("#signin-panel").hidden = false;
  $("#content").hidden = true;
  $("#signout").hidden = true;
  $("#who").textContent = "";
  setLive(false, "signed out");
  $("#si-user").focus();
}

async function signIn(ev) {
  ev.preventDefault();
  const f = new FormData(ev.target);
  const domain = { name: f.get("domain") };
  const body = {
    auth: {
      identity: { methods: ["password"], password: { user: { name: f.get("user"), domain, password: f.get("password") } } },
      scope: { project: { name: f.get("project"), domain } },
    },
  };
  $("#signin-error").textContent = "";
  try {
    const r = await fetch("/identity/v3/auth/tokens", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
    });
    const token = r.headers.get("X-Subject-Token");
    let answer = null;
    try { answer = await r.json(); } catch { /* no body */ }
    if (!r.ok || !token) throw new Error(messageOf(answer) || `${r.status} ${r.statusText}`);
    const roles = ((answer && answer.token && answer.token.roles) || []).map((x) => x.name);
    session.set(token, `${f.get("user")} @ ${f.get("project")}`, roles);
    ev.target.reset();
    signedIn();
  } catch (e) {
    $("#signin-error").textContent = `Sign-in failed: ${e.message}`;
  }
}

async function signOut() {
  const token = session.token;
  // Ping streams are stopped with this token before it is revoked.
  const pending = [...cleanups].map((f) => f());
  askSignIn();
  await Promise.allSettled(pending);
  if (token) {
    // Revoke it, as `openstack token revoke` would; signed out either way.
    fetch("/identity/v3/auth/tokens", {
      method: "DELETE", headers: { "X-Auth-Token": token, "X-Subject-Token": token },
    }).catch(() => {});
  }
}

function signedIn() {
  $("#signin-panel").hidden = true;
  $("#content").hidden = false;
  $("#who").textContent = session.who || "";
  $("#signout").hidden = !session.token;
  show();
  listen();
}

window.addEventListener("hashchange", show);
$("#signin").addEventListener("submit", signIn);
$("#signout").addEventListener("click", signOut);
signedIn();
