// The tidegate web console: one page whose views are picked by the URL fragment (#/fleet,
// #/agent/ID, #/windows, #/bundles, #/rollout/ID, #/audit). Each view builds its headings and
// controls once, then refreshes only its data regions on a timer, so filters and focus survive a
// refresh. Every API call sends the token from the sign-in form as a bearer token. The token is
// kept in sessionStorage, so it lives only as long as the browser tab.
//
// The page builds all markup with DOM calls and textContent, never by parsing strings as HTML,
// so nothing the API returns can inject markup or script.
"use strict";

const TOKEN_KEY = "tidegate.api-token";

// Data older than this counts as unknown, never as pass. The server has no per-tier freshness
// limit yet, so the console uses one limit for every tier.
const STALE_AFTER_SECONDS = 60 * 60;

const CALENDAR_DAYS = 14;

// Rollout agent states that count as finished when the console draws a progress bar, as the
// server names them in a rollout's `counts`. Pending, delivered, running and rolling_back agents
// have no outcome yet.
const FINISHED_STATES = new Set(["applied", "failed", "rolled_back", "rollback_failed"]);

// ---------------------------------------------------------------------------------------------
// DOM helpers

// Creates an element. `attributes` values: strings become attributes, functions under "on..."
// become listeners, and `dataset` / `className` are set directly. Children may be strings,
// numbers, nodes, arrays or null.
function h(tag, attributes, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") {
      element.addEventListener(name.slice(2), value);
    } else if (name === "className") {
      element.className = value;
    } else if (name === "dataset") {
      Object.assign(element.dataset, value);
    } else if (value === true) {
      element.setAttribute(name, "");
    } else {
      element.setAttribute(name, String(value));
    }
  }
  append(element, children);
  return element;
}

function append(element, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : String(child));
  }
}

function replaceChildren(element, ...children) {
  element.replaceChildren();
  append(element, children);
}

// A pass, fail or unknown badge. The word is visible to screen readers; sighted users see the
// colour and the icon as well.
function stateBadge(state, text) {
  return h("span", { className: `state ${state}` },
    h("span", { className: "visually-hidden" }, `${state}: `), text);
}

function notice(text, kind) {
  return h("p", { className: `notice ${kind || ""}`, role: kind === "error" ? "alert" : null }, text);
}

function notAvailable(what) {
  return notice(`${what} is not available yet: this server does not offer it.`, "unavailable");
}

// A table with a caption, column headers and rows. A row is an array of cells; a cell is a value
// or `{header: true, content}` for a row header.
function table(caption, headers, rows, attributes) {
  return h("table", attributes || {},
    caption ? h("caption", {}, caption) : null,
    h("thead", {}, h("tr", {}, headers.map((title) => h("th", { scope: "col" }, title)))),
    h("tbody", {}, rows.map((row) => tableRow(row))));
}

function tableRow(row) {
  const cells = row.cells || row;
  return h("tr", row.attributes || {}, cells.map((cell) => {
    if (cell && cell.header) return h("th", { scope: "row" }, cell.content);
    return h("td", {}, cell);
  }));
}

// ---------------------------------------------------------------------------------------------
// Formatting

function formatAge(unixSeconds, nowSeconds) {
  if (unixSeconds === null || unixSeconds === undefined) return "never";
  const now = nowSeconds === undefined ? Date.now() / 1000 : nowSeconds;
  const delta = Math.round(now - unixSeconds);
  const magnitude = Math.abs(delta);
  let text;
  if (magnitude < 60) text = `${magnitude}s`;
  else if (magnitude < 3600) text = `${Math.floor(magnitude / 60)}m`;
  else if (magnitude < 86400) text = `${Math.floor(magnitude / 3600)}h`;
  else text = `${Math.floor(magnitude / 86400)}d`;
  return delta >= 0 ? `${text} ago` : `in ${text}`;
}

function formatUtc(unixSeconds) {
  if (unixSeconds === null || unixSeconds === undefined) return "";
  return new Date(unixSeconds * 1000).toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC");
}

// A relative time whose full UTC timestamp shows on hover.
function timeCell(unixSeconds) {
  if (unixSeconds === null || unixSeconds === undefined) return "never";
  return h("time", { datetime: new Date(unixSeconds * 1000).toISOString(), title: formatUtc(unixSeconds) },
    formatAge(unixSeconds));
}

function formatBytes(bytes) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = Number(bytes) || 0;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return unit === 0 ? `${value} B` : `${value.toFixed(1)} ${units[unit]}`;
}

function shortHash(hash) {
  return h("code", { title: hash || "" }, hash ? `${hash.slice(0, 12)}…` : "");
}

function displayValue(value) {
  if (value === null || value === undefined) return "";
  if (typeof value === "boolean") return value ? "yes" : "no";
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}

// ---------------------------------------------------------------------------------------------
// API access

class ApiError extends Error {
  constructor(status, message, endpointMissing) {
    super(message);
    this.status = status;
    // True when the server has no such route at all, as opposed to a route that returned 404
    // for one object (which carries a JSON error body).
    this.endpointMissing = Boolean(endpointMissing);
  }
}

async function api(path, options) {
  const token = sessionStorage.getItem(TOKEN_KEY) || "";
  const request = {
    method: (options && options.method) || "GET",
    headers: { Accept: "application/json", Authorization: `Bearer ${token}` },
    cache: "no-store",
  };
  if (options && options.json !== undefined) {
    request.headers["Content-Type"] = "application/json";
    request.body = JSON.stringify(options.json);
  }

  let response;
  try {
    response = await fetch(path, request);
  } catch (error) {
    throw new ApiError(0, `cannot reach the server (${error.message}); retrying`);
  }
  const text = await response.text();
  let body = null;
  try {
    body = text ? JSON.parse(text) : null;
  } catch (_) {
    body = null;
  }
  if (response.ok) return body;

  const reason = body && typeof body.error === "string" ? body.error : text.slice(0, 200);
  if (response.status === 401) {
    signOut("The server did not accept your token (401 Unauthorized). Sign in with a valid token.");
    throw new ApiError(401, "not signed in");
  }
  if (response.status === 403) {
    throw new ApiError(403, `your token's role does not allow this (403 Forbidden)${reason ? `: ${reason}` : ""}`);
  }
  if (response.status === 404) {
    throw new ApiError(404, reason || `${path} not found`, !(body && body.error));
  }
  throw new ApiError(response.status, `${path} failed with status ${response.status}${reason ? `: ${reason}` : ""}`);
}

