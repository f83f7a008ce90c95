// The pages about users: the list, one user's memory (filters, search, as-of), their activity
// feed, their erasure, and the request lookup.
import { ApiError, call, path } from "./api.js";
import { badge, field, h, instantOf, link, localInputValue, memoryStatus, replace, table, time } from "./dom.js";
import { confirmAction, form, go, hashOf, say } from "./shell.js";

const USERS_PAGE = 50;
const MEMORIES_PAGE = 50;
const EVENTS_PAGE = 20;

export const userHash = (id, query) => hashOf(["users", id], query);
export const memoryHash = (id) => hashOf(["memories", id]);
export const requestHash = (id) => hashOf(["requests", id]);

export const plural = (count, one, many = `${one}s`) => `${count} ${count === 1 ? one : many}`;

function offsetOf(query) {
  const offset = Number.parseInt(query.get("offset") || "0", 10);
  return Number.isFinite(offset) && offset > 0 ? offset : 0;
}

function pager(label, offset, size, hasMore, hashAt) {
  if (!offset && !hasMore) return null;
  return h(
    "nav",
    { class: "pager", "aria-label": label },
    offset > 0 ? link(hashAt(Math.max(0, offset - size)), "← Previous") : h("span", { class: "muted" }, "← Previous"),
    h("span", { class: "muted" }, `${offset + 1}–${offset + size}`),
    hasMore ? link(hashAt(offset + size), "Next →") : h("span", { class: "muted" }, "Next →"),
  );
}

export function notFound(view, title, message) {
  document.title = `${title} · Mnemo`;
  replace(view, h("h1", { tabindex: "-1" }, title), h("p", { class: "notice", id: "not-found" }, message));
}

// --- users ------------------------------------------------------------------------------

export async function usersPage(view, query) {
  const prefix = query.get("prefix") || "";
  const offset = offsetOf(query);
  const listing = await call("GET", "/users", { query: { prefix, limit: USERS_PAGE, offset } });
  document.title = "Users · Mnemo";
  const search = h("input", { type: "search", name: "prefix", value: prefix, autocomplete: "off", spellcheck: "false" });
  const finder = form({ class: "inline", role: "search", "aria-label": "Users" }, [
    field("User id starts with", search),
    h("button", { type: "submit" }, "Find"),
  ], async () => go(hashOf(["users"], { prefix: search.value.trim() })));
  const rows = listing.data.map((user) =>
    h(
      "tr",
      { "data-user": user.user_id },
      h("th", { scope: "row" }, link(userHash(user.user_id), user.user_id)),
      h("td", { class: "number" }, user.memories),
      h("td", { class: "number" }, user.total_memories),
      h("td", { class: "number" }, user.events),
      h("td", {}, time(user.last_activity)),
    ),
  );
  const total = `${plural(listing.total, "user")}${prefix ? ` starting with “${prefix}”` : ""}`;
  replace(
    view,
    h("h1", { tabindex: "-1" }, "Users"),
    finder,
    table(total, ["User", "Memories", "All versions", "Events", "Last activity"], rows, prefix ? `No user id starts with “${prefix}”.` : "No user holds memories yet."),
    listing.complete ? null : h("p", { class: "notice" }, "There are too many users to list at once: type a longer prefix."),
    pager("Users pages", offset, USERS_PAGE, listing.has_more, (at) => hashOf(["users"], { prefix, offset: at })),
  );
}

// --- one user's memory ---------------------------------------------------------------------

const FILTERS = ["agent_id", "session_id", "meta", "created_after", "created_before", "include_invalidated", "as_of"];

function metadataQuery(text) {
  const query = {};
  for (const line of (text || "").split("\n")) {
    const at = line.indexOf("=");
    if (at > 0) query[`metadata.${line.slice(0, at).trim()}`] = line.slice(at + 1).trim();
  }
  return query;
}

async function loadUser(id) {
  try {
    return await call("GET", path`/users/${id}`);
  } catch (error) {
    if (error instanceof ApiError && error.status === 404) return null;
    throw error;
  }
}

