// Webhooks of a domain: add, enable, delete; the signing key; the delivery log with attempts.

import { call } from "../api.js";
import { clear, h } from "../dom.js";
import {
  button, copyButton, domainPicker, field, form, heading, input, pager, select, table,
} from "../ui.js";

const EVENTS = ["delivered", "bounced", "blocked", "opened", "clicked", "unsubscribed", "complained", "not_spam", "auth_failure"];
const PAGE = 20;

export async function page(view) {
  view.append(heading("Webhooks"));
  const body = h("div");
  const picker = await domainPicker((id) => show(body, id));
  view.append(picker.el, body);
  if (picker.id) await show(body, picker.id);
}

async function show(body, domainId) {
  const answer = await call("EmailGateway.GetWebhooks", { DomainID: domainId });
  const again = () => show(body, domainId);
  const key = h("code", { class: "wrap" }, "••••••••");
  let shown = false;
  const toggle = button("Show", () => {
    shown = !shown;
    key.textContent = shown ? answer.SigningKey : "••••••••";
    toggle.textContent = shown ? "Hide" : "Show";
  }, { class: "small", "aria-label": "Show the signing key" });
  const log = h("div");
  clear(body).append(
    h("section", { "aria-labelledby": "sk-h" },
      h("h2", { id: "sk-h" }, "Signing key"),
      h("p", {}, "Every POST is signed with it (X-Postern-Signature and Standard Webhooks headers)."),
      h("p", {}, key, " ", toggle, " ", copyButton(answer.SigningKey, "Signing key"), " ",
        button("Regenerate", async () => {
          if (!window.confirm("Make a new signing key? Receivers must be given the new one.")) return;
          await call("EmailGateway.RegenerateSigningKey", { DomainID: domainId });
          await again();
        }, { class: "small danger" })),
    ),
    h("section", { "aria-labelledby": "wh-h" },
      h("h2", { id: "wh-h" }, "Webhooks"),
      form(
        "Add a webhook",
        [
          field("URL", input("WebhookURL", { type: "url", required: true, placeholder: "https://hooks.example.com/postern" })),
          h("fieldset", { class: "checks" }, h("legend", {}, "Events"),
            EVENTS.map((e) => field(e, h("input", { type: "checkbox", name: `ev-${e}`, value: e, dataset: { group: "Events" }, checked: e === "delivered" })))),
        ],
        async (values) => {
          await call("EmailGateway.AddWebhook", { DomainID: domainId, WebhookURL: values.WebhookURL, Event: values.Events.join(",") });
          await again();
        },
        "Add webhook",
      ),
      table(
        "Webhooks",
        [
          { label: "URL", value: (w) => h("code", { class: "wrap" }, w.URL) },
          { label: "Events", value: (w) => (w.Events || []).join(", ") },
          { label: "Status", value: (w) => [w.Status, w.DisabledReason ? ` — ${w.DisabledReason}` : "", w.FailingSince ? ` (failing since ${w.FailingSince})` : ""] },
          {
            label: "Actions",
            value: (w) => [
              w.Status === "Disabled"
                ? button("Enable", async () => {
                  await call("EmailGateway.EnableWebhook", { WebhookID: w.WebhookID, DomainID: domainId });
                  await again();
                }, { class: "small", "aria-label": `Enable ${w.URL}` })
                : null,
              " ",
              button("Delete", async () => {
                if (!window.confirm(`Delete the webhook to ${w.URL}?`)) return;
                await call("EmailGateway.DeleteWebhook", { WebhookID: w.WebhookID, DomainID: domainId });
                await again();
              }, { class: "small danger", "aria-label": `Delete ${w.URL}` }),
            ],
          },
        ],
        answer.Webhooks || [],
        "No webhooks for this domain.",
      ),
      h("p", { class: "hint" }, "Postern's API has no command that sends a test event: send a message to see one."),
    ),
    h("section", { "aria-labelledby": "dl-h" }, h("h2", { id: "dl-h" }, "Delivery log"), log),
  );
  await deliveries(log, domainId, "", 0);
}

async function deliveries(log, domainId, status, start) {
  const params = { DomainID: domainId, StartFrom: start, RetrieveCount: PAGE };
  if (status) params.Status = status;
  const answer = await call("EmailGateway.GetWebhookDeliveries", params);
  const filter = select("Status", [["", "Any"], ["pending", "Pending"], ["succeeded", "Succeeded"], ["failed", "Failed"]], status);
  filter.addEventListener("change", () => deliveries(log, domainId, filter.value, 0));
  clear(log).append(
    field("Status", filter),
    table(
      "Webhook deliveries, newest first",
      [
        { label: "Created", value: (d) => d.CreatedDate },
        { label: "Event", value: (d) => d.Event },
        { label: "URL", value: (d) => h("code", { class: "wrap" }, d.URL) },
        { label: "Status", value: (d) => [d.Status, d.LastStatusCode ? ` (HTTP ${d.LastStatusCode})` : "", d.LastError ? ` — ${d.LastError}` : ""] },
        {
          label: "Attempts",
          value: (d) =>
            h("details", {}, h("summary", {}, `${d.AttemptCount} attempt${d.AttemptCount === 1 ? "" : "s"}`),
              h("ol", {}, (d.Attempts || []).map((a) =>
                h("li", {}, `${a.Time}: `, a.StatusCode ? `HTTP ${a.StatusCode}` : "no answer", ` in ${a.DurationMs} ms`, a.Error ? ` — ${a.Error}` : ""))),
              d.NextAttemptDate ? h("p", {}, `Next attempt: ${d.NextAttemptDate}`) : null),
        },
      ],
      answer.Deliveries || [],
      "No deliveries yet.",
    ),
    pager(answer.TotalRecords || 0, start, PAGE, (s) => deliveries(log, domainId, status, s)),
  );
}