// Fetches `path`, or returns `{missing: true}` when the server has no such endpoint.
async function apiOptional(path) {
  try {
    return { data: await api(path), missing: false };
  } catch (error) {
    if (error instanceof ApiError && error.endpointMissing) return { data: null, missing: true };
    throw error;
  }
}

// ---------------------------------------------------------------------------------------------
// Session

function signedIn() {
  return Boolean(sessionStorage.getItem(TOKEN_KEY));
}

function signOut(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  stopPage();
  showSignIn(message);
}

function showSignIn(message) {
  document.getElementById("view").replaceChildren();
  document.getElementById("session").hidden = true;
  document.querySelector(".top-bar nav").hidden = true;
  const section = document.getElementById("sign-in");
  section.hidden = false;
  const messageElement = document.getElementById("sign-in-message");
  messageElement.hidden = !message;
  messageElement.textContent = message || "";
  setStatus("");
  document.getElementById("token").focus();
}

function setupSession() {
  document.getElementById("sign-in-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const input = document.getElementById("token");
    const token = input.value.trim();
    if (!token) return;
    sessionStorage.setItem(TOKEN_KEY, token);
    input.value = "";
    document.getElementById("sign-in").hidden = true;
    if (!location.hash || location.hash === "#/") location.hash = "#/fleet";
    else route();
  });
  document.getElementById("sign-out").addEventListener("click", () => signOut("You signed out."));
}

// ---------------------------------------------------------------------------------------------
// Page scheduling

let currentPage = null;
let pageGeneration = 0;
let refreshTimer = null;

function stopPage() {
  pageGeneration += 1;
  if (refreshTimer) clearTimeout(refreshTimer);
  refreshTimer = null;
  currentPage = null;
}

function setStatus(text, isError) {
  const status = document.getElementById("refresh-status");
  status.textContent = text;
  status.classList.toggle("error", Boolean(isError));
}

async function refreshLoop(page, generation) {
  try {
    await page.refresh();
    if (generation !== pageGeneration) return;
    const every = page.intervalMs >= 1000 ? `${page.intervalMs / 1000} s` : `${page.intervalMs} ms`;
    setStatus(`Updated ${new Date().toLocaleTimeString()}; refreshes every ${every}`);
  } catch (error) {
    if (generation !== pageGeneration) return;
    if (error instanceof ApiError && error.status === 401) return;
    setStatus(`Refresh failed at ${new Date().toLocaleTimeString()}: ${error.message}`, true);
    if (page.showError) page.showError(error);
  }
  if (generation !== pageGeneration) return;
  refreshTimer = setTimeout(() => refreshLoop(page, generation), page.intervalMs);
}

