// Building the page. Every piece of data becomes a text node: nothing the API returns is ever
// parsed as HTML, and every link is a route of this console built from encoded ids.

export function h(tag, attrs, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "on") {
      for (const [event, handler] of Object.entries(value)) element.addEventListener(event, handler);
    } else if (name === "href") {
      element.setAttribute("href", route(value));
    } else {
      element.setAttribute(name, value === true ? "" : String(value));
    }
  }
  append(element, children);
  return element;
}

function append(element, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

// Only the console's own routes ("#/..."): a link can never point elsewhere or run script.
function route(href) {
  if (typeof href !== "string" || !href.startsWith("#/")) throw new Error(`not a console route: ${href}`);
  return href;
}

export function link(href, ...children) {
  return h("a", { href }, ...children);
}

export function replace(element, ...children) {
  element.replaceChildren();
  append(element, children);
  return element;
}

const pad = (n, width = 2) => String(n).padStart(width, "0");

export function utcText(date) {
  return (
    `${date.getUTCFullYear()}-${pad(date.getUTCMonth() + 1)}-${pad(date.getUTCDate())} ` +
    `${pad(date.getUTCHours())}:${pad(date.getUTCMinutes())}:${pad(date.getUTCSeconds())} UTC`
  );
}

const LOCAL = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "medium" });

// The viewer's local time, with UTC on hover (title) and in the machine-readable attribute.
export function time(iso) {
  if (!iso) return h("span", { class: "muted" }, "—");
  const date = new Date(iso);
  return h("time", { datetime: date.toISOString(), title: utcText(date) }, LOCAL.format(date));
}

// <input type="datetime-local"> holds local wall time; the API takes an instant.
export function localInputValue(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  return (
    `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`
  );
}

export function instantOf(localValue) {
  if (!localValue) return "";
  const date = new Date(localValue);
  return Number.isNaN(date.getTime()) ? "" : date.toISOString();
}

export function field(label, input, hint) {
  const id = input.id || `f-${Math.random().toString(36).slice(2, 10)}`;
  input.id = id;
  return h("div", { class: "field" }, h("label", { for: id }, label), input, hint ? h("small", {}, hint) : null);
}

export function table(caption, headings, rows, empty) {
  if (!rows.length) return h("p", { class: "empty" }, empty);
  return h(
    "table",
    {},
    h("caption", {}, caption),
    h("thead", {}, h("tr", {}, headings.map((text) => h("th", { scope: "col" }, text)))),
    h("tbody", {}, rows),
  );
}

export function badge(text, kind) {
  return h("span", { class: `badge ${kind || text.toLowerCase()}` }, text);
}

export function memoryStatus(memory) {
  if (!memory.invalid_at) return badge("current");
  return h("span", {}, badge(memory.superseded_by ? "superseded" : "invalidated"), " ", time(memory.invalid_at));
}