function userHeader(user) {
  return h(
    "div",
    { class: "user-head" },
    h("h1", { tabindex: "-1" }, h("span", { class: "muted" }, "User "), user.user_id),
    h(
      "p",
      { class: "facts", id: "user-counts" },
      `${plural(user.memories, "current memory", "current memories")} · ${plural(user.total_memories, "version")} · ${plural(user.events, "event")} · last activity `,
      time(user.last_activity),
    ),
    h(
      "p",
      { class: "actions" },
      link(hashOf(["users", user.user_id, "activity"]), "Activity"),
      h("button", { type: "button", class: "danger", id: "erase-user", on: { click: () => eraseUser(user) } }, "Erase user…"),
    ),
  );
}

export function memoryRows(memories, { score = false } = {}) {
  return memories.map((memory) =>
    h(
      "tr",
      { "data-memory": memory.id, class: memory.invalid_at ? "invalid" : null },
      h("td", { class: "text" }, link(memoryHash(memory.id), memory.text)),
      score ? h("td", { class: "number score" }, memory.score.toFixed(3)) : null,
      h("td", {}, memory.agent_id || h("span", { class: "muted" }, "all agents")),
      h("td", {}, memory.session_id || h("span", { class: "muted" }, "—")),
      h("td", { class: "number" }, `v${memory.version}`),
      h("td", {}, time(memory.created_at)),
      h("td", {}, memoryStatus(memory)),
    ),
  );
}

function filterForm(id, query) {
  const input = (name) => h("input", { name, value: query.get(name) || "", autocomplete: "off", spellcheck: "false" });
  const moment = (name) => h("input", { name, type: "datetime-local", step: "1", value: localInputValue(query.get(name)) });
  const agent = input("agent_id");
  const session = input("session_id");
  const meta = h("textarea", { name: "meta", rows: "1", spellcheck: "false" }, query.get("meta") || "");
  const after = moment("created_after");
  const before = moment("created_before");
  const asOf = moment("as_of");
  asOf.id = "as-of";
  const invalid = h("input", { type: "checkbox", name: "include_invalidated", id: "include-invalidated", checked: query.get("include_invalidated") === "1" });
  const narrowed = ["agent_id", "session_id", "meta", "created_after", "created_before"].some((name) => query.get(name));
  return form({ class: "filters", "aria-label": "Filter memories" }, [
    h("div", { class: "row" },
      field("As of", asOf, "what was believed at that moment"),
      h("label", { class: "check" }, invalid, " Show invalidated"),
      h("button", { type: "submit" }, "Apply"),
      link(userHash(id), "Clear"),
    ),
    h("details", { open: narrowed },
      h("summary", {}, "More filters: agent, session, metadata, time"),
      h("div", { class: "grid" },
        field("Agent", agent),
        field("Session", session),
        field("Metadata", meta, "key=value, one per line"),
        field("Created after", after),
        field("Created before", before),
      ),
    ),
  ], async () =>
    go(userHash(id, {
      agent_id: agent.value.trim(),
      session_id: session.value.trim(),
      meta: meta.value.trim(),
      created_after: instantOf(after.value),
      created_before: instantOf(before.value),
      as_of: instantOf(asOf.value),
      include_invalidated: invalid.checked ? "1" : "",
    })),
  );
}

function searchForm(id, query) {
  const box = h("input", { type: "search", name: "q", id: "memory-search", value: query.get("q") || "", autocomplete: "off" });
  const keep = Object.fromEntries(FILTERS.map((name) => [name, query.get(name)]));
  return form({ class: "inline", role: "search", "aria-label": "Search memories" }, [
    field("Search (the gateway's own retrieval)", box),
    h("button", { type: "submit" }, "Search"),
  ], async () => go(userHash(id, { ...keep, q: box.value.trim() })));
}

