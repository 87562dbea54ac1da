//! The HTML pages: `reports/<spec>/index.html`, a spec's whole report on one self-contained page (the grid, the
//! summary and Δ tables, every figure as inline SVG, a sortable per-cell table, provenance, links to the files),
//! and `reports/index.html`, which links every spec's page and shows the paper's tables with their verdicts.
//! Inline CSS and one small inline script; no request to any other host, so a page opens offline and from a CI
//! artefact. Byte-stable: rendered from the same inputs, a page is the same bytes.

use super::delta::DeltaTable;
use super::paper::{Comparison, PaperTables, comparison_table};
use super::results::{Measure, Results};
use super::summary::{
    DIAGNOSTICS_NOTE, INTERVAL_NOTE, Pivot, TextTable, diagnostics_table, short_name,
};
use crate::cache::Manifest;
use crate::spec::Spec;
use std::collections::BTreeSet;
use std::fmt::Write as _;

pub const PAGE_FILE: &str = "index.html";

/// A figure for the page: its title and its SVG text.
pub struct PageFigure {
    pub title: String,
    pub svg: String,
}

/// Everything a spec's page shows.
pub struct SpecPage<'a> {
    pub spec: &'a Spec,
    pub title: &'a str,
    pub results: &'a Results,
    pub pivot: &'a Pivot<'a>,
    pub delta: Option<&'a DeltaTable>,
    pub figures: &'a [PageFigure],
    /// The "Ranked lists" section.
    pub ranked: &'a super::ranked::RankedSection,
    /// The manifest of every stage the rows used, in keys.json's order (by key).
    pub stages: &'a [Manifest],
    /// The files beside the page to link, by name.
    pub files: &'a [&'a str],
}

/// Escapes text for HTML element content and double-quoted attributes.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A text table as HTML.
fn table_html(table: &TextTable, caption: Option<&str>) -> String {
    let mut out = String::from("<div class=\"scroll\"><table>");
    if let Some(caption) = caption {
        let _ = write!(out, "<caption>{}</caption>", escape(caption));
    }
    // A table of labelled values has no header row.
    if table.header.iter().any(|h| !h.is_empty()) {
        out.push_str("<thead><tr>");
        for (h, &numeric) in table.header.iter().zip(&table.numeric) {
            let _ = write!(out, "<th{}>{}</th>", num_class(numeric), escape(h));
        }
        out.push_str("</tr></thead>");
    }
    out.push_str("<tbody>\n");
    for row in &table.rows {
        out.push_str("<tr>");
        for (cell, &numeric) in row.iter().zip(&table.numeric) {
            let mark = if cell == "✱" {
                " class=\"mark\""
            } else {
                num_class(numeric)
            };
            let _ = write!(out, "<td{mark}>{}</td>", escape(cell));
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</tbody></table></div>\n");
    out
}

/// The values in order of first appearance, joined with `, `.
fn distinct(values: impl IntoIterator<Item = String>) -> String {
    let mut seen: Vec<String> = Vec::new();
    for v in values {
        if !seen.contains(&v) {
            seen.push(v);
        }
    }
    seen.join(", ")
}

fn num_class(numeric: bool) -> &'static str {
    if numeric { " class=\"num\"" } else { "" }
}

fn head(title: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<main>\n",
        escape(title)
    )
}

const FOOT: &str = "</main>\n</body>\n</html>\n";

