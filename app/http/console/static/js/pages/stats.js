// Statistics of a domain: the daily series as a chart, the previous period, the tags.

import uPlot from "../../vendor/uplot/uPlot.esm.js";
import { call } from "../api.js";
import { clear, h } from "../dom.js";
import { domainPicker, field, heading, select, table } from "../ui.js";

const SERIES = [
  ["Sent", "#1f4e79"],
  ["Delivered", "#2e7d32"],
  ["Bounced", "#c62828"],
  ["Opened", "#ef6c00"],
  ["Clicked", "#6a1b9a"],
];
const FIGURES = ["Sent", "Delivered", "Bounced", "Blocked", "Opened", "UniqueOpened", "Clicked", "UniqueClicked", "Unsubscribed", "Complained"];
let days = "30";
let chart = null;

function isoDay(date) {
  return date.toISOString().slice(0, 10);
}

export async function page(view) {
  view.append(heading("Statistics"));
  const body = h("div");
  const period = select("Period", [["7", "Last 7 days"], ["30", "Last 30 days"], ["90", "Last 90 days"], ["365", "Last 365 days"]], days);
  const picker = await domainPicker((id) => show(body, id));
  period.addEventListener("change", () => {
    days = period.value;
    show(body, picker.el.querySelector("select") ? picker.el.querySelector("select").value : picker.id);
  });
  view.append(h("div", { class: "row" }, picker.el, field("Period", period)), body);
  if (picker.id) await show(body, picker.id);
}

function change(now, before) {
  if (!before) return now ? "new" : "–";
  const pct = Math.round(((now - before) / before) * 100);
  return `${pct > 0 ? "+" : ""}${pct} %`;
}

async function show(body, domainId) {
  const end = new Date();
  const start = new Date(end.getTime() - (Number(days) - 1) * 86400000);
  const params = { DomainID: domainId, StartDate: isoDay(start), EndDate: isoDay(end) };
  const [series, stats] = await Promise.all([
    call("EmailGateway.DailySeries", params),
    call("EmailGateway.DomainStats", params),
  ]);
  const rows = series.Series || [];
  const plot = h("div", { class: "chart", role: "img", "aria-label": `Daily figures from ${params.StartDate} to ${params.EndDate}` });
  const tags = Array.isArray(stats.TagStats)
    ? stats.TagStats
    : Object.entries(stats.TagStats || {}).map(([Tag, figures]) => ({ Tag, ...figures }));
  const current = stats.Stats || {};
  const previous = stats.ComparisonStats || {};
  if (chart) chart.destroy();
  chart = null;
  clear(body).append(
    h("section", { "aria-labelledby": "chart-h" },
      h("h2", { id: "chart-h" }, `Daily, ${stats.StartDate || params.StartDate} to ${stats.EndDate || params.EndDate}`),
      plot,
      h("details", {}, h("summary", {}, "The chart's figures as a table"),
        table("Daily figures", [
          { label: "Date", value: (r) => r.Date },
          ...SERIES.map(([name]) => ({ label: name, value: (r) => String(r[name] || 0) })),
        ], rows)),
    ),
    h("section", { "aria-labelledby": "cmp-h" },
      h("h2", { id: "cmp-h" }, "Compared with the period before"),
      table("This period and the one before", [
        { label: "Figure", value: (f) => f },
        { label: "This period", value: (f) => String(current[f] ?? 0) },
        { label: "Period before", value: (f) => String(previous[f] ?? 0) },
        { label: "Change", value: (f) => change(current[f] ?? 0, previous[f] ?? 0) },
      ], FIGURES),
    ),
    h("section", { "aria-labelledby": "tag-h" },
      h("h2", { id: "tag-h" }, "By tag"),
      table("Figures per tag", [
        { label: "Tag", value: (t) => t.Tag },
        ...["Sent", "Delivered", "Bounced", "Opened", "Clicked", "Complained"].map((f) => ({ label: f, value: (t) => String(t[f] ?? 0) })),
      ], tags, "No tagged mail in this period."),
    ),
  );
  const data = [
    rows.map((r) => Date.parse(`${r.Date}T00:00:00Z`) / 1000),
    ...SERIES.map(([name]) => rows.map((r) => r[name] || 0)),
  ];
  plot.dataset.series = JSON.stringify(Object.fromEntries(SERIES.map(([name], i) => [name, data[i + 1].reduce((a, b) => a + b, 0)])));
  const width = () => Math.max(240, plot.clientWidth || body.clientWidth || 600);
  chart = new uPlot({
    width: width(),
    height: 280,
    tzDate: (ts) => uPlot.tzDate(new Date(ts * 1000), "Etc/UTC"),
    scales: { y: { range: (_u, _min, max) => [0, Math.max(1, max)] } },
    series: [{ label: "Date" }, ...SERIES.map(([label, stroke]) => ({ label, stroke, width: 2, points: { show: rows.length < 40 } }))],
    axes: [{}, { label: "Recipients" }],
  }, data, plot);
  // The chart follows its box's width (a window resized, a scroll bar appearing).
  if (show.observer) show.observer.disconnect();
  show.observer = new ResizeObserver(() => {
    requestAnimationFrame(() => {
      const w = width();
      if (chart && plot.isConnected && Math.abs(chart.width - w) > 1) chart.setSize({ width: w, height: 280 });
    });
  });
  show.observer.observe(plot);
}
