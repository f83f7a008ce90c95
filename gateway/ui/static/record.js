// One memory: what it says, its version chain, every event that touched it as a timeline, and
// the three changes an operator makes (correct, invalidate, erase the chain).
import { ApiError, call, path } from "./api.js";
import { badge, field, h, link, memoryStatus, replace, time } from "./dom.js";
import { confirmAction, form, go, say } from "./shell.js";
import { change, memoryHash, notFound, plural, requestHash, userHash } from "./pages.js";

function details(memory) {
  const rows = [
    ["Id", h("code", {}, memory.id)],
    ["User", link(userHash(memory.user_id), memory.user_id)],
    ["Agent", memory.agent_id || h("span", { class: "muted" }, "all agents")],
    ["Session", memory.session_id || h("span", { class: "muted" }, "—")],
    ["Version", `v${memory.version}`],
    ["Created", time(memory.created_at)],
    ["Status", memoryStatus(memory)],
    ["Source request", memory.source_request_id ? link(requestHash(memory.source_request_id), memory.source_request_id) : "—"],
    ["Written by", memory.actor],
  ];
  if (memory.metadata && Object.keys(memory.metadata).length) {
    rows.push(["Metadata", h("pre", { class: "metadata" }, JSON.stringify(memory.metadata, null, 2))]);
  }
  return h("dl", { class: "details" }, rows.map(([name, value]) => [h("dt", {}, name), h("dd", {}, value)]));
}

function versions(chain, shown) {
  return h(
    "ol",
    { class: "versions", id: "versions" },
    chain.map((version) =>
      h(
        "li",
        { "data-memory": version.id, "aria-current": version.id === shown ? "page" : null },
        h("span", { class: "version" }, `v${version.version}`),
        " ",
        version.id === shown ? h("strong", { class: "text" }, version.text) : link(memoryHash(version.id), version.text),
        h("span", { class: "muted" }, " · created "),
        time(version.created_at),
        h("span", { class: "muted" }, " · "),
        memoryStatus(version),
      ),
    ),
  );
}

function timeline(events) {
  if (!events.length) return h("p", { class: "empty" }, "No events.");
  return h(
    "ol",
    { class: "timeline", id: "timeline" },
    events.map((event) =>
      h(
        "li",
        { "data-event": event.id, "data-action": event.action },
        h("div", { class: "when" }, time(event.created_at), " ", badge(event.action)),
        h("div", { class: "change" }, change(event)),
        h(
          "dl",
          { class: "event-facts" },
          event.reason ? [h("dt", {}, "Reason"), h("dd", { class: "reason" }, event.reason)] : null,
          event.source_request_id ? [h("dt", {}, "Source request"), h("dd", {}, link(requestHash(event.source_request_id), event.source_request_id))] : null,
          event.model ? [h("dt", {}, "Model"), h("dd", {}, event.model)] : null,
          [h("dt", {}, "By"), h("dd", {}, event.actor)],
        ),
      ),
    ),
  );
}

function correctForm(memory) {
  const text = h("textarea", { name: "text", id: "correct-text", rows: "3", required: true }, memory.text);
  const reason = h("input", { name: "reason", id: "correct-reason", autocomplete: "off" });
  return form({ class: "correct", "aria-label": "Correct this memory" }, [
    field("Corrected text", text),
    field("Reason", reason, "kept in the event"),
    h("button", { type: "submit" }, "Save correction"),
  ], async () => {
    if (!text.value.trim()) return say("The corrected text cannot be empty.", "error");
    const corrected = await call("PATCH", path`/memories/${memory.id}`, { body: { text: text.value.trim(), reason: reason.value.trim() || undefined } });
    say(`Saved version ${corrected.version}.`, "ok");
    go(memoryHash(corrected.id));
  });
}

async function invalidate(memory) {
  const sure = await confirmAction({
    title: "Invalidate this memory?",
    body: h("p", {}, "“", memory.text, "” will no longer be injected. It stays in history, with a DELETE event."),
    ok: "Invalidate",
  });
  if (!sure) return;
  await call("DELETE", path`/memories/${memory.id}`);
  say("Invalidated.", "ok");
  go(memoryHash(memory.id));
}

async function eraseChain(memory, chain) {
  const count = chain.length;
  const sure = await confirmAction({
    title: `Erase ${plural(count, "version")} for good?`,
    body: h(
      "div",
      {},
      h("p", {}, `This erases every version of this memory of ${memory.user_id}, and every event that carried their text:`),
      h("ul", { id: "erase-list" }, chain.map((version) => h("li", {}, `v${version.version}: `, h("q", {}, version.text)))),
      h("p", {}, "It cannot be undone; an ERASE event (with no text) records that it happened."),
    ),
    ok: `Erase ${plural(count, "version")}`,
  });
  if (!sure) return;
  const erased = await call("DELETE", path`/memories/${memory.id}`, { query: { hard: "true" } });
  say(`Erased ${plural(erased.deleted, "version")}.`, "ok");
  go(userHash(memory.user_id));
}

export async function memoryPage(view, id) {
  let history;
  try {
    history = await call("GET", path`/memories/${id}/history`);
  } catch (error) {
    if (error instanceof ApiError && error.status === 404) return notFound(view, "No such memory", `No memory “${id}” here.`);
    throw error;
  }
  const memory = history.versions.find((version) => version.id === history.id);
  const run = (action) => async () => {
    try {
      await action();
    } catch (error) {
      say(error.message, "error");
    }
  };
  document.title = "Memory · Mnemo";
  replace(
    view,
    h("p", { class: "crumbs" }, link(userHash(memory.user_id), `← ${memory.user_id}`)),
    h("h1", { tabindex: "-1" }, "Memory"),
    h(
      "div",
      { class: "memory-layout" },
      h(
        "div",
        {},
        h("blockquote", { class: memory.invalid_at ? "memory invalid" : "memory", id: "memory-text" }, memory.text),
        details(memory),
        h("section", { "aria-labelledby": "versions-title" }, h("h2", { id: "versions-title" }, "Versions"), versions(history.versions, memory.id)),
        h("section", { "aria-labelledby": "timeline-title" }, h("h2", { id: "timeline-title" }, "Timeline"), timeline(history.events)),
      ),
      h(
        "aside",
        { class: "changes", "aria-labelledby": "changes-title" },
        h("h2", { id: "changes-title" }, "Change it"),
        memory.invalid_at ? h("p", { class: "muted" }, "This version is no longer current: correct the latest one.") : correctForm(memory),
        h(
          "p",
          { class: "actions" },
          memory.invalid_at ? null : h("button", { type: "button", id: "invalidate", on: { click: run(() => invalidate(memory)) } }, "Invalidate"),
          h("button", { type: "button", class: "danger", id: "erase-chain", on: { click: run(() => eraseChain(memory, history.versions)) } }, "Erase chain…"),
        ),
      ),
    ),
  );
}