impl SpecPage<'_> {
    pub fn render(&self) -> String {
        let mut out = head(&format!("{} · mgat", self.title));
        let _ = writeln!(
            out,
            "<header><h1>{}</h1><p class=\"meta\">spec <code>{}</code> · {} rows · written by <code>mgat report</code></p></header>",
            escape(self.title),
            escape(&self.spec.name),
            self.results.rows.len()
        );
        out.push_str(
            "<nav><a href=\"#grid\">Grid</a> <a href=\"#summary\">Summary</a> <a href=\"#delta\">Δ vs baseline</a> \
             <a href=\"#figures\">Figures</a> <a href=\"#ranked\">Ranked lists</a> <a href=\"#cells\">Cells</a> <a href=\"#provenance\">Provenance</a> \
             <a href=\"#files\">Files</a> <a href=\"../index.html\">All reports</a></nav>\n",
        );
        out.push_str(&self.grid());
        out.push_str(&self.summary());
        out.push_str(&self.delta());
        out.push_str(&self.figures());
        out.push_str(&self.ranked.html());
        out.push_str(&self.cells());
        out.push_str(&self.provenance());
        out.push_str(&self.files());
        let _ = writeln!(out, "<script>{SORT_SCRIPT}</script>");
        out.push_str(FOOT);
        out
    }

    fn grid(&self) -> String {
        let axes = &self.results.axes;
        let mut rows = Vec::new();
        for (i, axis) in axes.iter().enumerate() {
            let values = distinct(self.results.rows.iter().map(|r| r.axes[i].clone()));
            rows.push(vec![axis.clone(), values]);
        }
        let seeds: BTreeSet<u64> = self.results.rows.iter().map(|r| r.seed).collect();
        let seeds: Vec<String> = seeds.iter().map(u64::to_string).collect();
        rows.push(vec!["seeds".into(), seeds.join(", ")]);
        let groups = self.results.groups().len();
        let table = TextTable {
            header: vec!["axis".into(), "values in the results".into()],
            rows,
            numeric: vec![false, false],
        };
        format!(
            "<section id=\"grid\"><h2>Grid</h2><p>{} cells in {groups} groups (cells that differ only in seed).</p>{}\
             <details><summary>The spec, as written</summary><pre>{}</pre></details></section>\n",
            self.results.rows.len(),
            table_html(&table, None),
            escape(self.spec.source())
        )
    }

    fn summary(&self) -> String {
        let mut out = format!(
            "<section id=\"summary\"><h2>Summary</h2><p>{}</p>\n",
            escape(INTERVAL_NOTE)
        );
        for (label, table) in self.pivot.tables() {
            out.push_str(&table_html(&table, Some(&format!("{label} (%)"))));
        }
        if let Some(table) = diagnostics_table(self.results) {
            let _ = write!(
                out,
                "<h3>Training diagnostics (last epoch)</h3><p>{}</p>{}",
                escape(DIAGNOSTICS_NOTE),
                table_html(&table, None)
            );
        }
        out.push_str("</section>\n");
        out
    }

    fn delta(&self) -> String {
        let Some(delta) = self.delta else {
            return "<section id=\"delta\"><h2>Δ vs baseline</h2><p>No baseline cells in this spec.</p></section>\n"
                .into();
        };
        let mut out = format!(
            "<section id=\"delta\"><h2>Δ vs baseline</h2><p>{}</p>{}",
            escape(&delta.explanation()),
            table_html(&delta.text_table(), None)
        );
        if let Some(left_out) = delta.left_out() {
            let _ = write!(out, "<p>{}</p>", escape(&left_out));
        }
        out.push_str("</section>\n");
        out
    }

    fn figures(&self) -> String {
        let mut out = String::from("<section id=\"figures\"><h2>Figures</h2>\n");
        for f in self.figures {
            let svg = f.svg.replacen(
                "<svg ",
                &format!("<svg role=\"img\" aria-label=\"{}\" ", escape(&f.title)),
                1,
            );
            let _ = writeln!(
                out,
                "<figure>{svg}<figcaption>{}</figcaption></figure>",
                escape(&f.title)
            );
        }
        out.push_str("</section>\n");
        out
    }

    /// One row per results.csv row, sortable by any column (click a header; `#sort=<column>[-desc]` in the
    /// address sorts on load).
    fn cells(&self) -> String {
        let results = self.results;
        let mut columns: Vec<(String, String, bool)> = vec![("cell".into(), "cell".into(), false)];
        for a in &results.axes {
            let name = short_name(a, &results.axes);
            columns.push((name.clone(), name, false));
        }
        columns.push(("seed".into(), "seed".into(), true));
        for measure in Measure::ALL {
            columns.push((measure.name().to_string(), measure.heading(), true));
        }
        for (name, label, numeric) in [
            ("train_seconds", "train s", true),
            ("images_per_s", "images/s", true),
            ("device", "device", false),
            ("train_key", "train key", false),
            ("eval_key", "eval key", false),
        ] {
            columns.push((name.into(), label.into(), numeric));
        }
        let mut out = String::from(
            "<section id=\"cells\"><h2>Cells</h2><p>One row per row of <code>results.csv</code>; click a column's \
             name to sort by it.</p><div class=\"scroll\"><table class=\"sortable\"><thead><tr>",
        );
        for (i, (name, label, numeric)) in columns.iter().enumerate() {
            let _ = write!(
                out,
                "<th{}><button type=\"button\" data-col=\"{i}\" data-name=\"{}\">{}</button></th>",
                num_class(*numeric),
                escape(name),
                escape(label)
            );
        }
        out.push_str("</tr></thead><tbody>\n");
        for r in &results.rows {
            out.push_str("<tr>");
            let text = |t: &str| format!("<td>{}</td>", escape(t));
            let number =
                |v: f64, shown: String| format!("<td class=\"num\" data-v=\"{v}\">{shown}</td>");
            out.push_str(&text(&r.cell));
            for a in &r.axes {
                out.push_str(&text(a));
            }
            out.push_str(&number(r.seed as f64, r.seed.to_string()));
            for measure in Measure::ALL {
                // Metrics to 0.1 point, as in the summary tables; diagnostics as diffs show them.
                let shown = |v: f64| match measure {
                    Measure::Metric(_) => format!("{:.1}", v * 100.0),
                    Measure::Diagnostic(_) => measure.show(v),
                };
                match r.measure(measure) {
                    Some(v) => out.push_str(&number(v, shown(v))),
                    None => out.push_str("<td class=\"num\" data-v=\"\">–</td>"),
                }
            }
            out.push_str(&number(r.train_seconds, format!("{:.1}", r.train_seconds)));
            out.push_str(&number(r.images_per_s, format!("{:.0}", r.images_per_s)));
            out.push_str(&text(&r.device.to_string()));
            for key in [&r.train_key, &r.eval_key] {
                let _ = write!(
                    out,
                    "<td><code title=\"{}\">{}</code></td>",
                    escape(key.as_str()),
                    escape(key.short())
                );
            }
            out.push_str("</tr>\n");
        }
        out.push_str("</tbody></table></div></section>\n");
        out
    }

    fn provenance(&self) -> String {
        let rows = &self.results.rows;
        let commits = distinct(rows.iter().map(|r| match r.git_dirty {
            true => format!("{} (with uncommitted changes)", r.git_commit),
            false => r.git_commit.clone(),
        }));
        let locks = distinct(
            rows.iter()
                .map(|r| format!("{}: {}", r.dataset, r.lock_digest)),
        );
        let stages = self.stages;
        let hosts = distinct(stages.iter().map(|m| m.host.clone()));
        let devices = distinct(stages.iter().map(|m| m.device.to_string()));
        let versions = distinct(stages.iter().map(|m| m.mgat_version.clone()));
        let first = stages
            .iter()
            .map(|m| m.started.as_str())
            .min()
            .unwrap_or("–");
        let last = stages
            .iter()
            .map(|m| m.finished.as_str())
            .max()
            .unwrap_or("–");
        let summary = TextTable {
            header: vec!["".into(), "".into()],
            rows: vec![
                vec!["evaluated at commit".into(), commits],
                vec!["dataset lock digests".into(), locks],
                vec!["hosts".into(), hosts],
                vec!["devices".into(), devices],
                vec!["mgat versions".into(), versions],
                vec!["stages ran".into(), format!("{first} to {last}")],
            ],
            numeric: vec![false, false],
        };
        let runs = TextTable {
            header: ["kind", "key", "started", "seconds", "host", "device"]
                .map(String::from)
                .to_vec(),
            rows: stages
                .iter()
                .map(|m| {
                    vec![
                        m.kind.name().to_string(),
                        m.key.short().to_string(),
                        m.started.clone(),
                        format!("{:.1}", m.duration_s),
                        m.host.clone(),
                        m.device.to_string(),
                    ]
                })
                .collect(),
            numeric: vec![false, false, false, true, false, false],
        };
        format!(
            "<section id=\"provenance\"><h2>Provenance</h2>{}<details><summary>When each of the {} stages ran</summary>{}</details></section>\n",
            table_html(&summary, None),
            stages.len(),
            table_html(&runs, None)
        )
    }

    fn files(&self) -> String {
        let links: Vec<String> = self
            .files
            .iter()
            .map(|f| format!("<li><a href=\"{0}\">{0}</a></li>", escape(f)))
            .collect();
        format!(
            "<section id=\"files\"><h2>Files</h2><ul>{}</ul></section>\n",
            links.join("")
        )
    }
}

