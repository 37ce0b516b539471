// The Topology page: the fabric, the nodes on it, the instances and routers
// on the nodes and the networks they join, drawn with cytoscape.js (vendored,
// loaded only when this page is opened), with the encapsulation each path
// uses: a VLAN on a physical network or a VXLAN VNI. The graph is kept across
// refreshes: labels change in place, and when something moves (a live
// migration) the layout runs again, animated, so the instance is seen going
// from its old node to its new one. A table under the graph says the same in
// text, for keyboards and screen readers.

const LAYOUT_MS = 900;
// More instances than this make a graph nobody can read: the table still
// lists them all.
const MAX_DRAWN_DEVICES = 300;

const BACKENDS = {
  "Open vSwitch agent": "ovs",
  "vRouter agent": "vrouter",
  "NIC Switch agent": "sriov",
  "Gateway agent": "gateway",
};

const STYLE = [
  { selector: "node", style: {
    "label": "data(label)", "font-size": 11, "text-wrap": "wrap", "text-valign": "bottom",
    "text-margin-y": 4, "color": "#1b1f24", "background-color": "#8a94a3", "width": 22, "height": 22,
  } },
  { selector: "node.fabric", style: { "shape": "round-rectangle", "width": 60, "height": 26, "background-color": "#4a5360" } },
  { selector: "node.host", style: { "shape": "round-rectangle", "width": 44, "height": 30 } },
  { selector: "node.host.ovs", style: { "background-color": "#0b5cad" } },
  { selector: "node.host.vrouter", style: { "background-color": "#b3541e" } },
  { selector: "node.host.sriov", style: { "background-color": "#6a3fa0" } },
  { selector: "node.host.gateway", style: { "background-color": "#116b34" } },
  { selector: "node.host.down", style: { "border-width": 3, "border-color": "#a4161a", "border-style": "dashed" } },
  { selector: "node.vm", style: { "shape": "ellipse", "background-color": "#2b8a99" } },
  { selector: "node.router", style: { "shape": "diamond", "background-color": "#116b34" } },
  { selector: "node.internet", style: { "shape": "hexagon", "background-color": "#4a5360" } },
  { selector: "node.network", style: { "shape": "barrel", "width": 34, "height": 18, "background-color": "#c9d0da" } },
  { selector: "edge", style: {
    "width": 2, "line-color": "#8a94a3", "curve-style": "bezier", "label": "data(label)",
    "font-size": 9, "text-rotation": "autorotate", "text-background-color": "#ffffff",
    "text-background-opacity": 0.85, "text-background-padding": 1,
  } },
  { selector: "edge.underlay", style: { "width": 4, "line-color": "#4a5360" } },
  { selector: "edge.vlan", style: { "line-color": "#6a3fa0" } },
  { selector: "edge.vxlan", style: { "line-style": "dashed", "line-color": "#0b5cad" } },
  { selector: "edge.member", style: { "line-color": "#c9d0da", "width": 1 } },
];

// How a port's traffic leaves its node: the segment of its binding's last
// level (ML2's: a port on a VXLAN network bound through a dynamic VLAN
// segment leaves on that VLAN).
function encap(levels) {
  const last = levels && levels[levels.length - 1];
  if (!last || !last.network_type) return null;
  const seg = last.segmentation_id;
  if (last.network_type === "vxlan") return { kind: "vxlan", label: `VXLAN ${seg}` };
  if (last.network_type === "vlan") return { kind: "vlan", label: `VLAN ${seg}${last.physical_network ? ` (${last.physical_network})` : ""}` };
  return { kind: "other", label: last.network_type };
}

// A network's own (first static) segment, for its label.
function netEncap(n) {
  const type = n["provider:network_type"];
  const seg = n["provider:segmentation_id"];
  if (type === "vxlan") return `VXLAN ${seg}`;
  if (type === "vlan") return `VLAN ${seg}`;
  return type || "";
}