async function searchResults(id, query) {
  const text = query.get("q");
  if (!text) return null;
  const found = await call("POST", "/memories/search", { body: { user_id: id, query: text, agent_id: query.get("agent_id") || undefined } });
  return h(
    "section",
    { "aria-labelledby": "search-title", id: "search-results" },
    h("h2", { id: "search-title" }, `Search: “${text}”`),
    h("p", { class: "muted" }, "Ranked as the gateway ranks memories for injection (its top_k and score threshold)."),
    table(plural(found.data.length, "result"), ["Memory", "Score", "Agent", "Session", "Version", "Created", "Status"], memoryRows(found.data, { score: true }), "Nothing retrieval would inject for this query."),
  );
}

export async function userPage(view, id, query) {
  const user = await loadUser(id);
  if (user === null) {
    return notFound(view, "No such user", `No user “${id}” holds memories or events here.`);
  }
  document.title = `${id} · Mnemo`;
  const offset = offsetOf(query);
  const asOf = query.get("as_of");
  const listed = await call("GET", "/memories", {
    query: {
      user_id: id,
      agent_id: query.get("agent_id"),
      session_id: query.get("session_id"),
      created_after: query.get("created_after"),
      created_before: query.get("created_before"),
      as_of: asOf,
      include_invalidated: query.get("include_invalidated") === "1" ? "true" : "",
      limit: MEMORIES_PAGE + 1,
      offset,
      ...metadataQuery(query.get("meta")),
    },
  });
  const memories = listed.data.slice(0, MEMORIES_PAGE);
  const caption = asOf
    ? h("span", {}, "Memories believed as of ", time(asOf))
    : query.get("include_invalidated") === "1" ? "All memories, invalidated ones too" : "Current memories";
  const rows = memoryRows(memories);
  const keep = Object.fromEntries([...FILTERS, "q"].map((name) => [name, query.get(name)]));
  replace(
    view,
    userHeader(user),
    searchForm(id, query),
    await searchResults(id, query),
    h("h2", {}, "Memories"),
    filterForm(id, query),
    h("div", { id: "memories", class: asOf ? "as-of" : null }, table(caption, ["Memory", "Agent", "Session", "Version", "Created", "Status"], rows, "No memory matches.")),
    pager("Memory pages", offset, MEMORIES_PAGE, listed.data.length > MEMORIES_PAGE, (at) => userHash(id, { ...keep, offset: at })),
  );
}

async function eraseUser(user) {
  const id = user.user_id;
  const sure = await confirmAction({
    title: `Erase user ${id}?`,
    body: h(
      "div",
      {},
      h("p", {}, `This erases everything Mnemo holds about ${id}, for good: ${plural(user.total_memories, "memory", "memories")} (every version), ${plural(user.events, "event")}, their exchanges still queued, and their request records.`),
      h("p", {}, "It cannot be undone, and no exchange from before the erasure will be stored again."),
    ),
    ok: "Erase everything",
    typed: id,
  });
  if (!sure) return;
  let erased;
  try {
    erased = await call("DELETE", path`/users/${id}`);
  } catch (error) {
    say(error.message, "error");
    return;
  }
  const { memories, events, queued_jobs, failed_jobs } = erased;
  go(hashOf(["users", id, "erased"], { memories, events, queued_jobs, failed_jobs }));
}

// What the erasure returned (carried in the route, so the page is the router's like any other).
export function erasedPage(view, id, query) {
  const count = (name) => Number.parseInt(query.get(name) || "0", 10);
  document.title = `Erased ${id} · Mnemo`;
  replace(
    view,
    h("h1", { tabindex: "-1" }, `Erased ${id}`),
    h("p", {}, `Everything Mnemo held about ${id} is gone:`),
    h(
      "dl",
      { class: "counts", id: "erased-counts" },
      [["memories", "Memories"], ["events", "Events"], ["queued_jobs", "Queued exchanges"], ["failed_jobs", "Failed jobs"]].map(
        ([name, label]) => [h("dt", {}, label), h("dd", { "data-count": name }, count(name))],
      ),
    ),
    h("p", {}, link("#/users", "Back to users")),
  );
}

// --- activity ----------------------------------------------------------------------------