/// One spec's entry on the index page.
pub struct IndexEntry {
    pub name: String,
    pub title: String,
    pub rows: usize,
}

/// `reports/index.html`: every spec's page, and the paper's tables with their verdicts.
pub fn index_page(
    specs: &[IndexEntry],
    paper: Option<(&PaperTables, &[Vec<Comparison>])>,
) -> String {
    let mut out = head("mgat reports");
    out.push_str(
        "<header><h1>mgat reports</h1><p class=\"meta\">Masked Graph Attention Network for Person \
         Re-identification (Bao, Ma, Chang, Chen, CVPR Workshops 2019), reproduced with mgat</p></header>\n\
         <section id=\"specs\"><h2>Experiments</h2><ul>",
    );
    for s in specs {
        let _ = write!(
            out,
            "<li><a href=\"{3}\">{1}</a> <span class=\"meta\">(<code>{0}</code>, {2} rows)</span></li>",
            escape(&s.name),
            escape(&s.title),
            s.rows,
            relative_href(&s.name, PAGE_FILE)
        );
    }
    out.push_str("</ul></section>\n");
    if let Some((paper, compared)) = paper {
        let _ = writeln!(
            out,
            "<section id=\"paper\"><h2>{}: reported vs reproduced</h2><p>Values in percent. Reproduced: mean ± \
             half-width of its 95% confidence interval (Student t) over seeds (n). Δ = reproduced − reported. \
             Rendered by <code>mgat report --paper</code> from <code>paper.yaml</code>, as in \
             <a href=\"paper.md\">paper.md</a>.</p>",
            escape(&paper.paper)
        );
        for (table, rows) in paper.tables.iter().zip(compared) {
            let _ = write!(
                out,
                "<h3>{}</h3><p class=\"meta\">Paper: {} · results: {} · tolerance ±{} points unless a row says otherwise</p>",
                escape(&table.title),
                escape(
                    table
                        .paper_table
                        .as_deref()
                        .unwrap_or("table number not given")
                ),
                escape(&table.results.join(", ")),
                table.tolerance
            );
            out.push_str(&table_html(&comparison_table(rows), None));
        }
        out.push_str("</section>\n");
    }
    out.push_str(FOOT);
    out
}

