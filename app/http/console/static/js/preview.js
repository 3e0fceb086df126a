// A preview of the template language for the console: values, default(), ~, comments and
// simple {% if %} blocks. Sending renders with the server's full implementation.

const VALUE = /\{\{\s*([\s\S]*?)\s*\}\}/g;
const DOLLARS = /\$\$([A-Za-z_][A-Za-z0-9_]*)\$\$/g;
const COMMENT = /\{#[\s\S]*?#\}/g;
const BLOCK = /\{%\s*if\s+([\s\S]*?)\s*%\}([\s\S]*?)(?:\{%\s*else\s*%\}([\s\S]*?))?\{%\s*endif\s*%\}/g;

function text(value) {
  return value === null || value === undefined ? "" : String(value);
}

function operand(expr, values) {
  const s = expr.trim();
  const quoted = s.match(/^"(.*)"$|^'(.*)'$/);
  if (quoted) return quoted[1] ?? quoted[2];
  if (/^-?\d+(\.\d+)?$/.test(s)) return Number(s);
  const def = s.match(/^([A-Za-z_]\w*)\s*\|\s*default\(\s*(?:"([^"]*)"|'([^']*)')\s*\)$/);
  if (def) {
    const v = values[def[1]];
    return v === undefined || v === null || v === "" ? (def[2] ?? def[3]) : v;
  }
  const name = s.match(/^([A-Za-z_]\w*)(\s*\|.*)?$/);
  if (name) return values[name[1]];
  return `{{ ${s} }}`;
}

function expression(expr, values) {
  return expr.split(/\s*~\s*/).map((part) => text(operand(part, values))).join("");
}

function condition(expr, values) {
  const negated = expr.match(/^not\s+(.*)$/);
  if (negated) return !condition(negated[1], values);
  const cmp = expr.match(/^(.+?)\s*(==|!=)\s*(.+)$/);
  if (cmp) {
    const [a, b] = [operand(cmp[1], values), operand(cmp[3], values)];
    if (a === undefined || b === undefined) return false;
    return cmp[2] === "==" ? String(a) === String(b) : String(a) !== String(b);
  }
  const v = operand(expr, values);
  return Boolean(v) && v !== "0";
}

/** ``source`` with ``values`` put in. */
export function preview(source, values) {
  let out = (source || "").replace(COMMENT, "");
  out = out.replace(BLOCK, (_m, cond, yes, no) => (condition(cond, values) ? yes : no || ""));
  out = out.replace(VALUE, (_m, expr) => expression(expr, values));
  return out.replace(DOLLARS, (_m, name) => text(values[name]));
}
