// Sender domains: the list, adding one, its DNS records, verifying them, tracking settings.

import { call } from "../api.js";
import { clear, h } from "../dom.js";
import {
  button, copyButton, describe, domains, field, forgetDomains, form, heading, input, notice,
  table, toast, truthy, yesNo,
} from "../ui.js";

export async function list(view) {
  view.append(heading("Sender domains"));
  const rows = await domains(true);
  view.append(
    form(
      "Add a sender domain",
      [field("Domain name", input("DomainName", { required: true, placeholder: "example.com" }))],
      async (values) => {
        const added = await call("EmailGateway.AddDomain", { DomainName: values.DomainName });
        forgetDomains();
        location.hash = `#/domains/${added.NewSenderDomainID}`;
      },
      "Add domain",
    ),
    table(
      "Your sender domains",
      [
        { label: "Domain", value: (d) => h("a", { href: `#/domains/${d.DomainID}` }, d.DomainName) },
        { label: "Verified", value: (d) => yesNo(d.Verified) },
        { label: "Sending", value: (d) => (truthy(d.Active) ? "Enabled" : "Not yet") },
      ],
      rows,
      "No sender domains yet: add one above.",
    ),
  );
}

function recordsTable(records) {
  return table(
    "DNS records to publish",
    [
      { label: "Purpose", value: (r) => r.Purpose },
      { label: "Type", value: (r) => r.Type },
      {
        label: "Host",
        value: (r) => [h("code", { class: "wrap" }, r.Host), " ", copyButton(r.Host, `${r.Purpose} host`)],
      },
      {
        label: "Value",
        value: (r) => [h("code", { class: "wrap" }, r.Value), " ", copyButton(r.Value, `${r.Purpose} value`)],
      },
      { label: "Required", value: (r) => yesNo(r.Required) + (r.KeyStatus ? ` (${r.KeyStatus})` : "") },
    ],
    records,
  );
}

function resultsTable(results) {
  return table(
    "Verification results",
    [
      { label: "Type", value: (r) => r.Type },
      { label: "Host", value: (r) => h("code", { class: "wrap" }, r.Host) },
      {
        label: "Result",
        value: (r) =>
          h("span", { class: r.Verified ? "ok" : "bad" }, r.Verified ? "✓ Verified" : "✗ Not verified"),
      },
      {
        label: "Found",
        value: (r) => (r.Error ? `DNS ${r.Error}` : r.Found === undefined ? "" : h("code", { class: "wrap" }, JSON.stringify(r.Found))),
      },
    ],
    results,
  );
}

export async function detail(view, id) {
  const { Domain: d } = await call("EmailGateway.GetDomain", { DomainID: id });
  const status = h("p", { class: "status-line" });
  const showStatus = (s, verified) => {
    clear(status).append("Status: ", h("strong", {}, s), verified ? " · verified" : " · not verified");
  };
  showStatus(d.Status, d.Verified);
  const results = h("div", { class: "results", "aria-live": "polite" });
  const verify = button("Verify DNS records", async () => {
    verify.disabled = true;
    clear(results).append(h("p", {}, "Checking DNS…"));
    try {
      const answer = await call("EmailGateway.VerifyDomain", { DomainID: id });
      clear(results).append(resultsTable(answer.DNSVerificationResults || []));
      if (answer.Note) results.append(notice(answer.Note));
      showStatus(answer.Domain.Status, answer.Domain.Status === "Enabled");
      forgetDomains();
    } catch (exc) {
      clear(results).append(notice(describe(exc), "error"));
    } finally {
      verify.disabled = false;
    }
  });
  const flag = (name, label) =>
    field(label, h("input", { type: "checkbox", name, checked: truthy(d[name]) }));
  view.append(
    heading(d.DomainName),
    status,
    h("p", {}, h("a", { href: "#/domains" }, "← All domains")),
    h("section", { "aria-labelledby": "dns-h" },
      h("h2", { id: "dns-h" }, "DNS records"),
      h("p", {}, "Publish these records at your DNS provider, then verify them."),
      recordsTable(d.DNSRecords || []),
      h("div", { class: "actions" }, verify),
      results,
    ),
    h("section", { "aria-labelledby": "track-h" },
      h("h2", { id: "track-h" }, "Tracking and unsubscribe"),
      form(
        "Tracking settings",
        [
          flag("LinkTracking", "Track clicks (rewrite links)"),
          flag("OpenTracking", "Track opens (pixel)"),
          flag("UnsubscribeLink", "Add an unsubscribe link and List-Unsubscribe"),
          field("Subdomain", input("Subdomain", { value: d.Subdomain || "" }),
            "Return-path, DKIM and tracking hosts live under it; changing it needs new DNS records."),
        ],
        async (values, _el, out) => {
          const params = { DomainID: id };
          for (const name of ["LinkTracking", "OpenTracking", "UnsubscribeLink"]) params[name] = values[name] ? 1 : 0;
          if (values.Subdomain && values.Subdomain !== d.Subdomain) params.Subdomain = values.Subdomain;
          await call("EmailGateway.UpdateDomain", params);
          out.textContent = "Saved.";
          if (params.Subdomain) location.reload();
        },
      ),
    ),
    h("section", { "aria-labelledby": "danger-h" },
      h("h2", { id: "danger-h" }, "Delete"),
      button("Delete this domain", async () => {
        if (!window.confirm(`Delete ${d.DomainName} with its keys, SMTP credentials and webhooks?`)) return;
        await call("EmailGateway.DeleteDomain", { DomainID: id });
        forgetDomains();
        toast(`${d.DomainName} deleted`);
        location.hash = "#/domains";
      }, { class: "danger" }),
    ),
  );
}
