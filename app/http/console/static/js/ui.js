// Small pieces every page uses: fields with labels, tables, notices, copy buttons, paging.

import { call } from "./api.js";
import { clear, h, nextId } from "./dom.js";

/** A labelled control: field("Domain name", h("input", {...})). */
export function field(label, control, hint) {
  const id = control.id || nextId();
  control.id = id;
  let hintEl = null;
  if (hint) {
    hintEl = h("small", { id: `${id}-hint`, class: "hint" }, hint);
    control.setAttribute("aria-describedby", hintEl.id);
  }
  const wrap = h("div", { class: control.type === "checkbox" ? "field check" : "field" });
  const labelEl = h("label", { for: id }, label);
  if (control.type === "checkbox") wrap.append(control, labelEl);
  else wrap.append(labelEl, control);
  if (hintEl) wrap.append(hintEl);
  return wrap;
}

export function input(name, props = {}) {
  return h("input", { name, type: "text", autocomplete: "off", ...props });
}

export function select(name, options, selected) {
  return h(
    "select",
    { name },
    options.map(([value, text]) =>
      h("option", { value: String(value), selected: String(value) === String(selected) }, text),
    ),
  );
}

/** A button; an error thrown by its action is shown, never left unhandled. */
export function button(text, onclick, props = {}) {
  const run = async (event) => {
    try {
      await onclick(event);
    } catch (exc) {
      toast(describe(exc));
    }
  };
  return h("button", { type: "button", onclick: run, ...props }, text);
}

/** A form whose submit runs ``onsubmit(values)``, showing its error beside it. */
export function form(label, children, onsubmit, submitText = "Save") {
  const status = h("p", { class: "form-status", role: "status", "aria-live": "polite" });
  const submit = h("button", { type: "submit" }, submitText);
  const el = h("form", { "aria-label": label, class: "form" }, children, h("div", { class: "actions" }, submit), status);
  el.addEventListener("submit", async (event) => {
    event.preventDefault();
    clear(status);
    status.className = "form-status";
    submit.disabled = true;
    try {
      await onsubmit(formValues(el), el, status);
    } catch (exc) {
      status.className = "form-status error";
      status.textContent = describe(exc);
    } finally {
      submit.disabled = false;
    }
  });
  return el;
}

export function formValues(el) {
  const out = {};
  for (const control of el.elements) {
    if (!control.name) continue;
    if (control.type === "checkbox") {
      if (control.dataset.group) {
        out[control.dataset.group] = out[control.dataset.group] || [];
        if (control.checked) out[control.dataset.group].push(control.value);
      } else out[control.name] = control.checked;
    } else out[control.name] = control.value.trim();
  }
  return out;
}

export function describe(exc) {
  if (exc && exc.command) return `${exc.command}: ${exc.message} (error ${exc.code})`;
  return String(exc && exc.message ? exc.message : exc);
}

export function notice(text, kind = "info") {
  return h("p", { class: `notice ${kind}`, role: kind === "error" ? "alert" : "status" }, text);
}

/** table([{label, value: row => text|node}], rows): a table with a caption. */
export function table(caption, columns, rows, empty = "Nothing yet.") {
  if (!rows.length) return h("p", { class: "empty" }, empty);
  return h(
    "div",
    { class: "table-wrap" },
    h(
      "table",
      {},
      h("caption", {}, caption),
      h("thead", {}, h("tr", {}, columns.map((c) => h("th", { scope: "col" }, c.label)))),
      h(
        "tbody",
        {},
        rows.map((row) =>
          h("tr", {}, columns.map((c) => h("td", { "data-label": c.label }, c.value(row)))),
        ),
      ),
    ),
  );
}

export function toast(text) {
  const el = document.getElementById("toast");
  el.textContent = text;
  el.classList.add("shown");
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => el.classList.remove("shown"), 3000);
}

export function copyButton(text, what) {
  return button(
    "Copy",
    async () => {
      try {
        await navigator.clipboard.writeText(text);
        toast(`${what} copied`);
      } catch {
        toast(`Copying failed: select the ${what.toLowerCase()} and copy it`);
      }
    },
    { class: "small", "aria-label": `Copy ${what.toLowerCase()}` },
  );
}

/** A secret shown once, with a copy button. */
export function secretBox(title, pairs) {
  return h(
    "section",
    { class: "secret", "aria-label": title },
    h("h3", {}, title),
    h("p", {}, "Shown only now: copy it somewhere safe."),
    h(
      "dl",
      {},
      pairs.map(([name, value]) => [
        h("dt", {}, name),
        h("dd", {}, h("code", { class: "wrap" }, String(value)), " ", copyButton(String(value), name)),
      ]),
    ),
  );
}

export function pager(total, start, count, go) {
  const last = Math.min(start + count, total);
  return h(
    "nav",
    { class: "pager", "aria-label": "Pages" },
    button("Previous", () => go(Math.max(0, start - count)), { disabled: start === 0 }),
    h("span", {}, total ? `${start + 1}–${last} of ${total}` : "0 of 0"),
    button("Next", () => go(start + count), { disabled: last >= total }),
  );
}

export function yesNo(value) {
  return value === true || value === 1 || value === "1" || value === "true" ? "Yes" : "No";
}

export function truthy(value) {
  return yesNo(value) === "Yes";
}

export function heading(text) {
  return h("h1", { tabindex: "-1" }, text);
}

let domainCache = null;

/** The user's domains (GetDomains), cached for the page's life. */
export async function domains(refresh = false) {
  if (!domainCache || refresh) domainCache = (await call("EmailGateway.GetDomains")).Domains || [];
  return domainCache;
}

export function forgetDomains() {
  domainCache = null;
}

const PICKED = "postern.domain";

/** A domain select that remembers the choice; calls onchange(id) at once and on change. */
export async function domainPicker(onchange, { any = false } = {}) {
  const list = await domains();
  if (!list.length && !any) return { el: notice("Add a sender domain first (Domains)."), id: null };
  const options = list.map((d) => [d.DomainID, d.DomainName]);
  if (any) options.unshift(["", "All domains"]);
  let chosen = sessionStorage.getItem(PICKED);
  if (!options.some(([v]) => String(v) === chosen)) chosen = String(options[0][0]);
  const control = select("DomainID", options, chosen);
  control.addEventListener("change", () => {
    sessionStorage.setItem(PICKED, control.value);
    onchange(control.value);
  });
  return { el: h("div", { class: "picker" }, field("Domain", control)), id: chosen };
}

export function domainName(id) {
  const found = (domainCache || []).find((d) => String(d.DomainID) === String(id));
  return found ? found.DomainName : String(id);
}
