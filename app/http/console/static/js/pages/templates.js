// Templates: the list, creating, editing, and a preview with sample values.

import { call } from "../api.js";
import { clear, h } from "../dom.js";
import { button, field, form, heading, input, notice, table, toast } from "../ui.js";
import { preview } from "../preview.js";

export async function list(view) {
  view.append(heading("Templates"));
  const answer = await call("EmailGateway.GetTemplates");
  view.append(
    form(
      "Create a template",
      [
        field("Name", input("Name", { required: true, maxlength: 255 })),
        field("Subject", input("Subject")),
        field("HTML part", h("textarea", { name: "HTMLContent", rows: 6 })),
        field("Plain-text part", h("textarea", { name: "PlainContent", rows: 4 })),
      ],
      async (values) => {
        const made = await call("EmailGateway.CreateTemplate", values);
        location.hash = `#/templates/${made.TemplateID}`;
      },
      "Create template",
    ),
    table(
      "Your templates",
      [
        { label: "Name", value: (t) => h("a", { href: `#/templates/${t.TemplateID}` }, t.Name) },
        { label: "Subject", value: (t) => t.Subject || "" },
        { label: "Hash", value: (t) => h("code", {}, t.TemplateHash) },
        { label: "Updated", value: (t) => t.UpdatedAt || t.CreatedAt || "" },
      ],
      answer.Templates || [],
      "No templates yet.",
    ),
  );
}

export async function detail(view, id) {
  const { Template: t } = await call("EmailGateway.GetTemplate", { TemplateID: id });
  const sample = h("textarea", { name: "Sample", rows: 3, class: "mono" }, '{"name": "Ann"}');
  const out = h("div", { class: "preview", "aria-live": "polite" });
  const editor = form(
    "Edit the template",
    [
      field("Name", input("Name", { required: true, value: t.Name })),
      field("Subject", input("Subject", { value: t.Subject || "" })),
      field("HTML part", h("textarea", { name: "HTMLContent", rows: 10, class: "mono" }, t.HTMLContent || "")),
      field("Plain-text part", h("textarea", { name: "PlainContent", rows: 6, class: "mono" }, t.PlainContent || "")),
    ],
    async (values, _el, status) => {
      await call("EmailGateway.UpdateTemplate", { TemplateID: id, ...values });
      status.textContent = "Saved.";
    },
  );
  const render = () => {
    let values;
    try {
      values = JSON.parse(sample.value || "{}");
    } catch (exc) {
      clear(out).append(notice(`The sample values are not JSON: ${exc.message}`, "error"));
      return;
    }
    const get = (name) => editor.elements[name].value;
    const html = preview(get("HTMLContent"), values);
    const frame = h("iframe", { sandbox: "", title: "HTML preview", class: "frame" });
    frame.srcdoc = html;
    clear(out).append(
      h("h3", {}, "Subject"), h("p", { class: "subject" }, preview(get("Subject"), values)),
      h("h3", {}, "HTML"), frame,
      h("h3", {}, "Plain text"), h("pre", { class: "wrap" }, preview(get("PlainContent"), values)),
    );
  };
  view.append(
    heading(t.Name),
    h("p", {}, h("a", { href: "#/templates" }, "← All templates"), " · hash ", h("code", {}, t.TemplateHash)),
    editor,
    h("section", { "aria-labelledby": "pv-h" },
      h("h2", { id: "pv-h" }, "Preview"),
      field("Sample values (JSON)", sample, "Values for {{ name }} and $$name$$; conditions and dates are shown as the server would render the simple cases."),
      h("div", { class: "actions" }, button("Preview", render)),
      out,
    ),
    h("section", { "aria-labelledby": "del-h" },
      h("h2", { id: "del-h" }, "Delete"),
      button("Delete this template", async () => {
        if (!window.confirm(`Delete the template ${t.Name}?`)) return;
        await call("EmailGateway.DeleteTemplate", { TemplateID: id });
        toast("Template deleted");
        location.hash = "#/templates";
      }, { class: "danger" }),
    ),
  );
  render();
}
