// The console's shell: logging in and out, the navigation, and hash routing (#/domains …).

import { call, session } from "./api.js";
import { clear, h } from "./dom.js";
import { describe, field, form, forgetDomains, heading, input, notice } from "./ui.js";
import * as domains from "./pages/domains.js";
import * as keys from "./pages/keys.js";
import * as webhooks from "./pages/webhooks.js";
import * as templates from "./pages/templates.js";
import * as events from "./pages/events.js";
import * as stats from "./pages/stats.js";
import * as suppression from "./pages/suppression.js";
import * as held from "./pages/held.js";
import * as admin from "./pages/admin.js";

const PAGES = [
  ["domains", "Domains", domains.list],
  ["keys", "Keys & SMTP", keys.page],
  ["webhooks", "Webhooks", webhooks.page],
  ["templates", "Templates", templates.list],
  ["events", "Events", events.page],
  ["stats", "Statistics", stats.page],
  ["suppression", "Suppression", suppression.page],
  ["held", "Held", held.page],
];
const ADMIN_PAGES = [
  ["admin/users", "Users", admin.users],
  ["admin/domains", "All domains", admin.domains],
  ["admin/queue", "Queue", admin.queue],
];
const DETAIL = [
  [/^domains\/(\d+)$/, domains.detail],
  [/^templates\/(\d+)$/, templates.detail],
  [/^messages\/([^/]+)$/, events.message],
];

const main = document.getElementById("main");

function renderNav() {
  const nav = clear(document.getElementById("nav"));
  const who = clear(document.getElementById("who"));
  const user = session.user;
  if (!user) return;
  const pages = user.IsAdmin ? [...PAGES, ...ADMIN_PAGES] : PAGES;
  nav.append(
    h(
      "ul",
      {},
      pages.map(([path, label]) =>
        h("li", {}, h("a", { href: `#/${path}`, dataset: { path } }, label)),
      ),
    ),
  );
  who.append(
    h("span", {}, user.Username, user.IsAdmin ? " (administrator)" : ""),
    " ",
    h("button", { type: "button", class: "small", onclick: logout }, "Log out"),
  );
}

async function logout() {
  try {
    await call("User.Logout");
  } catch {
    // The session may be over already; it is forgotten either way.
  }
  session.end();
  forgetDomains();
  location.hash = "#/login";
  renderNav();
}

function loginPage() {
  clear(main);
  const username = input("Username", { autocomplete: "username", required: true });
  const password = input("Password", { type: "password", autocomplete: "current-password", required: true });
  main.append(
    heading("Log in to Postern"),
    form(
      "Log in",
      [field("Username", username), field("Password", password)],
      async (values) => {
        const answer = await call("User.Login", {
          Username: values.Username,
          Password: values.Password,
        });
        session.start(answer.SessionID, answer.UserInfo);
        renderNav();
        location.hash = "#/domains";
      },
      "Log in",
    ),
  );
  username.focus();
}

let rendering = 0;

async function route() {
  const path = location.hash.replace(/^#\/?/, "").split("?")[0];
  if (!session.id) {
    if (path !== "login") location.hash = "#/login";
    else loginPage();
    return;
  }
  if (path === "login" || path === "") {
    location.hash = "#/domains";
    return;
  }
  const user = session.user;
  const pages = user.IsAdmin ? [...PAGES, ...ADMIN_PAGES] : PAGES;
  let handler = null;
  let args = [];
  const page = pages.find(([p]) => p === path);
  if (page) handler = page[2];
  for (const [pattern, detail] of DETAIL) {
    const match = path.match(pattern);
    if (match) [handler, args] = [detail, match.slice(1).map(decodeURIComponent)];
  }
  for (const link of document.querySelectorAll("#nav a")) {
    const current = path === link.dataset.path || path.startsWith(`${link.dataset.path}/`);
    if (current) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  const ticket = ++rendering;
  const view = h("div", { class: "view" });
  clear(main).append(view);
  if (!handler) {
    view.append(heading("Not found"), notice(`There is no page ${path}.`, "error"));
    return;
  }
  main.setAttribute("aria-busy", "true");
  try {
    await handler(view, ...args);
  } catch (exc) {
    if (ticket !== rendering) return;
    if (!view.querySelector("h1")) view.prepend(heading("Error"));
    view.append(notice(describe(exc), "error"));
  } finally {
    if (ticket === rendering) main.removeAttribute("aria-busy");
  }
  if (ticket === rendering && !main.contains(document.activeElement)) {
    const h1 = main.querySelector("h1");
    if (h1) h1.focus();
  }
}

window.addEventListener("hashchange", route);
window.addEventListener("postern:logout", () => {
  renderNav();
  location.hash = "#/login";
});
renderNav();
route();