export function eventRows(events) {
  return events.map((event) =>
    h(
      "tr",
      { "data-event": event.id },
      h("td", {}, time(event.created_at)),
      h("td", {}, badge(event.action)),
      h("td", {}, link(memoryHash(event.memory_id), event.memory_id.slice(0, 8))),
      h("td", { class: "text" }, change(event)),
      h("td", {}, event.reason || ""),
      h("td", {}, event.source_request_id ? link(requestHash(event.source_request_id), "request") : ""),
      h("td", {}, event.model || ""),
      h("td", {}, event.actor),
    ),
  );
}

export function change(event) {
  if (event.old_text && event.new_text) {
    return h("span", {}, h("del", {}, event.old_text), " → ", h("ins", {}, event.new_text));
  }
  if (event.new_text) return h("ins", {}, event.new_text);
  if (event.old_text) return h("del", {}, event.old_text);
  return h("span", { class: "muted" }, "—");
}

export async function activityPage(view, id, query) {
  const offset = offsetOf(query);
  const feed = await call("GET", "/events", { query: { user_id: id, limit: EVENTS_PAGE + 1, offset } });
  if (!feed.data.length && !offset && (await loadUser(id)) === null) {
    return notFound(view, "No such user", `No user “${id}” holds memories or events here.`);
  }
  document.title = `Activity of ${id} · Mnemo`;
  replace(
    view,
    h("h1", { tabindex: "-1" }, h("span", { class: "muted" }, "Activity of "), id),
    h("p", {}, link(userHash(id), `← ${id}'s memories`)),
    h("div", { id: "activity" }, table("Events, newest first", ["Time", "Action", "Memory", "Change", "Reason", "Source", "Model", "Actor"], eventRows(feed.data.slice(0, EVENTS_PAGE)), "No events.")),
    pager("Activity pages", offset, EVENTS_PAGE, feed.data.length > EVENTS_PAGE, (at) => hashOf(["users", id, "activity"], { offset: at })),
  );
}

// --- request lookup ------------------------------------------------------------------------

function memoryList(memories, empty) {
  if (!memories.length) return h("p", { class: "empty" }, empty);
  return h(
    "ul",
    { class: "memories" },
    memories.map((memory) =>
      h("li", { "data-memory": memory.id }, link(memoryHash(memory.id), memory.text), " ", h("span", { class: "muted" }, `v${memory.version}`), " ", memoryStatus(memory)),
    ),
  );
}

export async function requestPage(view, id) {
  const box = h("input", { name: "request_id", id: "request-id", value: id || "", placeholder: "req_…", autocomplete: "off", spellcheck: "false" });
  const finder = form({ class: "inline", role: "search", "aria-label": "Request lookup" }, [
    field("X-Mnemo-Request-Id", box),
    h("button", { type: "submit" }, "Look up"),
  ], async () => box.value.trim() && go(requestHash(box.value.trim())));
  const heading = h("h1", { tabindex: "-1" }, "Request lookup");
  const intro = h("p", { class: "muted" }, "Which memories were injected into a chat, and which it created: paste the x-mnemo-request-id header of its response.");
  document.title = "Request lookup · Mnemo";
  if (!id) return replace(view, heading, intro, finder);
  let found;
  try {
    found = await call("GET", path`/requests/${id}`);
  } catch (error) {
    if (!(error instanceof ApiError) || error.status !== 404) throw error;
    return replace(view, heading, finder, h("p", { class: "notice", id: "not-found" }, `No record of request “${id}” here.`));
  }
  replace(
    view,
    heading,
    finder,
    h("p", { class: "facts" }, "Request ", h("code", {}, found.id), " of user ", link(userHash(found.user_id), found.user_id)),
    h("section", { id: "injected", "aria-labelledby": "injected-title" }, h("h2", { id: "injected-title" }, "Injected into this chat"), memoryList(found.injected, "No memory was injected.")),
    h("section", { id: "created", "aria-labelledby": "created-title" }, h("h2", { id: "created-title" }, "Created by this chat"), memoryList(found.created, "No memory was created (yet: the worker may still be on it).")),
  );
}
