// The console's shell: the key, the routes, and rendering a page into <main>.
import { forget, saveSession, session } from "./api.js";
import { field, h, replace } from "./dom.js";
import { activityPage, erasedPage, requestPage, usersPage, userPage } from "./pages.js";
import { memoryPage } from "./record.js";
import { currentRoute, form, reportError, say } from "./shell.js";

const main = document.getElementById("main");
let rendering = 0; // the latest navigation; an older one that finishes late is dropped
const loaded = Math.round(performance.timeOrigin); // tells this page load's navigations from the last's

function pageFor(parts, query) {
  const [kind, id, sub] = parts;
  if (kind === "users" && id === undefined) return ["users", (view) => usersPage(view, query)];
  if (kind === "users" && sub === undefined) return ["user", (view) => userPage(view, id, query)];
  if (kind === "users" && sub === "activity") return ["activity", (view) => activityPage(view, id, query)];
  if (kind === "users" && sub === "erased") return ["erased", (view) => erasedPage(view, id, query)];
  if (kind === "memories" && id !== undefined) return ["memory", (view) => memoryPage(view, id)];
  if (kind === "requests") return ["request", (view) => requestPage(view, id)];
  return ["missing", (view) => replace(view, h("h1", { tabindex: "-1" }, "Not found"), h("p", {}, "No such page in the console."))];
}

async function render() {
  if (window.location.hash && !window.location.hash.startsWith("#/")) return; // an in-page anchor
  const token = ++rendering;
  const { parts, query } = currentRoute();
  const [name, page] = pageFor(parts, query);
  main.setAttribute("aria-busy", "true");
  for (const item of document.querySelectorAll("[data-nav]")) {
    item.toggleAttribute("aria-current", item.dataset.nav === (name === "request" ? "requests" : "users"));
  }
  const view = h("div", { class: "view" });
  try {
    await page(view);
  } catch (error) {
    if (token !== rendering) return;
    if (error && error.status === 401) return askForKey(error.message);
    replace(view, h("h1", { tabindex: "-1" }, "Something went wrong"), h("p", { class: "notice error" }, error.message || String(error)));
  }
  if (token !== rendering) return;
  say("");
  replace(main, view);
  main.dataset.view = name;
  main.dataset.rendered = `${loaded}.${token}`; // which navigation the page shows (tests wait on it)
  main.setAttribute("aria-busy", "false");
  (main.querySelector("h1") || main).focus();
}

function askForKey(reason) {
  const key = h("input", { type: "password", name: "key", id: "api-key", autocomplete: "off", required: true });
  const tenant = h("input", { name: "tenant", id: "tenant", value: session().tenant, autocomplete: "off", spellcheck: "false" });
  document.title = "API key · Mnemo";
  replace(
    main,
    h("h1", { tabindex: "-1" }, "Mnemo API key"),
    reason ? h("p", { class: "notice" }, reason) : null,
    h("p", {}, "The console calls the memory API with your key. It is kept in this tab only (session storage) and sent as X-Mnemo-Api-Key; closing the tab forgets it."),
    form({ class: "key", "aria-label": "API key" }, [
      field("API key", key),
      field("Tenant", tenant, "admin keys only: whose users to see (empty: the plain user ids)"),
      h("button", { type: "submit" }, "Use this key"),
    ], async () => {
      saveSession(key.value.trim(), tenant.value.trim());
      showSession();
      await render();
    }),
  );
  main.dataset.view = "key";
  main.dataset.rendered = `${loaded}.${++rendering}`; // and a page still loading is dropped
  main.setAttribute("aria-busy", "false");
  key.focus();
}

function showSession() {
  const { key, tenant } = session();
  const bar = document.getElementById("session");
  replace(
    bar,
    h("span", { class: "muted", id: "session-state" }, key ? "Key set" : "No key", tenant ? ` · tenant ${tenant}` : ""),
    h("button", { type: "button", id: "change-key", on: { click: () => askForKey("") } }, key ? "Change key" : "Enter key"),
    key || tenant
      ? h("button", { type: "button", id: "forget-key", on: { click: () => { forget(); showSession(); askForKey("The key is forgotten."); } } }, "Forget key")
      : null,
  );
}

window.addEventListener("mnemo:unauthorized", (event) => askForKey(event.detail));
window.addEventListener("hashchange", render);
window.addEventListener("unhandledrejection", (event) => reportError(event.reason));
showSession();
render();
