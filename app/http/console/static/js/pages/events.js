// The event log (filters, query syntax, newest first, paging) and one message's timeline.

import { call } from "../api.js";
import { clear, h } from "../dom.js";
import { domains, field, form, heading, input, notice, pager, select, table } from "../ui.js";

const TYPES = [
  "accepted", "rejected", "suppressed", "deferred", "held", "delivered", "bounced", "blocked",
  "failed", "opened", "clicked", "unsubscribed", "complained", "not_spam", "auth_failure",
  "dkim_rotating", "dkim_activated", "dkim_retired", "webhook_disabled",
];
const PAGE = 25;
const filters = { DomainID: "", Event: "", StartDate: "", EndDate: "", Query: "" };

function status(e) {
  const s = e.delivery_status;
  if (s && (s.code || s.text)) {
    const text = s.text || "";
    const enhanced = s.enhanced && !text.startsWith(s.enhanced) ? `${s.enhanced} ` : "";
    return `${s.code ? `${s.code} ` : ""}${enhanced}${text}`;
  }
  if (e.url) return e.url;
  if (e.details && e.details.error) return e.details.error;
  return "";
}

function when(e) {
  return (e.timestamp || "").replace("T", " ").replace("Z", "");
}

function subject(e) {
  return (e.message && e.message.headers && e.message.headers.subject) || "";
}

export async function page(view) {
  view.append(heading("Event log"));
  const list = await domains();
  const results = h("div", { "aria-live": "polite" });
  const run = async (start) => {
    const params = { StartFrom: start, RetrieveCount: PAGE };
    for (const [k, v] of Object.entries(filters)) if (v) params[k] = v;
    const answer = await call("EmailGateway.GetEvents", params);
    clear(results).append(
      table(
        "Events, newest first",
        [
          { label: "Time (UTC)", value: (e) => when(e) },
          { label: "Event", value: (e) => h("span", { class: `ev ev-${e.event_type}` }, e.event_type) },
          { label: "Recipient", value: (e) => e.recipient || "" },
          { label: "Subject", value: (e) => subject(e) },
          { label: "Domain", value: (e) => e.domain || "" },
          { label: "Details", value: (e) => status(e) },
          { label: "Message", value: (e) => e.message_id ? h("a", { href: `#/messages/${encodeURIComponent(e.message_id)}`, "aria-label": `Message ${e.message_id}` }, "Timeline") : "" },
        ],
        answer.Events || [],
        "No events match.",
      ),
      pager(answer.TotalRecords || 0, start, PAGE, run),
    );
  };
  view.append(
    form(
      "Filter events",
      [
        h("div", { class: "row" },
          field("Domain", select("DomainID", [["", "All domains"], ...list.map((d) => [d.DomainID, d.DomainName])], filters.DomainID)),
          field("Event", select("Event", [["", "Any"], ...TYPES.map((t) => [t, t])], filters.Event)),
          field("From (UTC)", input("StartDate", { type: "date", value: filters.StartDate })),
          field("To (UTC)", input("EndDate", { type: "date", value: filters.EndDate })),
        ),
        field("Search", input("Query", { value: filters.Query, placeholder: 'to:ann@example.com subject:"your order"' }),
          "Terms all must match: to:address, subject:text, from:text, tag:name, message:id, or plain text (recipient or subject). Quote text with spaces."),
      ],
      async (values) => {
        Object.assign(filters, values);
        await run(0);
      },
      "Search",
    ),
    results,
  );
  await run(0);
}

export async function message(view, id) {
  view.append(heading("Message"));
  const answer = await call("EmailGateway.GetEvents", { Query: `message:${id}`, StartFrom: 0, RetrieveCount: 100 });
  const events = (answer.Events || []).slice().reverse();
  if (!events.length) {
    view.append(notice("No events for this message (or it is not yours)."));
    return;
  }
  const first = events[0];
  const headers = (first.message && first.message.headers) || {};
  const byRecipient = new Map();
  for (const e of events) {
    const key = e.recipient || "(message)";
    if (!byRecipient.has(key)) byRecipient.set(key, []);
    byRecipient.get(key).push(e);
  }
  view.append(
    h("dl", { class: "facts" },
      h("dt", {}, "Message id"), h("dd", {}, h("code", { class: "wrap" }, id)),
      h("dt", {}, "Subject"), h("dd", {}, headers.subject || ""),
      h("dt", {}, "From"), h("dd", {}, headers.from || ""),
      h("dt", {}, "Domain"), h("dd", {}, first.domain || ""),
      h("dt", {}, "Tags"), h("dd", {}, (first.tags || []).join(", ")),
    ),
    h("p", {}, h("a", { href: "#/events" }, "← Event log")),
  );
  if (answer.TotalRecords > events.length) view.append(notice(`Showing the latest ${events.length} of ${answer.TotalRecords} events.`));
  for (const [recipient, list] of byRecipient) {
    view.append(
      h("section", { class: "timeline", "aria-label": `Timeline of ${recipient}` },
        h("h2", {}, recipient),
        h("ol", {}, list.map((e) =>
          h("li", { class: `ev-${e.event_type}` },
            h("time", { datetime: e.timestamp }, when(e)),
            " ", h("strong", {}, e.event_type),
            status(e) ? h("div", { class: "smtp" }, h("code", { class: "wrap" }, status(e))) : null,
            e.ip ? h("div", {}, `from ${e.ip}${e.user_agent ? ` · ${e.user_agent}` : ""}`) : null,
            e.details && Object.keys(e.details).length
              ? h("details", {}, h("summary", {}, "Details"), h("pre", { class: "wrap" }, JSON.stringify(e.details, null, 2)))
              : null,
          ))),
      ),
    );
  }
}
