// Building elements from data without ever parsing HTML: every value becomes a text node.

const PROPS = new Set(["value", "checked", "disabled", "selected", "hidden", "multiple", "required"]);

/** h("button", {type: "button", onclick: f}, "Save"): an element, its children as text. */
export function h(tag, props, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "style") throw new Error("no inline styles: use a class");
    if (key === "class") el.className = value;
    else if (key === "for") el.htmlFor = value;
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key.startsWith("on") && typeof value === "function") {
      el.addEventListener(key.slice(2), value);
    } else if (PROPS.has(key)) el[key] = value;
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  append(el, children);
  return el;
}

export function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}

let uid = 0;
/** A unique id for pairing a <label> with its control. */
export function nextId(prefix = "f") {
  uid += 1;
  return `${prefix}-${uid}`;
}