/// Okabe–Ito blue for links and headings, vermillion for significance marks: the figures' palette.
const STYLE: &str = "
:root{--ink:#1a1a1a;--muted:#555;--rule:#d0d0d0;--zebra:#f4f6f8;--blue:#0072b2;--vermillion:#d55e00}
*{box-sizing:border-box}
body{margin:0;color:var(--ink);background:#fff;font:15px/1.5 system-ui,-apple-system,'Segoe UI',Roboto,'DejaVu Sans',sans-serif}
main{max-width:76rem;margin:0 auto;padding:1.5rem 1.25rem 4rem}
h1{font-size:1.6rem;margin:.2rem 0}
h2{font-size:1.25rem;margin:2.2rem 0 .6rem;padding-bottom:.2rem;border-bottom:2px solid var(--blue)}
h3{font-size:1.05rem;margin:1.6rem 0 .3rem}
a{color:var(--blue)}
.meta{color:var(--muted);margin:.2rem 0}
nav{position:sticky;top:0;background:#fff;padding:.5rem 0;border-bottom:1px solid var(--rule);z-index:2}
nav a{margin-right:1rem;white-space:nowrap}
.scroll{overflow-x:auto;margin:.6rem 0 1rem}
table{border-collapse:collapse;font-variant-numeric:tabular-nums;font-size:.9rem}
caption{text-align:left;font-weight:600;padding:.3rem 0}
th,td{padding:.25rem .6rem;border-bottom:1px solid var(--rule);text-align:left;vertical-align:top}
th{background:#fafafa;white-space:nowrap}
tbody tr:nth-child(even){background:var(--zebra)}
.num{text-align:right;white-space:nowrap}
td.mark{color:var(--vermillion);font-weight:700}
th button{font:inherit;font-weight:600;background:none;border:0;padding:0;color:var(--blue);cursor:pointer}
th[aria-sort=ascending] button::after{content:' ▲'}
th[aria-sort=descending] button::after{content:' ▼'}
figure{margin:1rem 0 2rem}
figure svg{max-width:100%;height:auto;border:1px solid var(--rule)}
figcaption{color:var(--muted);font-size:.9rem}
pre{background:var(--zebra);padding:.8rem;overflow-x:auto;font-size:.85rem}
details{margin:.6rem 0}
summary{cursor:pointer;color:var(--blue)}
.ranked{display:flex;align-items:center;gap:3px;margin:.3rem 0;overflow-x:auto}
.ranked .pick{min-width:9rem;font-size:.85rem;color:var(--muted)}
.ranked .arrow{color:var(--muted);margin:0 .3rem}
.ranked img{box-sizing:content-box;width:32px;height:64px;border:3px solid}
.ranked img.query{border-color:var(--blue)}
.ranked img.match{border-color:#1a7f37}
.ranked img.miss{border-color:#cf222e}
.ranked img.ignored{border-color:#8c959f;border-style:dashed;opacity:.55}
@media print{
 body{font-size:10pt}
 main{max-width:none;padding:0}
 nav{display:none}
 .scroll{overflow:visible}
 th button{color:var(--ink)}
 figure,table{break-inside:avoid}
 details>*{display:block}
 a{color:var(--ink)}
}
";

/// Sorts a `table.sortable` by a column when its header's button is clicked (numbers by `data-v`, text
/// otherwise), and on load by `#sort=<name>[-desc]` in the address.
const SORT_SCRIPT: &str = "
(function(){
function value(td){var v=td.getAttribute('data-v');if(v===null)return td.textContent;var n=parseFloat(v);return isNaN(n)?-Infinity:n;}
function sort(table,col,desc){
 var body=table.tBodies[0],rows=Array.prototype.slice.call(body.rows);
 rows.sort(function(a,b){var x=value(a.cells[col]),y=value(b.cells[col]);var c=x<y?-1:x>y?1:0;return desc?-c:c;});
 rows.forEach(function(r){body.appendChild(r);});
 var heads=table.tHead.rows[0].cells;
 for(var i=0;i<heads.length;i++){heads[i].removeAttribute('aria-sort');}
 heads[col].setAttribute('aria-sort',desc?'descending':'ascending');
}
document.querySelectorAll('table.sortable').forEach(function(table){
 table.querySelectorAll('thead button').forEach(function(button){
  button.addEventListener('click',function(){
   var desc=button.parentNode.getAttribute('aria-sort')==='ascending';
   sort(table,+button.getAttribute('data-col'),desc);
   try{history.replaceState(null,'','#sort='+button.getAttribute('data-name')+(desc?'-desc':''));}catch(e){}
  });
 });
});
var m=/^#sort=(.+?)(-desc)?$/.exec(decodeURIComponent(location.hash));
if(m){document.querySelectorAll('table.sortable thead button').forEach(function(b){
 if(b.getAttribute('data-name')===m[1]){sort(b.closest('table'),+b.getAttribute('data-col'),!!m[2]);}
});}
})();
";

/// A link to `file` in the report folder `folder`, relative (`./…`) and percent-encoded, so that a folder named
/// like a URL (`javascript:…`) is a path, never a scheme.
fn relative_href(folder: &str, file: &str) -> String {
    let mut out = String::from("./");
    for b in folder.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out.push('/');
    out.push_str(file);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_folder_named_like_a_url_is_linked_as_a_relative_path() {
        assert_eq!(
            relative_href("quickstart", "index.html"),
            "./quickstart/index.html"
        );
        assert_eq!(
            relative_href("javascript:alert(1)", "index.html"),
            "./javascript%3Aalert%281%29/index.html"
        );
    }

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(
            escape("a<b & \"c\" 'd'>"),
            "a&lt;b &amp; &quot;c&quot; &#39;d&#39;&gt;"
        );
    }

    #[test]
    fn a_text_table_becomes_rows_with_numbers_right_aligned_and_marks_coloured() {
        let table = TextTable {
            header: vec!["cell".into(), "Δ".into(), "".into()],
            rows: vec![vec!["head=<mgat>".into(), "-1.0".into(), "✱".into()]],
            numeric: vec![false, true, false],
        };
        let html = table_html(&table, Some("rank-1 (%)"));
        assert!(html.contains("<caption>rank-1 (%)</caption>"), "{html}");
        assert!(
            html.contains(
                "<td>head=&lt;mgat&gt;</td><td class=\"num\">-1.0</td><td class=\"mark\">✱</td>"
            ),
            "{html}"
        );
        assert!(html.contains("<th class=\"num\">Δ</th>"), "{html}");
    }
}
