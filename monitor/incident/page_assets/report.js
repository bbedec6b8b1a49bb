// The incident report's drawing: SVG charts on one time axis and sortable, filterable tables.
// Everything from the logs is set with textContent (never markup). When done, what was drawn is
// written into #drawn as JSON, so a headless browser can check the page against the command's counts.
"use strict";
(function () {
  const D = JSON.parse(document.getElementById("report-data").textContent);
  const SVG = "http://www.w3.org/2000/svg";
  const COLORS = {
    persisted: "#2e7d32", unsuccessful: "#9e9e9e", running: "#1565c0", lost: "#c62828",
    mismatch: "#ef6c00", unrepairable: "#6a1b9a",
    success: "#2e7d32", warning: "#f9a825", error: "#c62828", regression: "#6a1b9a",
  };
  const WIDTH = 1200, LEFT = 60, RIGHT = 20, PLOT = WIDTH - LEFT - RIGHT;
  const drawn = { kind: D.kind };

  function el(tag, attrs, text) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    return node;
  }
  function svgEl(tag, attrs, parent) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    if (parent) parent.appendChild(node);
    return node;
  }
  function tip(node, text) { svgEl("title", {}, node).textContent = text; }
  function clock(seconds) {
    if (seconds === null || seconds === undefined) return "";
    const shifted = new Date((seconds + D.offset_minutes * 60) * 1000).toISOString();
    return shifted.slice(0, 10) + " " + shifted.slice(11, 19);
  }
  function section(title) {
    const h = el("h2", {}, title);
    document.body.appendChild(h);
    return h;
  }
  function note(text) { document.body.appendChild(el("p", { class: "note" }, text)); }
  function legend(names, titles) {
    const box = el("div", { class: "legend" });
    for (const name of names) {
      const item = el("span", {}, titles[name]);
      item.style.setProperty("--c", COLORS[name]);
      box.appendChild(item);
    }
    document.body.appendChild(box);
  }

  // --- the shared time axis ----------------------------------------------------------------
  const S = D.series;
  let t0 = D.range[0], t1 = D.range[1];
  if (S.first_minute !== null) {
    t0 = Math.min(t0 ?? Infinity, S.first_minute * 60);
    t1 = Math.max(t1 ?? -Infinity, (S.first_minute + S.counts[S.classes[0]].length) * 60);
  }
  if (t0 === null || t0 === undefined || !isFinite(t0)) { t0 = 0; t1 = 60; }
  if (t1 <= t0) t1 = t0 + 60;
  const x = (t) => LEFT + ((t - t0) / (t1 - t0)) * PLOT;

  function axis(svg, height) {
    const g = svgEl("g", { class: "axis" }, svg);
    svgEl("line", { x1: LEFT, x2: WIDTH - RIGHT, y1: height, y2: height }, g);
    const steps = [60, 300, 900, 1800, 3600, 7200, 21600, 43200, 86400, 604800];
    const step = steps.find((s) => (t1 - t0) / s <= 10) || 2592000;
    const offset = D.offset_minutes * 60;
    for (let t = Math.ceil((t0 + offset) / step) * step - offset; t <= t1; t += step) {
      svgEl("line", { x1: x(t), x2: x(t), y1: 0, y2: height + 4 }, g);
      const anchor = x(t) > WIDTH - RIGHT - 40 ? "end" : "middle"; // the last label stays inside the chart
      const label = svgEl("text", { x: x(t), y: height + 16, "text-anchor": anchor }, g);
      label.textContent = step >= 86400 ? clock(t).slice(0, 10) : clock(t).slice(5, 16);
    }
  }

  // --- the timeline -------------------------------------------------------------------------
  function lanes(bars) {
    // Each bar in the first lane free at its start: concurrent analyses stack, sequential share.
    const order = bars.map((b, i) => i).sort((a, b) => bars[a][2] - bars[b][2]);
    const ends = [], lane = new Array(bars.length);
    for (const i of order) {
      const start = bars[i][2], end = bars[i][3] ?? D.timeline.log_end ?? start;
      let k = ends.findIndex((e) => e < start);
      if (k < 0) { k = ends.length; ends.push(end); } else ends[k] = end;
      lane[i] = k;
    }
    return { lane, count: Math.max(ends.length, 1) };
  }

  function drawBars(T) {
    const { lane, count } = lanes(T.bars);
    const row = Math.max(2, Math.min(14, Math.floor(400 / count)));
    const height = row * count + 4;
    const svg = svgEl("svg", { class: "chart", id: "timeline", viewBox: `0 0 ${WIDTH} ${height + 24}` });
    axis(svg, height);
    const counts = {};
    T.bars.forEach((b, i) => {
      const verdict = T.verdicts[b[4]];
      const end = b[3] ?? T.log_end ?? b[2];
      const rect = svgEl("rect", {
        x: x(b[2]), y: 2 + lane[i] * row, width: Math.max(2, x(end) - x(b[2])), height: Math.max(1, row - 1),
        fill: COLORS[verdict], "data-verdict": verdict,
      }, svg);
      tip(rect, `${b[0]} ${b[1]}\n${T.titles[verdict]}\n${clock(b[2])} to ${b[3] === null ? "(still running)" : clock(b[3])}\nclaims: ${b[5] || "none"}\nMongoDB: ${b[6]}`);
      counts[verdict] = (counts[verdict] || 0) + 1;
    });
    drawn.timeline = { mode: "bars", analyses: T.bars.length, by_verdict: counts, rects: T.bars.length };
    return svg;
  }

  function drawBuckets(T) {
    const height = 220, size = T.bucket_minutes * 60;
    const buckets = T.counts[T.verdicts[0]].length;
    let top = 1;
    for (let i = 0; i < buckets; i++) top = Math.max(top, T.verdicts.reduce((s, v) => s + T.counts[v][i], 0));
    const svg = svgEl("svg", { class: "chart", id: "timeline", viewBox: `0 0 ${WIDTH} ${height + 24}` });
    axis(svg, height);
    const counts = {};
    let rects = 0;
    for (let i = 0; i < buckets; i++) {
      const start = (T.first_minute * 60) + i * size;
      let y = height;
      for (const v of T.verdicts) {
        const n = T.counts[v][i];
        if (!n) continue;
        counts[v] = (counts[v] || 0) + n;
        const h = (n / top) * (height - 4);
        y -= h;
        const rect = svgEl("rect", {
          x: x(start), y, width: Math.max(1, x(start + size) - x(start) - 0.5), height: Math.max(h, 0.5),
          fill: COLORS[v], "data-verdict": v,
        }, svg);
        tip(rect, `${clock(start)}: ${n} analysis(es) started, ${T.titles[v]}`);
        rects++;
      }
    }
    const total = Object.values(counts).reduce((a, b) => a + b, 0);
    drawn.timeline = { mode: "buckets", analyses: total, by_verdict: counts, rects };
    return svg;
  }

  function timeline() {
    const T = D.timeline;
    section("Timeline: every analysis, from its start line to its end line");
    legend(T.verdicts, T.titles);
    if (T.mode === "buckets") {
      note(`Too many analyses for one bar each: analyses started per ${T.bucket_minutes} minute(s), stacked by verdict (hover for counts).`);
    } else {
      note("One bar per analysis, coloured by verdict; hover for its id, symbol, claims and what MongoDB holds.");
    }
    if (T.lines_past_bound) note(`The report keeps at most ${T.bound} analyses: ${T.lines_past_bound} line(s) of analyses past them are not drawn.`);
    document.body.appendChild(T.mode === "buckets" ? drawBuckets(T) : drawBars(T));
  }

  // --- per-minute counts of the keyword classes, spikes marked ----------------------------------
  function series() {
    section("Log lines per minute, by keyword class (same time axis)");
    legend(S.classes, S.titles);
    const untimed = Object.values(S.untimed).reduce((a, b) => a + b, 0);
    if (untimed) note(`${untimed} line(s) without a readable time are counted but not drawn.`);
    if (S.spikes.length) note("Shaded: minutes where the alert rules (prometheus/alerts.yml) would fire.");
    const height = 200;
    const svg = svgEl("svg", { class: "chart", id: "series", viewBox: `0 0 ${WIDTH} ${height + 24}` });
    axis(svg, height);
    const sums = {};
    let top = 1;
    for (const c of S.classes) for (const n of S.counts[c]) if (n > top) top = n;
    // One labelled strip per alert above the lines, and a faint shade below: spikes of several
    // alerts at once stay told apart.
    const kinds = [...new Set(S.spikes.map((s) => s[0]))];
    const margin = 14 + kinds.length * 13;
    const y = (n) => height - 2 - (n / top) * (height - margin);
    const label = svgEl("text", { x: 4, y: margin - 2 }, svg);
    label.textContent = `${top}/min`;
    for (const [alert, title, first, last] of S.spikes) {
      const left = x(first * 60), width = Math.max(2, x((last + 1) * 60) - left), row = kinds.indexOf(alert);
      const span = `${title} (${alert}): ${clock(first * 60)} to ${clock((last + 1) * 60)}`;
      tip(svgEl("rect", { class: "spike", x: left, y: 0, width, height }, svg), span);
      tip(svgEl("rect", { class: "spike-strip", x: left, y: row * 13, width, height: 11 }, svg), span);
      const name = svgEl("text", { class: "spike-label", x: left + 3, y: row * 13 + 9 }, svg);
      name.textContent = title;
    }
    for (const c of S.classes) {
      const values = S.counts[c];
      sums[c] = values.reduce((a, b) => a + b, 0) + S.untimed[c];
      if (!values.some((n) => n)) continue;
      const points = values.map((n, i) => `${x((S.first_minute + i) * 60 + 30).toFixed(1)},${y(n).toFixed(1)}`);
      const line = svgEl("polyline", { points: points.join(" "), fill: "none", stroke: COLORS[c], "stroke-width": 1.5 }, svg);
      tip(line, `${S.titles[c]}: ${sums[c]} line(s)`);
      if (values.length > 400) continue; // a dot a minute only where they can be told apart (and one minute shows)
      values.forEach((n, i) => {
        if (!n) return;
        const t = (S.first_minute + i) * 60;
        tip(svgEl("circle", { cx: x(t + 30), cy: y(n), r: 3, fill: COLORS[c] }, svg), `${clock(t).slice(0, 16)}: ${n} ${S.titles[c]}`);
      });
    }
    document.body.appendChild(svg);
    drawn.series = { sums, spikes: S.spikes.length };
  }

  // --- tables: sortable, filterable, drawn a page at a time -------------------------------------
  // The view (filter, sort) lives in the URL's fragment, e.g. `#verdict=lost&sort=start&desc`: a link
  // to the page opens the same view. `keys`: the row field each column sorts by.
  function table(title, columns, keys, rows, cell, filters) {
    section(title);
    const controls = el("div", { class: "controls" });
    const search = el("input", { type: "search", placeholder: "filter: any text in the row", size: "40" });
    controls.appendChild(search);
    let select = null;
    if (filters) {
      select = el("select", {});
      select.appendChild(el("option", { value: "" }, `every ${filters.name}`));
      for (const v of filters.values) select.appendChild(el("option", { value: v }, v));
      controls.appendChild(select);
    }
    const shown = el("span", { class: "note" });
    controls.appendChild(shown);
    document.body.appendChild(controls);
    const tbl = el("table", {});
    const head = el("tr", {});
    columns.forEach((c) => head.appendChild(el("th", {}, c)));
    tbl.appendChild(el("thead", {})).appendChild(head);
    const body = el("tbody", {});
    tbl.appendChild(body);
    document.body.appendChild(el("div", { class: "table-wrap" })).appendChild(tbl);
    const more = el("button", { type: "button" }, "show more");
    document.body.appendChild(more);
    const text = rows.map((r) => JSON.stringify(r).toLowerCase());
    let order = rows.map((r, i) => i), sortColumn = -1, descending = false, matched = order, limit = 200;
    const view = new URLSearchParams(location.hash.slice(1));
    search.value = view.get("filter") || "";
    if (select && view.has(filters.name)) select.value = view.get(filters.name);
    function remember() {
      const state = new URLSearchParams();
      if (search.value) state.set("filter", search.value);
      if (select && select.value) state.set(filters.name, select.value);
      if (sortColumn >= 0) state.set("sort", columns[sortColumn]);
      if (descending) state.set("desc", "");
      try { history.replaceState(null, "", "#" + state.toString()); } catch (e) { /* a browser refusing it on file:// */ }
    }
    function sortBy(column, desc) {
      descending = desc;
      sortColumn = column;
      const key = (i) => rows[i][keys[column]];
      order = order.slice().sort((a, b) => {
        const p = key(a), q = key(b);
        const r = typeof p === "number" && typeof q === "number" ? p - q : String(p ?? "").localeCompare(String(q ?? ""));
        return descending ? -r : r;
      });
      [...head.children].forEach((th, i) => th.className = i === column ? (descending ? "sorted-desc" : "sorted-asc") : "");
    }
    if (columns.includes(view.get("sort"))) sortBy(columns.indexOf(view.get("sort")), view.has("desc"));
    function render() {
      const words = search.value.toLowerCase();
      const wanted = select ? select.value : "";
      matched = order.filter((i) => (!words || text[i].includes(words)) && (!wanted || rows[i][filters.column] === wanted));
      body.replaceChildren(...matched.slice(0, limit).map((i) => cell(rows[i])));
      shown.textContent = `${matched.length} of ${rows.length} row(s)` + (matched.length > limit ? `, first ${limit} shown` : "");
      more.hidden = matched.length <= limit;
    }
    head.addEventListener("click", (e) => {
      const column = [...head.children].indexOf(e.target);
      if (column < 0) return;
      sortBy(column, column === sortColumn ? !descending : false);
      render();
      remember();
    });
    search.addEventListener("input", () => { limit = 200; render(); remember(); });
    if (select) select.addEventListener("change", () => { limit = 200; render(); remember(); });
    more.addEventListener("click", () => { limit += 500; render(); });
    render();
    return { rows: rows.length, shown: () => body.children.length, order: () => matched.slice(0, limit) };
  }

  function td(text, cls) { return el("td", cls ? { class: cls } : {}, text); }
  function pre(lines, cls) { const c = el("td", cls ? { class: cls } : {}); c.appendChild(el("pre", {}, lines.join("\n"))); return c; }

  function shellQuote(text) { return /^[\w.\/:@%+=,-]+$/.test(text) ? text : "'" + text.replace(/'/g, "'\\''") + "'"; }

  function findings() {
    const verdicts = D.timeline.verdicts.filter((v) => !["persisted", "unsuccessful", "running"].includes(v));
    const columns = ["analysis id", "verdict", "symbol", "start", "outcome", "claims", "MongoDB holds", "evidence lines", "explain", "repair plan"];
    const keys = [0, 1, 2, 3, 4, 5, 6, 7, 0, 8]; // explain sorts by the id
    const result = table("Findings: one row per analysis whose status the logs claim but MongoDB does not hold", columns, keys, D.findings, (f) => {
      const row = el("tr", {});
      row.appendChild(td(f[0], "id"));
      const verdict = td(D.timeline.titles[f[1]] || f[1], "verdict");
      verdict.style.color = COLORS[f[1]] || "";
      row.appendChild(verdict);
      row.appendChild(td(f[2]));
      row.appendChild(td(clock(f[3])));
      row.appendChild(td(f[4]));
      row.appendChild(pre(f[5], "mid"));
      row.appendChild(td(f[6]));
      row.appendChild(pre(f[7], "wide"));
      const command = D.explain.replace("{id}", shellQuote(f[0]));
      const explain = el("td", { class: "mid" });
      const code = explain.appendChild(el("code", {}, command));
      const copy = el("button", { type: "button", class: "copy" }, "copy");
      copy.addEventListener("click", () => {
        // Where the clipboard is refused (some browsers, for a file), the command is selected instead.
        const copied = navigator.clipboard ? navigator.clipboard.writeText(command) : Promise.reject(new Error());
        copied.catch(() => {
          const range = document.createRange();
          range.selectNodeContents(code);
          getSelection().removeAllRanges();
          getSelection().addRange(range);
        });
      });
      explain.appendChild(copy);
      row.appendChild(explain);
      row.appendChild(pre([f[8]], "mid"));
      return row;
    }, { name: "verdict", column: 1, values: verdicts });
    drawn.findings = { rows: result.rows, shown: result.shown(), ids: result.order().slice(0, 50).map((i) => D.findings[i][0]) };
  }

  function rules() {
    const result = table("Rules: lines matched per rule", ["rule", "class", "severity", "pattern", "count"], [0, 1, 2, 3, 4], D.rules, (r) => {
      const row = el("tr", {});
      row.appendChild(td(r[0]));
      row.appendChild(td(r[1]));
      row.appendChild(td(r[2]));
      const pattern = el("td", {});
      pattern.appendChild(el("code", {}, r[3]));
      row.appendChild(pattern);
      row.appendChild(td(String(r[4]), "num"));
      return row;
    });
    drawn.rules = { rows: result.rows, total: D.rules.reduce((s, r) => s + r[4], 0) };
  }

  if (D.kind === "verify") timeline();
  series();
  if (D.kind === "verify") findings(); else rules();
  drawn.draw_ms = Math.round(performance.now()); // since the page's navigation began: parse, JSON and drawing
  const out = el("pre", { id: "drawn", hidden: "" }, JSON.stringify(drawn));
  document.body.appendChild(out);
})();