function route() {
  stopPage();
  if (!signedIn()) {
    showSignIn("");
    return;
  }
  document.getElementById("sign-in").hidden = true;
  document.getElementById("session").hidden = false;
  document.querySelector(".top-bar nav").hidden = false;

  const parts = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
  const name = parts[0] || "fleet";
  const factory = PAGES[name] || PAGES.fleet;
  const page = factory(parts.slice(1));
  currentPage = page;

  for (const link of document.querySelectorAll("nav a[data-page]")) {
    const current = link.dataset.page === (page.navigation || name);
    if (current) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  document.title = `${page.title} · tidegate console`;
  const view = document.getElementById("view");
  view.replaceChildren();
  page.mount(view);
  setStatus("Loading…");
  refreshLoop(page, pageGeneration);
}

// ---------------------------------------------------------------------------------------------
// Fleet overview

// Reads the pass/fail/unknown states of one agent. Everything is unknown when the agent never
// reported or its last report is older than STALE_AFTER_SECONDS.
function agentStates(agent, nowSeconds) {
  const reported = agent.last_report_unix_s !== null && agent.last_report_unix_s !== undefined;
  const stale = !reported || nowSeconds - agent.last_report_unix_s > STALE_AFTER_SECONDS;
  const known = (passes) => {
    if (stale) return "unknown";
    return passes ? "pass" : "fail";
  };
  return {
    stale,
    online: agent.online ? "pass" : "fail",
    pending: known(agent.pending_updates === 0),
    security: known(agent.security_updates === 0),
    reboot: known(!agent.reboot_required),
    report: stale ? "unknown" : "pass",
  };
}

function fleetPage() {
  let grouping = sessionStorage.getItem("tidegate.fleet-grouping") === "owner" ? "owner" : "tier";
  let summary;
  let groups;
  let lastAgents = null;

  function render() {
    if (!lastAgents) return;
    const agents = lastAgents;
    const now = Date.now() / 1000;
    const states = agents.map((agent) => agentStates(agent, now));
    const count = (predicate) => states.filter(predicate).length;
    replaceChildren(summary,
      summaryTile("Agents", agents.length),
      summaryTile("Online", agents.filter((agent) => agent.online).length),
      summaryTile("With pending updates", count((state) => state.pending === "fail")),
      summaryTile("With security updates", count((state) => state.security === "fail")),
      summaryTile("Reboot needed", count((state) => state.reboot === "fail")),
      summaryTile("Stale or never reported", count((state) => state.stale)));

    if (agents.length === 0) {
      replaceChildren(groups, notice("No agent has reported to this server yet."));
      return;
    }
    const byGroup = new Map();
    for (const agent of agents) {
      const key = (grouping === "owner" ? agent.owner : agent.tier) || "";
      if (!byGroup.has(key)) byGroup.set(key, []);
      byGroup.get(key).push(agent);
    }
    const keys = [...byGroup.keys()].sort((a, b) => (a === "") - (b === "") || a.localeCompare(b));
    const otherTitle = grouping === "owner" ? "Tier" : "Owner";
    replaceChildren(groups, keys.map((key) => {
      const members = byGroup.get(key);
      const label = key || (grouping === "owner" ? "no owner assigned" : "no tier reported");
      const headingId = `group-${grouping}-${key || "none"}`.replace(/[^A-Za-z0-9_-]/g, "_");
      const rows = members.map((agent) => {
        const state = agentStates(agent, now);
        const other = (grouping === "owner" ? agent.tier : agent.owner) || "—";
        return {
          attributes: { dataset: { agentId: agent.agent_id } },
          cells: [
            { header: true, content: h("a", { href: `#/agent/${encodeURIComponent(agent.agent_id)}` }, agent.hostname || agent.agent_id.slice(0, 12)) },
            other,
            stateBadge(state.online, agent.online ? "online" : "offline"),
            stateBadge(state.pending, String(agent.pending_updates)),
            stateBadge(state.security, String(agent.security_updates)),
            stateBadge(state.reboot, agent.reboot_required ? "needed" : "no"),
            stateBadge(state.report, timeCell(agent.last_report_unix_s)),
            bundleSummary(agent),
          ],
        };
      });
      const memberStates = members.map((agent) => agentStates(agent, now));
      const tally = (predicate) => memberStates.filter(predicate).length;
      const groupSummary = [
        `${members.filter((agent) => agent.online).length} online`,
        `${tally((state) => state.pending === "fail")} with pending updates`,
        `${tally((state) => state.security === "fail")} with security updates`,
        `${tally((state) => state.reboot === "fail")} need a reboot`,
        `${tally((state) => state.stale)} unknown`,
      ].join(", ");
      return h("section", { className: "group", "aria-labelledby": headingId, dataset: { group: key, grouping } },
        h("h2", { id: headingId }, `${grouping === "owner" ? "Owner" : "Tier"}: ${label} `,
          h("span", { className: "count" }, `(${members.length} ${members.length === 1 ? "agent" : "agents"})`)),
        h("p", { className: "group-summary" }, groupSummary),
        table(null,
          ["Host", otherTitle, "Online", "Pending updates", "Security updates", "Reboot", "Last report", "Bundles"],
          rows, { className: "fleet" }));
    }));
  }

  return {
    title: "Fleet",
    intervalMs: 5000,
    mount(view) {
      summary = h("div", { className: "tiles", "aria-label": "Fleet summary", role: "group" });
      groups = h("div", { id: "fleet-groups" }, notice("Loading the fleet…"));
      const option = (value, text) => h("label", {},
        h("input", {
          type: "radio", name: "grouping", value, checked: grouping === value,
          onchange: () => {
            grouping = value;
            sessionStorage.setItem("tidegate.fleet-grouping", value);
            render();
          },
        }), ` ${text}`);
      append(view, [
        h("h1", {}, "Fleet"),
        summary,
        h("fieldset", { className: "grouping" }, h("legend", {}, "Group agents by"),
          option("tier", "tier"), option("owner", "owner team")),
        h("p", { className: "hint" },
          `A state shows as unknown when the agent's last report is older than ${STALE_AFTER_SECONDS / 60} minutes.`),
        groups,
      ]);
    },
    async refresh() {
      const response = await api("/api/v1/agents");
      lastAgents = response.agents || [];
      render();
    },
    showError(error) {
      if (!lastAgents) replaceChildren(groups, notice(`Cannot load the fleet: ${error.message}`, "error"));
    },
  };
}

// The bundles of an agent that need attention: failed reverts or rollbacks first, because a
// person must check the host, then bundles waiting for a maintenance window.
function bundleSummary(agent) {
  const parts = [];
  if (agent.bundles_needing_person) parts.push(stateBadge("fail", `${agent.bundles_needing_person} need a person`));
  if (agent.bundles_waiting) parts.push(stateBadge("unknown", `${agent.bundles_waiting} waiting`));
  return parts.length ? h("span", { className: "bundle-summary" }, parts) : "—";
}

function summaryTile(label, value) {
  return h("div", { className: "tile" },
    h("span", { className: "tile-value" }, String(value)),
    h("span", { className: "tile-label" }, label));
}

// ---------------------------------------------------------------------------------------------
// One agent

function agentPage(parameters) {
  const agentId = parameters[0] || "";
  let heading;
  let facts;
  let updates;
  let bundles;
  let warnings;
  let packageCount;
  let packageBody;
  let filterInput;
  let ownerInput;
  let ownerMessage;
  let packages = [];
  let ownerEdited = false;

  function renderPackages() {
    const filter = filterInput.value.trim().toLowerCase();
    const shown = filter
      ? packages.filter((row) => `${row.name} ${row.version} ${row.arch}`.toLowerCase().includes(filter))
      : packages;
    packageCount.textContent = filter
      ? `Showing ${shown.length} of ${packages.length} package rows`
      : `${packages.length} package rows`;
    packageCount.dataset.total = String(packages.length);
    packageCount.dataset.shown = String(shown.length);
    packageBody.replaceChildren(...shown.map((row) => tableRow([
      { header: true, content: row.name }, row.version, row.arch, row.state, row.ecosystem,
    ])));
  }

  async function assignOwner(event) {
    event.preventDefault();
    ownerMessage.textContent = "Saving…";
    try {
      const result = await api(`/api/v1/agents/${encodeURIComponent(agentId)}/owner`,
        { method: "POST", json: { owner: ownerInput.value.trim() } });
      ownerEdited = false;
      ownerMessage.textContent = result.owner ? `Owner team set to ${result.owner}.` : "Owner team cleared.";
    } catch (error) {
      ownerMessage.textContent = error.endpointMissing
        ? "Assigning owners is not available yet on this server."
        : `Cannot assign the owner: ${error.message}`;
    }
  }

  function renderDetail(detail) {
    const agent = detail.summary;
    const now = Date.now() / 1000;
    const state = agentStates(agent, now);
    heading.textContent = agent.hostname || agent.agent_id;
    if (!ownerEdited && document.activeElement !== ownerInput) ownerInput.value = agent.owner || "";

    const fact = (term, value) => [h("dt", {}, term), h("dd", {}, value)];
    replaceChildren(facts,
      fact("Agent id", h("code", {}, agent.agent_id)),
      fact("Tier", agent.tier || "—"),
      fact("Owner team", agent.owner || "none assigned"),
      fact("Operating system", `${agent.os_name} ${agent.os_version}`.trim() || "—"),
      fact("Kernel", agent.kernel_version || "—"),
      fact("Architecture", agent.arch || "—"),
      fact("CPUs", String(agent.cpu_count)),
      fact("Memory", formatBytes(agent.memory_total_bytes)),
      fact("Agent version", agent.agent_version || "—"),
      fact("Online", stateBadge(state.online, agent.online ? "online" : "offline")),
      fact("Last report", stateBadge(state.report, timeCell(agent.last_report_unix_s))),
      fact("Reboot", stateBadge(state.reboot, agent.reboot_required
        ? `needed${detail.reboot_packages.length ? ` for ${detail.reboot_packages.join(", ")}` : ""}`
        : "not needed")),
      fact("Trust root", agent.trust_root_version === null || agent.trust_root_version === undefined
        ? "none pinned" : `version ${agent.trust_root_version}`),
      fact("First seen", timeCell(agent.first_seen_unix_s)),
      fact("Reports received", String(agent.reports_received)));

    replaceChildren(updates,
      h("h2", { id: "updates-heading" }, `Pending updates (${detail.pending_updates.length}, ${agent.security_updates} security)`),
      detail.pending_updates.length === 0
        ? notice("No pending updates.")
        : table(null, ["Package", "Architecture", "Installed", "Candidate", "Security", "Held"],
          detail.pending_updates.map((row) => [
            { header: true, content: row.name }, row.arch, row.installed_version, row.candidate_version,
            row.security ? stateBadge(state.security, "security") : "no",
            row.held ? "held" : "no",
          ]), { className: "updates" }));

    const records = [...(detail.bundles || [])].reverse();
    replaceChildren(bundles,
      h("h2", { id: "bundles-heading" }, `Bundle history (${records.length}, newest first)`),
      records.length === 0
        ? notice("This agent has no bundle records.")
        : table(null, ["Bundle", "Stream", "Sequence", "Outcome", "Decided", "Hash"],
          records.map((record) => [
            { header: true, content: record.bundle_id }, record.stream, String(record.sequence),
            outcomeCell(record.outcome, record.steps), timeCell(record.decided_at_unix_s), shortHash(record.bundle_hash),
          ]), { className: "bundle-history" }));

    replaceChildren(warnings, (detail.warnings || []).length === 0 ? null : [
      h("h2", {}, `Collector warnings (${detail.warnings.length})`),
      h("ul", {}, detail.warnings.map((warning) => h("li", {}, h("strong", {}, warning.source), `: ${warning.message}`))),
    ]);

    packages = detail.packages || [];
    renderPackages();
  }

  return {
    title: "Agent",
    navigation: "fleet",
    intervalMs: 10000,
    mount(view) {
      heading = h("h1", {}, agentId);
      facts = h("dl", { className: "facts" });
      updates = h("section", { "aria-labelledby": "updates-heading" });
      bundles = h("section", { "aria-labelledby": "bundles-heading" });
      warnings = h("section", {});
      packageCount = h("p", { id: "package-count", "aria-live": "polite" });
      packageBody = h("tbody", {});
      filterInput = h("input", { id: "package-filter", type: "search", autocomplete: "off", oninput: renderPackages });
      ownerInput = h("input", {
        id: "owner-team", type: "text", maxlength: "64", autocomplete: "off",
        oninput: () => { ownerEdited = true; },
      });
      ownerMessage = h("span", { className: "form-message", "aria-live": "polite" });
      append(view, [
        h("p", { className: "breadcrumb" }, h("a", { href: "#/fleet" }, "Fleet"), " › agent"),
        heading,
        facts,
        h("form", { className: "inline-form", onsubmit: assignOwner },
          h("label", { for: "owner-team" }, "Owner team"), ownerInput,
          h("button", { type: "submit" }, "Assign"), ownerMessage),
        updates,
        bundles,
        warnings,
        h("section", { "aria-labelledby": "packages-heading" },
          h("h2", { id: "packages-heading" }, "Packages"),
          h("div", { className: "filter" }, h("label", { for: "package-filter" }, "Filter packages"), filterInput),
          packageCount,
          h("table", { className: "packages" },
            h("thead", {}, h("tr", {}, ["Name", "Version", "Architecture", "State", "Ecosystem"]
              .map((title) => h("th", { scope: "col" }, title)))),
            packageBody)),
      ]);
    },
    async refresh() {
      const detail = await api(`/api/v1/agents/${encodeURIComponent(agentId)}`);
      document.title = `${detail.summary.hostname || agentId} · tidegate console`;
      renderDetail(detail);
    },
    showError(error) {
      if (error.status === 404 || error.status === 400) {
        replaceChildren(facts, notice(`No such agent: ${error.message}`, "error"));
      }
    },
  };
}

// Renders a bundle record's outcome, which the server sends in serde's external tagging: a bare
// string for a variant without fields ("Applied"), or {"Variant": {fields}}. A waiting bundle
// shows when the agent expects to start it, and the record's steps follow as a numbered list.
function outcomeCell(outcome, steps) {
  let variant = "unknown";
  let fields = {};
  if (typeof outcome === "string") {
    variant = outcome;
  } else if (outcome && typeof outcome === "object") {
    [variant, fields] = Object.entries(outcome)[0] || ["unknown", {}];
    fields = fields && typeof fields === "object" ? fields : {};
  } else {
    return displayValue(outcome);
  }
  const parts = [stateBadge(outcomeState(variant), outcomeLabel(variant, fields))];
  const detail = outcomeDetail(variant, fields);
  if (detail) parts.push(h("span", { className: "outcome-detail" }, ` ${detail}`));
  if (Array.isArray(steps) && steps.length) {
    parts.push(h("ol", { className: "steps", start: "0", "aria-label": "Step outcomes" },
      steps.map((step) => h("li", { value: String(step.index) },
        h("code", {}, step.kind), " ", stateBadge(stepState(step.outcome), outcomeName(String(step.outcome))),
        step.detail ? h("span", { className: "outcome-detail" }, ` ${step.detail}`) : null))));
  }
  return h("div", { className: "outcome" }, parts);
}

// The badge text: the variant's name, with when a waiting bundle is expected to start and which
// step a running bundle is on.
function outcomeLabel(variant, fields) {
  if (variant === "Waiting") {
    const start = fields.expected_start_unix_s;
    return start === null || start === undefined ? "waiting" : `waiting until ${formatUtc(start)}`;
  }
  if (variant === "Running" && fields.step !== undefined) return `running step ${fields.step}`;
  return outcomeName(variant);
}

// The text after the badge: the reason, rule or failed step of the outcomes that carry one.
function outcomeDetail(variant, fields) {
  switch (variant) {
    case "Waiting":
      return fields.code ? `${fields.code}: ${fields.reason || ""}` : fields.reason || "";
    case "Deferred":
      return fields.reason || "";
    case "Rejected":
      return `${fields.rule || ""}: ${fields.detail || ""}`;
    case "Reverted":
      return `${fields.step === null || fields.step === undefined ? "a health check failed" : `step ${fields.step} failed`}: ${fields.detail || ""}`;
    case "RevertFailed":
    case "RollbackFailed":
      return `at step ${fields.step}: ${fields.detail || ""}; a person must check the host`;
    default:
      return Object.entries(fields).filter(([key]) => key !== "step")
        .map(([key, value]) => `${key}: ${displayValue(value)}`).join("; ");
  }
}

function outcomeName(variant) {
  return variant.replace(/([a-z])([A-Z])/g, "$1 $2").toLowerCase();
}

function outcomeState(variant) {
  const name = variant.toLowerCase();
  if (["accepted", "alreadyapplied", "applied"].includes(name)) return "pass";
  if (["rejected", "reverted", "revertfailed", "rollbackfailed"].includes(name)) return "fail";
  return "unknown";
}

function stepState(outcome) {
  if (outcome === "Applied") return "pass";
  if (outcome === "Failed" || outcome === "RevertFailed") return "fail";
  return "unknown";
}

// ---------------------------------------------------------------------------------------------
// Windows calendar

// Returns the wall-clock fields of `ms` in `zone`.
function zoneParts(ms, zone) {
  const format = new Intl.DateTimeFormat("en-US", {
    timeZone: zone, hourCycle: "h23", year: "numeric", month: "numeric", day: "numeric",
    hour: "numeric", minute: "numeric", second: "numeric",
  });
  const parts = {};
  for (const part of format.formatToParts(new Date(ms))) parts[part.type] = Number(part.value);
  return parts;
}

// The zone's offset from UTC at `ms`, in milliseconds.
function zoneOffsetMs(ms, zone) {
  const p = zoneParts(ms, zone);
  const wall = Date.UTC(p.year, p.month - 1, p.day, p.hour, p.minute, p.second);
  return wall - Math.floor(ms / 1000) * 1000;
}

// The UTC instant of local midnight starting the date (year, month, day) in `zone`. The second
// pass corrects the offset guess on days whose offset changes.
function localMidnightMs(year, month, day, zone) {
  const wall = Date.UTC(year, month - 1, day);
  let instant = wall - zoneOffsetMs(wall, zone);
  instant = wall - zoneOffsetMs(instant, zone);
  return instant;
}

function validZone(zone) {
  try {
    new Intl.DateTimeFormat("en-US", { timeZone: zone });
    return true;
  } catch (_) {
    return false;
  }
}

// The CALENDAR_DAYS days starting today in `zone`, each with its start and end as UTC instants.
function calendarDays(zone, nowMs) {
  const today = zoneParts(nowMs, zone);
  const days = [];
  for (let index = 0; index < CALENDAR_DAYS; index += 1) {
    const date = new Date(Date.UTC(today.year, today.month - 1, today.day + index));
    const next = new Date(Date.UTC(today.year, today.month - 1, today.day + index + 1));
    days.push({
      date,
      startMs: localMidnightMs(date.getUTCFullYear(), date.getUTCMonth() + 1, date.getUTCDate(), zone),
      endMs: localMidnightMs(next.getUTCFullYear(), next.getUTCMonth() + 1, next.getUTCDate(), zone),
    });
  }
  return days;
}

function formatInZone(ms, zone, withDate) {
  const options = { timeZone: zone, hourCycle: "h23", hour: "2-digit", minute: "2-digit" };
  if (withDate) Object.assign(options, { weekday: "short", day: "numeric", month: "short" });
  return new Intl.DateTimeFormat("en-GB", options).format(new Date(ms));
}

// "Tue 8 Dec 02:00–04:00 Europe/Berlin (01:00–03:00 UTC)".
function intervalText(startMs, endMs, zone) {
  const local = `${formatInZone(startMs, zone, true)}–${formatInZone(endMs, zone, endMs - startMs >= 86400000)} ${zone}`;
  if (zone === "UTC") return local;
  return `${local} (${formatInZone(startMs, "UTC", true)}–${formatInZone(endMs, "UTC", endMs - startMs >= 86400000)} UTC)`;
}

// Places the part of [startMs, endMs) that falls on each day as a bar in that day's column.
function placeBars(columns, days, startMs, endMs, className, label) {
  days.forEach((day, index) => {
    const from = Math.max(startMs, day.startMs);
    const to = Math.min(endMs, day.endMs);
    if (to <= from) return;
    const length = day.endMs - day.startMs;
    const bar = h("div", { className: `bar ${className}`, title: label, "aria-label": label, tabindex: "0", role: "img" });
    bar.style.top = `${((from - day.startMs) / length) * 100}%`;
    bar.style.height = `${Math.max(((to - from) / length) * 100, 0.6)}%`;
    columns[index].append(bar);
  });
}

function calendar(tier, zone, nowMs) {
  const days = calendarDays(zone, nowMs);
  const columns = days.map(() => h("div", { className: "day-body" }));
  const headerFormat = new Intl.DateTimeFormat("en-GB", { timeZone: "UTC", weekday: "short", day: "numeric", month: "short" });

  for (const window of tier.windows || []) {
    const start = window.start_unix_s * 1000;
    const end = window.end_unix_s * 1000;
    const hasCutoff = window.cutoff_unix_s && window.cutoff_unix_s * 1000 > start && window.cutoff_unix_s * 1000 < end;
    const cutoff = hasCutoff ? window.cutoff_unix_s * 1000 : end;
    const label = `Window ${intervalText(start, end, zone)}${hasCutoff ? `; no new bundle starts after ${formatInZone(cutoff, zone)} (${formatInZone(cutoff, "UTC")} UTC)` : ""}`;
    placeBars(columns, days, start, cutoff, "window", label);
    if (hasCutoff) placeBars(columns, days, cutoff, end, "window cutoff", `${label}: cutoff part`);
  }
  for (const freeze of tier.freezes || []) {
    const label = `Freeze ${intervalText(freeze.start_unix_s * 1000, freeze.end_unix_s * 1000, zone)}${freeze.reason ? `: ${freeze.reason}` : ""}`;
    placeBars(columns, days, freeze.start_unix_s * 1000, freeze.end_unix_s * 1000, "freeze", label);
  }
  days.forEach((day, index) => {
    if (nowMs >= day.startMs && nowMs < day.endMs) {
      const marker = h("div", { className: "now", title: `Now: ${formatInZone(nowMs, zone)} ${zone}` });
      marker.style.top = `${((nowMs - day.startMs) / (day.endMs - day.startMs)) * 100}%`;
      columns[index].append(marker);
    }
  });

  return h("div", { className: "calendar", dataset: { tier: tier.tier || "" } },
    h("div", { className: "axis", "aria-hidden": "true" },
      h("div", { className: "day-head" }, zone === "UTC" ? "UTC" : "local"),
      h("div", { className: "axis-body" }, ["00", "06", "12", "18"].map((hour) => h("span", {}, `${hour}:00`)))),
    days.map((day, index) => h("div", { className: `day${index === 0 ? " today" : ""}` },
      h("div", { className: "day-head" }, headerFormat.format(day.date)),
      columns[index])));
}

function intervalTable(tier, zone) {
  const rows = [];
  for (const window of tier.windows || []) {
    rows.push(["window", intervalText(window.start_unix_s * 1000, window.end_unix_s * 1000, zone),
      window.cutoff_unix_s ? `${formatInZone(window.cutoff_unix_s * 1000, zone, true)} ${zone}` : "—", ""]);
  }
  for (const freeze of tier.freezes || []) {
    rows.push(["freeze", intervalText(freeze.start_unix_s * 1000, freeze.end_unix_s * 1000, zone), "—", freeze.reason || ""]);
  }
  if (rows.length === 0) return notice("No windows or freezes in the next 14 days.");
  return h("details", {}, h("summary", {}, `List of ${rows.length} windows and freezes`),
    table(null, ["Kind", "When", "Cutoff", "Reason"], rows));
}

function windowsPage() {
  let body;
  return {
    title: "Windows",
    intervalMs: 60000,
    mount(view) {
      body = h("div", {}, notice("Loading the windows…"));
      append(view, [
        h("h1", {}, "Maintenance windows"),
        h("p", { className: "hint" }, "The next 14 days per tier, one column per day in the tier's time zone, midnight at the top. ",
          "Bars are windows; the lighter end of a bar is its cutoff, after which no new bundle starts. ",
          "Hatched areas are freezes. Hover over or focus a bar for its times in the tier's zone and in UTC."),
        h("ul", { className: "legend", "aria-label": "Legend" },
          h("li", {}, h("span", { className: "swatch swatch-window" }), " window"),
          h("li", {}, h("span", { className: "swatch swatch-cutoff" }), " cutoff"),
          h("li", {}, h("span", { className: "swatch swatch-freeze" }), " freeze"),
          h("li", {}, h("span", { className: "swatch swatch-now" }), " now")),
        body,
      ]);
    },
    async refresh() {
      const result = await apiOptional(`/api/v1/windows?days=${CALENDAR_DAYS}`);
      const nowMs = Date.now();
      if (result.missing) {
        replaceChildren(body, notAvailable("The window schedule"),
          h("section", { "aria-labelledby": "empty-calendar" },
            h("h2", { id: "empty-calendar" }, "Next 14 days (UTC)"),
            calendar({ tier: "", windows: [], freezes: [] }, "UTC", nowMs)));
        return;
      }
      const tiers = (result.data && result.data.tiers) || [];
      if (tiers.length === 0) {
        replaceChildren(body, notice("No tier has a window schedule yet."),
          calendar({ tier: "", windows: [], freezes: [] }, "UTC", nowMs));
        return;
      }
      replaceChildren(body, tiers.map((tier, index) => {
        const zone = tier.zone && validZone(tier.zone) ? tier.zone : "UTC";
        const headingId = `tier-windows-${index}`;
        return h("section", { className: "tier-windows", "aria-labelledby": headingId },
          h("h2", { id: headingId }, `Tier: ${tier.tier}`),
          h("p", { className: "hint" },
            `Schedule version ${displayValue(tier.schedule_version)}, zone ${tier.zone || "UTC"}`,
            zone !== (tier.zone || "UTC") ? ` (this browser does not know that zone, so times show in UTC)` : ""),
          calendar(tier, zone, nowMs),
          intervalTable(tier, zone));
      }));
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Bundles and rollouts

// Reads a rollout's agent counts per state as [state, count] pairs.
function rolloutCounts(rollout) {
  const counts = rollout.counts;
  if (!counts || typeof counts !== "object") return [];
  return Object.entries(counts).filter(([, count]) => typeof count === "number");
}

// A progress bar of the agents with an outcome, then the states that have agents.
function rolloutProgress(rollout) {
  const counts = rolloutCounts(rollout);
  if (counts.length === 0) return "—";
  const total = counts.reduce((sum, [, count]) => sum + count, 0);
  const finished = counts
    .filter(([state]) => FINISHED_STATES.has(state))
    .reduce((sum, [, count]) => sum + count, 0);
  const text = counts.filter(([, count]) => count > 0)
    .map(([state, count]) => `${count} ${state.replace(/_/g, " ")}`).join(", ");
  return h("div", { className: "progress" },
    h("progress", { max: String(total || 1), value: String(finished), "aria-label": `${finished} of ${total} agents finished` }),
    h("span", { className: "progress-text" }, ` ${finished} of ${total} finished${text ? `: ${text}` : ""}`));
}

// The rollout's state, with the reason of a paused, stopped or reverting rollout.
function rolloutState(rollout) {
  const status = rollout.status || {};
  const name = status.state || "unknown";
  const state = name === "completed" ? "pass" : ["running", "paused"].includes(name) ? "unknown" : "fail";
  return h("span", {}, stateBadge(state, name), status.reason ? h("span", { className: "outcome-detail" }, ` ${status.reason}`) : null);
}

function rolloutBundle(rollout) {
  const bundle = rollout.bundle || {};
  return bundle.bundle_id ? `${bundle.bundle_id} (${bundle.stream} #${bundle.sequence})` : "—";
}

// An agent's state in a rollout: the state name, with the step under way, the failure reason or
// the rollback detail.
function rolloutAgentState(agentState) {
  const name = (agentState && agentState.state) || "unknown";
  let detail = "";
  if (name === "running" && agentState.step !== undefined) detail = `step ${agentState.step}`;
  if (name === "failed") detail = `${agentState.timed_out ? "timed out: " : ""}${agentState.reason || ""}`;
  if (name === "rollback-failed") detail = agentState.detail || "";
  const state = name === "applied" ? "pass" : ["failed", "rollback-failed"].includes(name) ? "fail" : "unknown";
  return h("span", {}, stateBadge(state, name.replace(/-/g, " ")), detail ? h("span", { className: "outcome-detail" }, ` ${detail}`) : null);
}

function bundlesPage() {
  let rollouts;
  let bundles;
  return {
    title: "Bundles and rollouts",
    navigation: "bundles",
    intervalMs: 2000,
    mount(view) {
      rollouts = h("div", {}, notice("Loading the rollouts…"));
      bundles = h("div", {}, notice("Loading the bundles…"));
      append(view, [
        h("h1", {}, "Bundles and rollouts"),
        h("section", { "aria-labelledby": "rollouts-heading" }, h("h2", { id: "rollouts-heading" }, "Rollouts"), rollouts),
        h("section", { "aria-labelledby": "bundles-heading" }, h("h2", { id: "bundles-heading" }, "Published bundles"), bundles),
      ]);
    },
    async refresh() {
      const [rolloutResult, bundleResult] = await Promise.all([
        apiOptional("/api/v1/rollouts"), apiOptional("/api/v1/bundles"),
      ]);

      if (rolloutResult.missing) {
        replaceChildren(rollouts, notAvailable("The rollout list"));
      } else {
        const list = Array.isArray(rolloutResult.data) ? rolloutResult.data : (rolloutResult.data && rolloutResult.data.rollouts) || [];
        replaceChildren(rollouts, list.length === 0 ? notice("No rollouts yet.") :
          table(null, ["Rollout", "Bundle", "State", "Wave", "Progress", "Started"], list.map((rollout) => ({
            attributes: { dataset: { rolloutId: String(rollout.id) } },
            cells: [
              { header: true, content: h("a", { href: `#/rollout/${encodeURIComponent(rollout.id)}` }, `#${rollout.id}`) },
              rolloutBundle(rollout), rolloutState(rollout),
              `${Math.min(rollout.current_wave, rollout.wave_count)} of ${rollout.wave_count}`,
              rolloutProgress(rollout),
              h("span", {}, timeCell(rollout.created_at_unix_s), ` by ${rollout.created_by}`),
            ],
          })), { className: "rollouts" }));
      }

      if (bundleResult.missing) {
        replaceChildren(bundles, notAvailable("The bundle list"));
      } else {
        const list = (bundleResult.data && bundleResult.data.bundles) || [];
        replaceChildren(bundles, list.length === 0 ? notice("No bundles have been published yet.") :
          table(null, ["Bundle", "Stream", "Sequence", "Hash", "Signers", "Publisher", "Published", "Size"],
            list.map((bundle) => [
              { header: true, content: bundle.bundle_id }, bundle.stream, String(bundle.sequence),
              shortHash(bundle.bundle_hash), (bundle.signers || []).join(", "), bundle.publisher,
              timeCell(bundle.published_at_unix_s), formatBytes(bundle.size_bytes),
            ]), { className: "bundles" }));
      }
    },
  };
}

function rolloutPage(parameters) {
  const rolloutId = parameters[0] || "";
  let body;
  return {
    title: `Rollout #${rolloutId}`,
    navigation: "bundles",
    intervalMs: 2000,
    mount(view) {
      body = h("div", {}, notice("Loading the rollout…"));
      append(view, [
        h("p", { className: "breadcrumb" }, h("a", { href: "#/bundles" }, "Bundles and rollouts"), " › rollout"),
        h("h1", {}, `Rollout #${rolloutId}`),
        body,
      ]);
    },
    async refresh() {
      const result = await apiOptional(`/api/v1/rollouts/${encodeURIComponent(rolloutId)}`);
      if (result.missing) {
        replaceChildren(body, notAvailable("The rollout view"));
        return;
      }
      const rollout = result.data || {};
      const spec = rollout.spec || {};
      const fact = (term, value) => [h("dt", {}, term), h("dd", {}, value)];
      const threshold = spec.failure_threshold || {};
      replaceChildren(body,
        h("dl", { className: "facts" },
          fact("Bundle", rolloutBundle(rollout)),
          fact("Bundle hash", shortHash(rollout.bundle && rollout.bundle.bundle_hash)),
          fact("State", rolloutState(rollout)),
          fact("Started", h("span", {}, timeCell(rollout.created_at_unix_s), ` by ${rollout.created_by}`)),
          fact("Targets", String(rollout.targets)),
          fact("Wave", `${Math.min(rollout.current_wave, rollout.wave_count)} of ${rollout.wave_count}`),
          fact("Canary agents", displayValue(spec.canary)),
          fact("Failure threshold", `${displayValue(Object.values(threshold)[0])}${Object.keys(threshold)[0] === "percent" ? "%" : ""}, then ${displayValue(spec.on_failure)}`),
          fact("Grace after the window", `${displayValue(spec.grace_seconds)} s`)),
        h("p", {}, rolloutProgress(rollout)),
        h("section", { "aria-labelledby": "waves-heading" },
          h("h2", { id: "waves-heading" }, `Waves (${(rollout.waves || []).length})`),
          table(null, ["Wave", "Agents", "Progress"], (rollout.waves || []).map((wave) => [
            { header: true, content: String(wave.wave) }, String(wave.agents), rolloutProgress(wave),
          ]), { className: "waves" })),
        h("section", { "aria-labelledby": "rollout-agents-heading" },
          h("h2", { id: "rollout-agents-heading" }, `Agents (${(rollout.agents || []).length})`),
          table(null, ["Agent", "Tier", "Wave", "State", "Sent", "Deadline", "Changed"], (rollout.agents || []).map((agent) => ({
            attributes: { dataset: { agentId: agent.agent_id } },
            cells: [
              { header: true, content: h("a", { href: `#/agent/${encodeURIComponent(agent.agent_id)}` }, h("code", {}, agent.agent_id.slice(0, 12))) },
              agent.tier, String(agent.wave + 1), rolloutAgentState(agent.state),
              timeCell(agent.sent_at_unix_s), agent.deadline_unix_s ? formatUtc(agent.deadline_unix_s) : "—",
              timeCell(agent.changed_at_unix_s),
            ],
          })), { className: "rollout-agents" })));
    },
    showError(error) {
      if (error.status === 404) replaceChildren(body, notice(`No such rollout: ${error.message}`, "error"));
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Audit log

function auditPage() {
  let body;
  let pageLabel;
  let previousButton;
  let nextButton;
  let limitSelect;
  // `after` values of the pages before the current one, so "Previous" can go back.
  const history = [];
  let after = 0;
  let lastSeq = null;
  let fullPage = false;
  let page = null;

  function updateControls() {
    previousButton.disabled = history.length === 0;
    nextButton.disabled = !fullPage;
    pageLabel.textContent = `Page ${history.length + 1}, entries after sequence number ${after}`;
  }

  page = {
    title: "Audit log",
    navigation: "audit",
    intervalMs: 10000,
    mount(view) {
      body = h("div", {}, notice("Loading the audit log…"));
      pageLabel = h("span", { className: "page-label", "aria-live": "polite" });
      previousButton = h("button", {
        type: "button", disabled: true,
        onclick: () => { after = history.pop() || 0; updateControls(); page.refresh(); },
      }, "Previous page");
      nextButton = h("button", {
        type: "button", disabled: true,
        onclick: () => { if (lastSeq !== null) { history.push(after); after = lastSeq; updateControls(); page.refresh(); } },
      }, "Next page");
      limitSelect = h("select", { id: "audit-limit", onchange: () => { history.length = 0; after = 0; page.refresh(); } },
        [25, 50, 100].map((count) => h("option", { value: String(count), selected: count === 50 }, String(count))));
      append(view, [
        h("h1", {}, "Audit log"),
        h("p", { className: "hint" }, "Every decision and outcome, oldest first. Each entry holds the hash of the entry before it."),
        h("div", { className: "pager" },
          h("label", { for: "audit-limit" }, "Entries per page"), limitSelect,
          previousButton, nextButton, pageLabel),
        body,
      ]);
      updateControls();
    },
    async refresh() {
      const limit = Number(limitSelect.value) || 50;
      const result = await apiOptional(`/api/v1/audit?after=${after}&limit=${limit}`);
      if (result.missing) {
        fullPage = false;
        updateControls();
        replaceChildren(body, notAvailable("The audit log"));
        return;
      }
      const entries = Array.isArray(result.data) ? result.data : (result.data && result.data.entries) || [];
      fullPage = entries.length >= limit;
      lastSeq = entries.length ? entries[entries.length - 1].seq : null;
      updateControls();
      replaceChildren(body, entries.length === 0 ? notice("No audit entries on this page.") :
        table(null, ["Sequence", "Time", "Actor", "Action", "Subject", "Detail", "Hash"], entries.map((entry) => [
          { header: true, content: displayValue(entry.seq) },
          h("time", { datetime: new Date(entry.at_unix_s * 1000).toISOString() }, formatUtc(entry.at_unix_s)),
          displayValue(entry.actor), displayValue(entry.action), displayValue(entry.subject),
          h("code", { className: "detail" }, displayValue(entry.detail)), shortHash(entry.hash),
        ]), { className: "audit" }));
    },
  };
  return page;
}

// ---------------------------------------------------------------------------------------------

const PAGES = {
  fleet: fleetPage,
  agent: agentPage,
  windows: windowsPage,
  bundles: bundlesPage,
  rollout: rolloutPage,
  audit: auditPage,
};

function start() {
  setupSession();
  window.addEventListener("hashchange", route);
  route();
}

document.addEventListener("DOMContentLoaded", start);
