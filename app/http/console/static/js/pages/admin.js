// Administrators: users (status and quotas), every user's domains, and the queue.
// Built on the Admin.* commands; where a server lacks them the page says so.

import { call } from "../api.js";
import { append, clear, h } from "../dom.js";
import { button, describe, field, form, heading, input, notice, pager, select, table, toast } from "../ui.js";

const PER_PAGE = 25;
const UNKNOWN_COMMAND = 100003;

function failure(exc) {
  if (exc && exc.code === UNKNOWN_COMMAND) {
    return notice(`This server does not have ${exc.command}: its administration commands are not available.`, "error");
  }
  return notice(describe(exc), "error");
}

function searchForm(label, state, run) {
  return form(label, [field("Search", input("Search", { value: state.Search }))], async (values) => {
    state.Search = values.Search;
    await run(1);
  }, "Search");
}

const userState = { Search: "" };

export async function users(view) {
  view.append(heading("Users"));
  const results = h("div", { "aria-live": "polite" });
  const run = async (pageNo) => {
    let answer;
    try {
      answer = await call("Admin.Users.List", { Page: pageNo, PerPage: PER_PAGE, Search: userState.Search });
    } catch (exc) {
      clear(results).append(failure(exc));
      return;
    }
    clear(results).append(
      table("Users", [
        { label: "User", value: (u) => [u.Username, u.IsAdmin ? " (admin)" : ""] },
        { label: "Email", value: (u) => u.EmailAddress || "" },
        { label: "Status", value: (u) => h("span", { class: `status-${String(u.Status).toLowerCase()}` }, u.Status) },
        { label: "Quota", value: (u) => `${u.EffectiveSendQuota ? `${u.EffectiveSendQuota} per ${u.EffectiveSendQuotaPeriod} s` : "unlimited"}${u.SendQuota === null ? " (setting)" : ""}` },
        { label: "Domains", value: (u) => `${u.DomainCount} of ${u.EffectiveDomainLimit}` },
        { label: "Last login", value: (u) => u.LastLoginDate || "never" },
        { label: "Change", value: (u) => editor(u, () => run(pageNo)) },
      ], answer.Users || [], "No users match."),
      pager(answer.TotalRecords || 0, (pageNo - 1) * PER_PAGE, PER_PAGE, (start) => run(start / PER_PAGE + 1)),
    );
  };
  view.append(searchForm("Search users", userState, run), results);
  await run(1);
}

function editor(u, again) {
  return h("details", {}, h("summary", {}, `Edit ${u.Username}`),
    form(`Change ${u.Username}`, [
      field("Status", select("Status", [["Enabled", "Enabled"], ["Suspended", "Suspended (cannot send)"], ["Disabled", "Disabled (cannot log in)"]], u.Status)),
      field("Send quota", input("SendQuota", { inputmode: "numeric", value: u.SendQuota ?? "" }), "Recipients per period (0: unlimited); empty: the setting."),
      field("Quota period (s)", input("SendQuotaPeriod", { inputmode: "numeric", value: u.SendQuotaPeriod ?? "" })),
      field("Domain limit", input("DomainLimit", { inputmode: "numeric", value: u.DomainLimit ?? "" })),
    ], async (values) => {
      const params = { UserID: u.UserID };
      if (values.Status !== u.Status) params.Status = values.Status;
      for (const name of ["SendQuota", "SendQuotaPeriod", "DomainLimit"]) {
        const before = u[name] === null || u[name] === undefined ? "" : String(u[name]);
        if (values[name] !== before) params[name] = values[name] === "" ? -1 : values[name];
      }
      await call("Admin.User.Update", params);
      toast(`${u.Username} updated`);
      await again();
    }, "Apply"));
}

const domainState = { Search: "" };

export async function domains(view) {
  view.append(heading("All domains"));
  const results = h("div", { "aria-live": "polite" });
  const run = async (pageNo) => {
    let answer;
    try {
      answer = await call("Admin.Domains.List", { Page: pageNo, PerPage: PER_PAGE, Search: domainState.Search });
    } catch (exc) {
      clear(results).append(failure(exc));
      return;
    }
    clear(results).append(
      table("Every user's domains", [
        { label: "Domain", value: (d) => d.DomainName },
        { label: "Owner", value: (d) => d.Username },
        { label: "Status", value: (d) => [d.Status, d.Suspended ? " · suspended" : ""] },
        { label: "Verified", value: (d) => d.VerifiedDate || "no" },
        {
          label: "Actions",
          value: (d) => d.Suspended
            ? button("Enable", async () => { await call("Admin.Domain.Enable", { DomainID: d.DomainID }); await run(pageNo); }, { class: "small", "aria-label": `Enable ${d.DomainName}` })
            : button("Suspend", async () => {
              if (!window.confirm(`Suspend ${d.DomainName}? Its sends are refused until it is enabled.`)) return;
              await call("Admin.Domain.Suspend", { DomainID: d.DomainID });
              await run(pageNo);
            }, { class: "small danger", "aria-label": `Suspend ${d.DomainName}` }),
        },
      ], answer.Domains || [], "No domains match."),
      pager(answer.TotalRecords || 0, (pageNo - 1) * PER_PAGE, PER_PAGE, (start) => run(start / PER_PAGE + 1)),
    );
  };
  view.append(searchForm("Search domains", domainState, run), results);
  await run(1);
}

/** Any answer shown as it is: its figures as a list, its lists of rows as tables. */
function generic(answer) {
  const facts = [];
  const tables = [];
  for (const [key, value] of Object.entries(answer)) {
    if (key === "Success" || key === "ErrorCode") continue;
    if (Array.isArray(value) && value.length && typeof value[0] === "object") {
      const columns = Object.keys(value[0]).map((c) => ({ label: c, value: (r) => (typeof r[c] === "object" && r[c] !== null ? JSON.stringify(r[c]) : String(r[c] ?? "")) }));
      tables.push(h("h2", {}, key), table(key, columns, value));
    } else if (Array.isArray(value)) {
      tables.push(h("h2", {}, key), h("p", { class: "empty" }, "None."));
    } else if (value && typeof value === "object") {
      tables.push(h("h2", {}, key), h("dl", { class: "facts" }, Object.entries(value).map(([k, v]) => [h("dt", {}, k), h("dd", {}, String(v ?? ""))])));
    } else {
      facts.push(h("dt", {}, key), h("dd", {}, typeof value === "object" && value !== null ? JSON.stringify(value) : String(value ?? "")));
    }
  }
  return [facts.length ? h("dl", { class: "facts" }, facts) : null, tables];
}

export async function queue(view) {
  view.append(heading("Queue"));
  const results = h("div", { "aria-live": "polite" });
  const run = async () => {
    try {
      append(clear(results), [generic(await call("Admin.Queue"))]);
    } catch (exc) {
      clear(results).append(failure(exc));
    }
  };
  view.append(h("div", { class: "actions" }, button("Refresh", run)), results);
  await run();
}
