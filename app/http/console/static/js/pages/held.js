// Held messages: deliveries parked after unexpected failures, and releasing them.

import { call } from "../api.js";
import { clear, h } from "../dom.js";
import { button, domainPicker, heading, notice, table, toast } from "../ui.js";

export async function page(view) {
  view.append(
    heading("Held messages"),
    h("p", {}, "A delivery Postern itself failed to prepare three times is held. Mend the cause, then release it."),
  );
  const body = h("div");
  const picker = await domainPicker((id) => show(body, id));
  view.append(picker.el, body);
  if (picker.id) await show(body, picker.id);
}

async function show(body, domainId) {
  const answer = await call("EmailGateway.GetEvents", { DomainID: domainId, Event: "held", StartFrom: 0, RetrieveCount: 100 });
  const release = async (messageId) => {
    const params = { DomainID: domainId };
    if (messageId) params.MessageID = messageId;
    const done = await call("EmailGateway.ReleaseHeldMessages", params);
    toast(`${done.ReleasedCount} deliveries released`);
    await show(body, domainId);
  };
  clear(body).append(
    h("div", { class: "actions" }, button("Release every held delivery of this domain", () => release(null))),
    notice("The list shows held events; a delivery released and delivered since stays listed with its later events on the message's page."),
    table(
      "Held events, newest first",
      [
        { label: "Time (UTC)", value: (e) => (e.timestamp || "").replace("T", " ").replace("Z", "") },
        { label: "Recipient", value: (e) => e.recipient || "" },
        { label: "Reason", value: (e) => (e.details && e.details.error) || (e.delivery_status && e.delivery_status.text) || "" },
        { label: "Message", value: (e) => h("a", { href: `#/messages/${encodeURIComponent(e.message_id)}` }, "Timeline") },
        {
          label: "Actions",
          value: (e) => button("Release", () => release(e.message_id), { class: "small", "aria-label": `Release message ${e.message_id}` }),
        },
      ],
      answer.Events || [],
      "No held messages in this domain.",
    ),
  );
}
