// What every page shares: moving between routes, the status line, and confirmations.
import { h, replace } from "./dom.js";

export function go(hash) {
  if (window.location.hash === hash) window.dispatchEvent(new HashChangeEvent("hashchange"));
  else window.location.hash = hash;
}

// "#/users/alice/activity?offset=20" -> {parts: ["users", "alice", "activity"], query}
export function currentRoute() {
  const raw = window.location.hash.startsWith("#/") ? window.location.hash.slice(2) : "users";
  const [pathPart, queryPart] = raw.split("?", 2);
  const parts = pathPart.split("/").filter(Boolean).map(decodeURIComponent);
  return { parts, query: new URLSearchParams(queryPart || "") };
}

export function hashOf(parts, query) {
  const path = parts.map(encodeURIComponent).join("/");
  const params = new URLSearchParams();
  for (const [name, value] of Object.entries(query || {})) {
    if (value !== undefined && value !== null && value !== "" && value !== false) params.set(name, value);
  }
  const text = params.toString();
  return `#/${path}${text ? `?${text}` : ""}`;
}

// A 401 asks the console for a key (console.js listens); anything else is said in the status line.
export function reportError(error) {
  if (error && error.status === 401) {
    window.dispatchEvent(new CustomEvent("mnemo:unauthorized", { detail: error.message }));
    return;
  }
  say(error && error.message ? error.message : String(error), "error");
}

export function say(message, kind = "info") {
  const status = document.getElementById("status");
  status.className = `status ${kind}`;
  replace(status, message || "");
}

// A modal confirmation naming what will happen. With `typed`, the button stays disabled until
// that exact text is typed (for what cannot be undone).
export function confirmAction({ title, body, ok, typed }) {
  const dialog = document.getElementById("confirm");
  const okButton = document.getElementById("confirm-ok");
  const cancel = document.getElementById("confirm-cancel");
  const form = document.getElementById("confirm-form");
  replace(document.getElementById("confirm-title"), title);
  const content = [body];
  let input = null;
  if (typed) {
    input = h("input", { id: "confirm-typed", autocomplete: "off", spellcheck: "false" });
    content.push(h("div", { class: "field" }, h("label", { for: "confirm-typed" }, "Type ", h("code", {}, typed), " to confirm"), input));
  }
  replace(document.getElementById("confirm-body"), content);
  replace(okButton, ok);
  okButton.disabled = Boolean(typed);
  if (input) input.addEventListener("input", () => (okButton.disabled = input.value !== typed));
  return new Promise((resolve) => {
    const finish = (answer) => {
      form.removeEventListener("submit", onSubmit);
      cancel.removeEventListener("click", onCancel);
      dialog.removeEventListener("cancel", onCancel);
      if (dialog.open) dialog.close();
      resolve(answer);
    };
    const onSubmit = (event) => {
      event.preventDefault();
      if (!okButton.disabled) finish(true);
    };
    const onCancel = (event) => {
      event.preventDefault();
      finish(false);
    };
    form.addEventListener("submit", onSubmit);
    cancel.addEventListener("click", onCancel);
    dialog.addEventListener("cancel", onCancel); // Escape
    dialog.showModal();
    (input || cancel).focus();
  });
}

// A form whose submit runs `handler` (never a navigation: the CSP allows no form action).
export function form(attrs, children, handler) {
  const element = h("form", { ...attrs, novalidate: true }, children);
  element.addEventListener("submit", async (event) => {
    event.preventDefault();
    const button = element.querySelector('button[type="submit"]');
    if (button) button.disabled = true;
    try {
      await handler(element);
    } catch (error) {
      reportError(error);
    } finally {
      if (button) button.disabled = false;
    }
  });
  return element;
}
