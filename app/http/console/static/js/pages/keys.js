// Sender API keys and SMTP credentials of a domain: create (the secret shown once), delete.

import { call } from "../api.js";
import { clear, h } from "../dom.js";
import { button, domainPicker, field, form, heading, input, secretBox, table } from "../ui.js";

function masked(key) {
  return key ? `${key.slice(0, 7)}…` : "";
}

export async function page(view) {
  view.append(heading("Sender keys and SMTP credentials"));
  const body = h("div");
  const picker = await domainPicker((id) => show(body, id));
  view.append(picker.el, body);
  if (picker.id) await show(body, picker.id);
}

async function show(body, domainId) {
  const [apis, smtps] = await Promise.all([
    call("EmailGateway.GetAPIs", { DomainID: domainId }),
    call("EmailGateway.GetSMTPs", { DomainID: domainId }),
  ]);
  const reveal = h("div", { class: "reveal", "aria-live": "polite" });
  const again = () => show(body, domainId);
  // After again() the page is new: the secret goes into the new page's place for it.
  const showSecret = (box) => {
    const place = body.querySelector(".reveal");
    clear(place).append(box);
    place.querySelector("h3").scrollIntoView();
  };
  clear(body).append(
    reveal,
    h("section", { "aria-labelledby": "keys-h" },
      h("h2", { id: "keys-h" }, "Sender API keys"),
      h("p", {}, "Send with ", h("code", {}, "Authorization: Bearer <key>"), " on /api/v1/email."),
      form(
        "Create a sender key",
        [field("Description", input("Description", { required: true, maxlength: 255 }))],
        async (values) => {
          const made = await call("EmailGateway.AddAPI", { DomainID: domainId, Description: values.Description });
          await again();
          showSecret(secretBox("New sender key", [["Key", made.APIKey.Key]]));
        },
        "Create key",
      ),
      table(
        "Sender keys",
        [
          { label: "Description", value: (k) => k.Description },
          { label: "Key", value: (k) => h("code", {}, masked(k.Key)) },
          { label: "Created", value: (k) => k.CreationDate || "" },
          { label: "Last used", value: (k) => k.LastUsedDate || "never" },
          {
            label: "Actions",
            value: (k) =>
              button("Delete", async () => {
                if (!window.confirm(`Delete the key "${k.Description}"? It stops working at once.`)) return;
                await call("EmailGateway.DeleteAPI", { ApiKeyId: k.KeyID });
                await again();
              }, { class: "small danger", "aria-label": `Delete key ${k.Description}` }),
          },
        ],
        apis.APIKeys || [],
        "No sender keys for this domain.",
      ),
    ),
    h("section", { "aria-labelledby": "smtp-h" },
      h("h2", { id: "smtp-h" }, "SMTP credentials"),
      form(
        "Create SMTP credentials",
        [
          field("From address", input("FromEmail", { type: "email", placeholder: "optional" })),
          field("From name", input("FromName", { placeholder: "optional" })),
        ],
        async (values) => {
          const params = { DomainID: domainId };
          if (values.FromEmail) params.FromEmail = values.FromEmail;
          if (values.FromName) params.FromName = values.FromName;
          const made = await call("EmailGateway.AddSMTP", params);
          await again();
          const s = made.SMTP;
          showSecret(secretBox("New SMTP credentials", [
            ["Host", s.SMTPHost], ["Ports", String(s.SMTPPorts)], ["Username", s.Username], ["Password", s.Password],
          ]));
        },
        "Create credentials",
      ),
      table(
        "SMTP credentials",
        [
          { label: "Username", value: (s) => h("code", { class: "wrap" }, s.Username) },
          { label: "Server", value: (s) => `${s.SMTPHost} (${s.SMTPPorts})` },
          { label: "From", value: (s) => s.FromEmail || "" },
          {
            label: "Actions",
            value: (s) => [
              button("New password", async () => {
                if (!window.confirm(`Replace the password of ${s.Username}? The old one stops working.`)) return;
                const reset = await call("EmailGateway.ResetSMTPPassword", { smtpid: s.SMTPID });
                showSecret(secretBox("New SMTP password", [["Username", reset.SMTP.Username], ["Password", reset.SMTP.Password]]));
              }, { class: "small", "aria-label": `New password for ${s.Username}` }),
              " ",
              button("Delete", async () => {
                if (!window.confirm(`Delete ${s.Username}?`)) return;
                await call("EmailGateway.DeleteSMTP", { smtpid: s.SMTPID });
                await again();
              }, { class: "small danger", "aria-label": `Delete ${s.Username}` }),
            ],
          },
        ],
        smtps.SMTPs || [],
        "No SMTP credentials for this domain.",
      ),
    ),
  );
}