export function topologyPage({ api, el, table, count, session, fieldsQuery }) {
  let cytoscape = null;
  let cy = null;
  let box = null;
  let shape = "";

  async function load() {
    const [agents, ports, bindings, nets, routers, servers, lab] = await Promise.all([
      api(`/v2.0/agents?${fieldsQuery(["host", "agent_type", "alive"])}`).then((a) => a.agents),
      api(`/v2.0/ports?${fieldsQuery(["id", "name", "device_id", "device_owner", "network_id",
        "binding:host_id", "fixed_ips"])}`).then((p) => p.ports),
      api("/switchyard/v1/bindings").then((b) => b.bindings),
      api(`/v2.0/networks?${fieldsQuery(["id", "name", "provider:network_type",
        "provider:segmentation_id", "provider:physical_network", "router:external"])}`)
        .then((n) => n.networks),
      api(`/v2.0/routers?${fieldsQuery(["id", "name"])}`).then((r) => r.routers),
      // Every project's, for their names (an admin's page; Nova answers at
      // most 1,000 a page: beyond, instances are named by their ids).
      api("/compute/v2.1/servers/detail?all_tenants=1").then((s) => s.servers).catch(() => []),
      api("/switchyard/v1/lab").then((l) => l.lab).catch(() => null),
    ]);
    return { agents, ports, bindings, nets, routers, servers, lab };
  }

  // The graph's elements, and the rows of the text table.
  function model({ agents, ports, bindings, nets, routers, servers, lab }) {
    const netById = new Map(nets.map((n) => [n.id, n]));
    const levels = new Map(bindings.map((b) => [b.port_id, b.levels]));
    const names = new Map([...servers, ...routers].filter((x) => x.name).map((x) => [x.id, x.name]));
    const nodes = [{ data: { id: "fabric", label: "fabric" }, classes: "fabric" }];
    const edges = [];
    const hosts = new Map();
    for (const a of agents) {
      const backend = BACKENDS[a.agent_type] || "other";
      hosts.set(a.host, { backend, alive: a.alive, encaps: new Set() });
    }
    // Devices: instances (compute:*) and routers, each on the node its
    // ports are bound to.
    const devices = new Map();
    for (const p of ports) {
      const owner = p.device_owner || "";
      const isVm = owner.startsWith("compute:");
      const isRouter = owner.startsWith("network:router_");
      if (!p.device_id || (!isVm && !isRouter)) continue;
      if (!devices.has(p.device_id)) {
        devices.set(p.device_id, {
          id: p.device_id, kind: isVm ? "vm" : "router",
          name: names.get(p.device_id) || p.name || p.device_id.slice(0, 8), ports: [],
        });
      }
      devices.get(p.device_id).ports.push(p);
    }
    const rows = [];
    let drawn = 0;
    const netsUsed = new Set();
    for (const d of [...devices.values()].sort((a, b) => a.name.localeCompare(b.name))) {
      const host = (d.ports.find((p) => p["binding:host_id"]) || {})["binding:host_id"] || "";
      const paths = d.ports.map((p) => ({ p, net: netById.get(p.network_id), e: encap(levels.get(p.id)) }));
      rows.push({ d, host, paths });
      if (drawn >= MAX_DRAWN_DEVICES) continue;
      drawn += 1;
      const id = `${d.kind}:${d.id}`;
      nodes.push({ data: { id, label: d.name, name: d.name, host }, classes: d.kind });
      if (host && hosts.has(host)) {
        const e = paths.find((x) => x.e) || {};
        const label = [...new Set(paths.filter((x) => x.e).map((x) => x.e.label))].join(", ");
        edges.push({ data: { id: `on:${d.id}`, source: id, target: `host:${host}`, label }, classes: (e.e || {}).kind || "" });
        for (const x of paths) if (x.e) hosts.get(host).encaps.add(x.e.label);
      }
      for (const x of paths) {
        if (!x.net) continue;
        netsUsed.add(x.net.id);
        const ip = (x.p.fixed_ips || []).map((f) => f.ip_address).join(", ");
        edges.push({ data: { id: `in:${x.p.id}`, source: id, target: `net:${x.net.id}`, label: ip }, classes: "member" });
      }
    }
    for (const [name, h] of hosts) {
      nodes.push({
        data: { id: `host:${name}`, label: `${name}\n${h.backend}` },
        classes: `host ${h.backend}${h.alive ? "" : " down"}`,
      });
      edges.push({
        data: { id: `link:${name}`, source: "fabric", target: `host:${name}`, label: [...h.encaps].sort().join(" · ") },
        classes: "underlay",
      });
    }
    for (const id of netsUsed) {
      const n = netById.get(id);
      const e = netEncap(n);
      nodes.push({ data: { id: `net:${id}`, label: `${n.name || id.slice(0, 8)}${e ? `\n${e}` : ""}` }, classes: "network" });
    }
    // The internet, behind the gateway nodes (the lab's).
    if (lab && lab.internet) {
      nodes.push({ data: { id: "internet", label: `internet\n${lab.internet.hosts}` }, classes: "internet" });
      for (const [name, h] of hosts) {
        if (h.backend === "gateway") edges.push({ data: { id: `uplink:${name}`, source: `host:${name}`, target: "internet", label: "" } });
      }
    }
    return { elements: [...nodes, ...edges], rows, hosts, drawn, total: devices.size };
  }

  // What decides the layout: the elements and where each edge goes.
  function shapeOf(elements) {
    return elements.map((e) => `${e.data.id}>${e.data.source || ""}>${e.data.target || ""}`).sort().join("|");
  }

  function layout(animate) {
    cy.layout({
      name: "breadthfirst", roots: ["fabric"], directed: false, spacingFactor: 1.1,
      padding: 20, animate, animationDuration: LAYOUT_MS, fit: true,
    }).run();
  }

  function update(elements) {
    const next = new Set(elements.map((e) => e.data.id));
    cy.batch(() => {
      cy.elements().filter((e) => !next.has(e.id())).remove();
      for (const e of elements) {
        const have = cy.getElementById(e.data.id);
        if (have.nonempty() && have.isEdge()
            && (have.data("source") !== e.data.source || have.data("target") !== e.data.target)) {
          have.remove();
        }
        const now = cy.getElementById(e.data.id);
        if (now.nonempty()) {
          now.data(e.data);
          now.classes(e.classes || "");
        } else {
          // A new node starts where it attaches, so that the layout moves
          // it from there.
          const near = e.data.host ? cy.getElementById(`host:${e.data.host}`) : null;
          const position = near && near.nonempty() ? { ...near.position() } : undefined;
          cy.add({ group: e.data.source ? "edges" : "nodes", ...e, position });
        }
      }
    });
  }

  function placement(rows) {
    return table(count(rows.length, "instance or router", "instances and routers"),
      ["Name", "Kind", "Node", "Networks", "Path"],
      rows.map(({ d, host, paths }) => el("tr", { "data-device": d.name, "data-host": host },
        el("th", { scope: "row" }, d.name),
        el("td", {}, d.kind === "vm" ? "instance" : "router"),
        el("td", {}, host || "(not bound)"),
        el("td", {}, paths.map((x) => `${x.net ? x.net.name || x.net.id : x.p.network_id}: ${(x.p.fixed_ips || []).map((f) => f.ip_address).join(", ")}`).join("; ")),
        el("td", {}, [...new Set(paths.filter((x) => x.e).map((x) => x.e.label))].join(", ")))),
      { id: "placement" });
  }

  let wrap = null;
  // Counts the times the page was left: a render that started before is
  // dropped (it would draw a graph nobody destroys).
  let left = 0;

  // Runs once the page's content is in the document (cytoscape measures its
  // container).
  function draw(m) {
    const s = shapeOf(m.elements);
    if (!cy) {
      cy = cytoscape({ container: box, elements: m.elements, style: STYLE, wheelSensitivity: 0.3 });
      window.switchyardTopology = cy;
      layout(false);
    } else {
      cy.resize();
      update(m.elements);
      if (s !== shape) layout(true);
    }
    shape = s;
  }

  return {
    title: "Topology",
    kinds: ["server", "port", "network", "agent", "node", "router"],
    async render() {
      if (!session.isAdmin) {
        return el("p", { class: "note" }, "The topology (the nodes and what runs where) is shown to admins.");
      }
      const gen = left;
      if (!cytoscape) cytoscape = (await import("./vendor/cytoscape.esm.min.js")).default;
      const m = model(await load());
      if (gen !== left) return el("div", {});
      if (!wrap) {
        box = el("div", { id: "topology", role: "img", "aria-label": "Topology graph; the table below lists the same" });
        wrap = el("div", {}, box, el("div", {}));
      }
      wrap.lastChild.replaceChildren(
        el("p", { class: "note legend" },
          "Nodes hang off the fabric (its links say which VXLAN VNIs and VLANs each node carries); " +
          "instances (circles) and routers (diamonds) hang off the node they are bound on, labelled " +
          "with their path (dashed: VXLAN, solid: VLAN), and join their networks (bottom). " +
          (m.drawn < m.total ? `Drawn: ${m.drawn} of ${m.total}; the table lists all.` : "")),
        placement(m.rows));
      setTimeout(() => { if (wrap && wrap.isConnected) draw(m); }, 0);
      return wrap;
    },
    // The page was left: the graph is made again when it is shown.
    leave() {
      left += 1;
      if (cy) cy.destroy();
      cy = null;
      box = null;
      wrap = null;
      shape = "";
      window.switchyardTopology = undefined;
    },
  };
}
