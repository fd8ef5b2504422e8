"""The report's stylesheet and its one small script (table sorting), inlined into the page."""

STYLE = """
:root{--ink:#1f2933;--muted:#616e7c;--line:#e4e7eb;--accent:#4C72B0;--bg:#f7f9fb}
*{box-sizing:border-box}
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:var(--ink);
background:#fff}
header{background:var(--bg);border-bottom:1px solid var(--line);padding:1.2rem 2rem .6rem}
h1{margin:0 0 .2rem;font-size:1.5rem}
h2{font-size:1.15rem;border-bottom:2px solid var(--accent);padding-bottom:.2rem;margin-top:2rem}
.sub{color:var(--muted);margin:.2rem 0 .8rem}
.cards{display:flex;flex-wrap:wrap;gap:.8rem}
.card{background:#fff;border:1px solid var(--line);border-radius:8px;padding:.6rem .9rem;
min-width:13rem}
.card .label{font-size:.75rem;text-transform:uppercase;color:var(--muted);letter-spacing:.04em}
.card .value{font-size:1.1rem;font-weight:600;margin:.15rem 0}
.card .sub{margin:0;font-size:.85rem}
nav{margin-top:.8rem;display:flex;flex-wrap:wrap;gap:1rem;font-size:.9rem}
nav a{color:var(--accent);text-decoration:none}
main{padding:0 2rem 2rem}
table{border-collapse:collapse;font-size:12.5px}
td,th{border:1px solid var(--line);padding:3px 7px;text-align:left;vertical-align:top}
th{background:var(--bg)}
td.num{text-align:right;font-variant-numeric:tabular-nums}
#leaderboard{display:block;overflow:auto;max-height:36rem}
#leaderboard th{position:sticky;top:0;cursor:pointer;user-select:none;white-space:nowrap}
#leaderboard th[aria-sort=ascending]::after{content:" \\25B2"}
#leaderboard th[aria-sort=descending]::after{content:" \\25BC"}
#leaderboard td:nth-child(2){white-space:nowrap}
#leaderboard td:nth-last-child(2){min-width:22rem}
#leaderboard tr.failed td,#leaderboard tr.interrupted td{color:#a61b1b}
#leaderboard tr.ensemble td{background:#f3f7ee}
.facts th{width:12rem}
.facts td{word-break:break-word}
.grid{display:flex;flex-wrap:wrap;gap:1.2rem;align-items:flex-start}
figure.plot{margin:.6rem 0;max-width:100%}
figure.plot img{max-width:100%;height:auto;display:block}
figcaption{color:var(--muted);font-size:.85rem;margin-top:.2rem}
.note{color:var(--muted);font-size:.9rem}
footer{color:var(--muted);font-size:.8rem;padding:1rem 2rem;border-top:1px solid var(--line)}
"""

SCRIPT = """
(function () {
  function key(cell) {
    var text = cell.textContent.trim();
    var number = parseFloat(text);
    return text !== "" && !isNaN(number) && isFinite(text) ? number : text.toLowerCase();
  }
  function compare(a, b) {
    if (typeof a === typeof b) { return a < b ? -1 : a > b ? 1 : 0; }
    if (a === "") { return 1; }
    if (b === "") { return -1; }
    return typeof a === "number" ? -1 : 1;
  }
  document.querySelectorAll("table.sortable").forEach(function (table) {
    var heads = table.querySelectorAll("th");
    heads.forEach(function (th, index) {
      th.addEventListener("click", function () {
        var ascending = th.getAttribute("aria-sort") !== "ascending";
        heads.forEach(function (h) { h.setAttribute("aria-sort", "none"); });
        th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
        var body = table.tBodies[0];
        var rows = Array.prototype.slice.call(body.rows);
        rows.sort(function (r1, r2) {
          var a = key(r1.cells[index]), b = key(r2.cells[index]);
          if (a === "" && b !== "") { return 1; }
          if (b === "" && a !== "") { return -1; }
          return ascending ? compare(a, b) : compare(b, a);
        });
        rows.forEach(function (row) { body.appendChild(row); });
      });
    });
  });
})();
"""
