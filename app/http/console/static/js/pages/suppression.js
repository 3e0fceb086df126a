// The suppression list: browse and search, add an address, remove one.

import { call } from "../api.js";
import { clear, h } from "../dom.js";
import { button, domainName, domains, field, form, heading, input, pager, select, table, toast } from "../ui.js";

const PAGE = 50;
const filters = { SearchPattern: "", Source: "", DomainID: "" };

export async function page(view) {
  view.append(heading("Suppression list"));
  const list = await domains();
  const domainOptions = list.map((d) => [d.DomainID, d.DomainName]);
  const results = h("div", { "aria-live": "polite" });
  const run = async (start) => {
    const params = { StartFrom: start, RetrieveCount: PAGE };
    for (const [k, v] of Object.entries(filters)) if (v) params[k] = v;
    const answer = await call("Suppression.Browse", params);
    clear(results).append(
      table(
        "Suppressed addresses, newest first",
        [
          { label: "Address", value: (s) => s.EmailAddress },
          { label: "Source", value: (s) => s.SuppressionSource },
          { label: "Applies to", value: (s) => (String(s.DomainID) === "0" ? "All domains" : domainName(s.DomainID)) },
          { label: "Reason", value: (s) => s.Reason || "" },
          { label: "Added", value: (s) => s.DateAdded },
          {
            label: "Actions",
            value: (s) =>
              button("Remove", async () => {
                if (!window.confirm(`Remove ${s.EmailAddress} from the suppression list?`)) return;
                const params2 = { EmailAddress: s.EmailAddress };
                if (String(s.DomainID) !== "0") params2.DomainID = s.DomainID;
                await call("Suppression.Delete", params2);
                toast(`${s.EmailAddress} removed`);
                await run(start);
              }, { class: "small danger", "aria-label": `Remove ${s.EmailAddress}` }),
          },
        ],
        answer.SuppressedEmails || [],
        "No suppressed addresses match.",
      ),
      pager(answer.TotalRecords || 0, start, PAGE, run),
    );
  };
  view.append(
    h("section", { "aria-labelledby": "add-h" },
      h("h2", { id: "add-h" }, "Add an address"),
      form(
        "Add to the suppression list",
        [
          h("div", { class: "row" },
            field("Email address", input("EmailAddress", { type: "email", required: true })),
            field("Applies to", select("DomainID", [["", "All domains"], ...domainOptions], "")),
          ),
          field("Reason", input("Reason", { maxlength: 2000 })),
        ],
        async (values, el, status) => {
          const params = { EmailAddress: values.EmailAddress };
          if (values.DomainID) params.DomainID = values.DomainID;
          if (values.Reason) params.Reason = values.Reason;
          const answer = await call("Suppression.Add", params);
          status.textContent = answer.Added ? `${values.EmailAddress} added.` : `${values.EmailAddress} was there already.`;
          el.reset();
          await run(0);
        },
        "Add",
      ),
    ),
    h("section", { "aria-labelledby": "browse-h" },
      h("h2", { id: "browse-h" }, "Browse"),
      form(
        "Search the suppression list",
        [
          h("div", { class: "row" },
            field("Search", input("SearchPattern", { value: filters.SearchPattern }), "Part of an address, or a pattern with * (e.g. *@example.com)."),
            field("Source", select("Source", [["", "Any"], ["bounce", "Bounce"], ["complaint", "Complaint"], ["unsubscribe", "Unsubscribe"], ["manual", "Manual"]], filters.Source)),
            field("Domain", select("DomainID", [["", "Any"], ...domainOptions], filters.DomainID)),
          ),
        ],
        async (values) => {
          Object.assign(filters, values);
          await run(0);
        },
        "Search",
      ),
      results,
    ),
  );
  await run(0);
}
