//! Ranked lists as people look at them: for one cell, the queries its eval stage picked (the worst, the median and
//! the best by average precision), each with its first gallery items as the protocol ranks them, read from the eval
//! entry through `mgat_eval::ranked` and labelled from the index entry. Rendered as the "Ranked lists" section of a
//! spec's page (thumbnails embedded, up to [`PAGE_THUMBNAIL_BYTES`] a page) and as a PNG by `mgat rank`.

use super::ReportError;
use super::figures::register_font;
use super::page::escape;
use super::results::Results;
use crate::cache::Cache;
use crate::plan::{Plan, PlannedCell, StageKind};
use base64::Engine as _;
use image::Rgb;
use mgat_data::index::Item;
use mgat_eval::ranked::{Mark, Pick, Side, read_ranked, read_thumbnail};
use plotters::prelude::*;
use std::fmt::Write as _;

/// The most thumbnail bytes one page embeds; groups beyond it are named but not shown.
pub const PAGE_THUMBNAIL_BYTES: usize = 1 << 20;

/// An image a list shows: its thumbnail and what the index says about it.
pub struct Shown {
    pub jpeg: Vec<u8>,
    pub pid: i64,
    pub camid: u32,
    pub path: String,
}

/// One picked query with its list.
pub struct ShownList {
    pub pick: Pick,
    pub ap: f64,
    pub query: Shown,
    pub items: Vec<(Shown, Mark)>,
}

/// The picked lists of one cell.
pub struct CellLists {
    pub cell: String,
    pub lists: Vec<ShownList>,
}

impl CellLists {
    /// The picked lists of `cell` from its eval and index entries; None while its eval stage is not cached.
    pub fn read(
        plan: &Plan,
        cell: &PlannedCell,
        cache: &Cache,
    ) -> Result<Option<Self>, ReportError> {
        let Some(eval) = plan.cell_stage(cell, StageKind::Eval) else {
            return Ok(None);
        };
        let index = plan.input(eval, StageKind::Index);
        let (Some(eval_key), Some(index_key)) = (&eval.key, index.and_then(|i| i.key.as_ref()))
        else {
            return Ok(None);
        };
        if cache.trusted(StageKind::Eval, eval_key)?.is_none()
            || cache.trusted(StageKind::Index, index_key)?.is_none()
        {
            return Ok(None);
        }
        let cache_error = |e: mgat_stage::OutputError| ReportError::Cache {
            path: e.path,
            message: e.message,
        };
        let index_dir = cache.entry_dir(StageKind::Index, index_key);
        let index = mgat_data::stage::read_index(&index_dir).map_err(|e| ReportError::Cache {
            path: index_dir,
            message: e.to_string(),
        })?;
        let eval_dir = cache.entry_dir(StageKind::Eval, eval_key);
        let ranked =
            read_ranked(&eval_dir, index.query.len(), index.gallery.len()).map_err(cache_error)?;
        let shown = |side: Side, i: u32| -> Result<Shown, ReportError> {
            let items = match side {
                Side::Query => &index.query,
                Side::Gallery => &index.gallery,
            };
            // read_ranked checked every index against the sets' sizes.
            let Item { path, pid, camid } = &items[i as usize];
            Ok(Shown {
                jpeg: read_thumbnail(&eval_dir, side, i).map_err(cache_error)?,
                pid: *pid,
                camid: *camid,
                path: path.clone(),
            })
        };
        let lists = ranked
            .picked()
            .map(|(pick, q)| {
                Ok(ShownList {
                    pick,
                    ap: q.ap,
                    query: shown(Side::Query, q.query)?,
                    items: q
                        .items
                        .iter()
                        .map(|item| Ok((shown(Side::Gallery, item.0)?, item.1)))
                        .collect::<Result<_, ReportError>>()?,
                })
            })
            .collect::<Result<_, ReportError>>()?;
        Ok(Some(Self {
            cell: cell.cell.name.clone(),
            lists,
        }))
    }

    fn thumbnail_bytes(&self) -> usize {
        self.lists
            .iter()
            .flat_map(|l| std::iter::once(&l.query).chain(l.items.iter().map(|(s, _)| s)))
            .map(|s| s.jpeg.len())
            .sum()
    }
}

/// The page's section: the lists of the first seed of each group, in results order, while they fit the page's
/// bound.
pub struct RankedSection {
    pub cells: Vec<CellLists>,
    /// Groups left out by the bound.
    pub left_out: Vec<String>,
}

impl RankedSection {
    pub fn collect(
        plan: &Plan,
        spec_index: usize,
        results: &Results,
        cache: &Cache,
    ) -> Result<Self, ReportError> {
        let mut section = Self {
            cells: Vec::new(),
            left_out: Vec::new(),
        };
        let mut bytes = 0;
        for (group, rows) in results.groups() {
            let name = &results.rows[rows[0]].cell;
            let cell = plan
                .cells
                .iter()
                .find(|pc| pc.spec == spec_index && &pc.cell.name == name);
            let Some(lists) = cell
                .map(|c| CellLists::read(plan, c, cache))
                .transpose()?
                .flatten()
            else {
                continue;
            };
            bytes += lists.thumbnail_bytes();
            if bytes > PAGE_THUMBNAIL_BYTES {
                section.left_out.push(group.to_string());
            } else {
                section.cells.push(lists);
            }
        }
        Ok(section)
    }

    pub fn html(&self) -> String {
        let mut out = String::from(
            "<section id=\"ranked\"><h2>Ranked lists</h2><p>For one seed of each group, the queries with the worst, \
             the median and the best average precision, each followed by its first gallery items in the order the \
             evaluation ranked them, until ten are counted. Green frame: a true match; red: a false one; grey and \
             dashed: ignored by the protocol (the query's identity seen by the query's own camera). Hover an image \
             for its identity, camera and file.</p>\n",
        );
        for cell in &self.cells {
            let _ = writeln!(out, "<h3>{}</h3>", escape(&cell.cell));
            for list in &cell.lists {
                let _ = write!(
                    out,
                    "<div class=\"ranked\" data-pick=\"{}\"><span class=\"pick\">{} · AP {:.1}%</span>{}<span \
                     class=\"arrow\">→</span>",
                    list.pick.label(),
                    list.pick.label(),
                    list.ap * 100.0,
                    thumbnail_html(&list.query, "query", "query")
                );
                for (item, mark) in &list.items {
                    let (class, word) = match mark {
                        Mark::Match => ("match", "true match"),
                        Mark::Miss => ("miss", "false match"),
                        Mark::Ignored => ("ignored", "ignored"),
                    };
                    out.push_str(&thumbnail_html(item, class, word));
                }
                out.push_str("</div>\n");
            }
        }
        if !self.left_out.is_empty() {
            let _ = writeln!(
                out,
                "<p>Not shown, to keep the page under {} KiB of images: {}. <code>mgat rank</code> draws any cell's \
                 lists.</p>",
                PAGE_THUMBNAIL_BYTES >> 10,
                escape(&self.left_out.join(", "))
            );
        }
        out.push_str("</section>\n");
        out
    }
}

fn thumbnail_html(shown: &Shown, class: &str, word: &str) -> String {
    let label = format!(
        "{word}: identity {}, camera {}, {}",
        shown.pid, shown.camid, shown.path
    );
    format!(
        "<img class=\"{class}\" src=\"data:image/jpeg;base64,{}\" alt=\"{}\" title=\"{}\" width=\"32\" height=\"64\">",
        base64::engine::general_purpose::STANDARD.encode(&shown.jpeg),
        escape(&label),
        escape(&label)
    )
}

/// Frame colours: blue for the query, then the marks.
const QUERY: Rgb<u8> = Rgb([9, 105, 218]);
const MATCH: Rgb<u8> = Rgb([26, 127, 55]);
const MISS: Rgb<u8> = Rgb([207, 34, 46]);
const IGNORED: Rgb<u8> = Rgb([140, 149, 159]);

/// Pixels of a thumbnail drawn in the PNG, its frame, and the space around it.
const SCALE: u32 = 2;
const FRAME: u32 = 3;
const GAP: u32 = 4;
const LABEL_HEIGHT: u32 = 22;
/// The cell's name and the legend.
const HEADER_HEIGHT: u32 = 2 * LABEL_HEIGHT;
const LEGEND: &str = "blue: the query · green: a true match · red: a false one · faded grey: ignored by the protocol";

/// The lists of a cell as one PNG: a row per picked query, labelled with its pick and AP, the query first, framed
/// as on the page (ignored items are dimmed instead of dashed).
pub fn png(cell: &CellLists) -> Result<Vec<u8>, ReportError> {
    let (tw, th) = (
        mgat_eval::ranked::THUMB_WIDTH * SCALE,
        mgat_eval::ranked::THUMB_HEIGHT * SCALE,
    );
    let slot = tw + 2 * FRAME + GAP;
    let columns = cell
        .lists
        .iter()
        .map(|l| l.items.len() + 2)
        .max()
        .unwrap_or(1) as u32;
    let row_height = LABEL_HEIGHT + th + 2 * FRAME + GAP;
    let (width, height) = (
        GAP + columns * slot,
        HEADER_HEIGHT + GAP + cell.lists.len().max(1) as u32 * row_height,
    );
    let mut canvas = image::RgbImage::from_pixel(width, height, Rgb([255, 255, 255]));
    for (r, list) in cell.lists.iter().enumerate() {
        let y = HEADER_HEIGHT + GAP + r as u32 * row_height + LABEL_HEIGHT;
        let framed =
            std::iter::once((&list.query, QUERY, false)).chain(list.items.iter().map(|(s, m)| {
                let colour = match m {
                    Mark::Match => MATCH,
                    Mark::Miss => MISS,
                    Mark::Ignored => IGNORED,
                };
                (s, colour, *m == Mark::Ignored)
            }));
        for (c, (shown, colour, dim)) in framed.enumerate() {
            // The query, then a blank slot, then the list.
            let column = if c == 0 { 0 } else { c as u32 + 1 };
            let x = GAP + column * slot;
            draw_framed(&mut canvas, shown, colour, dim, (x, y), (tw, th))?;
        }
    }
    let mut rgb = canvas.into_raw();
    register_font();
    {
        let area = BitMapBackend::with_buffer(&mut rgb, (width, height)).into_drawing_area();
        let font = ("sans-serif", 16).into_font().color(&BLACK);
        let text_error = |e: DrawingAreaErrorKind<_>| ReportError::Figure(e.to_string());
        area.draw_text(&cell.cell, &font, (GAP as i32, 4))
            .map_err(text_error)?;
        let legend = ("sans-serif", 13).into_font().color(&RGBColor(85, 85, 85));
        area.draw_text(LEGEND, &legend, (GAP as i32, LABEL_HEIGHT as i32 + 2))
            .map_err(text_error)?;
        for (r, list) in cell.lists.iter().enumerate() {
            let y = (HEADER_HEIGHT + GAP + r as u32 * row_height + 2) as i32;
            let label = format!("{} · AP {:.1}%", list.pick.label(), list.ap * 100.0);
            area.draw_text(&label, &font, (GAP as i32, y))
                .map_err(text_error)?;
        }
        area.present().map_err(text_error)?;
    }
    let mut png = Vec::new();
    image::ImageEncoder::write_image(
        image::codecs::png::PngEncoder::new(&mut png),
        &rgb,
        width,
        height,
        image::ExtendedColorType::Rgb8,
    )
    .map_err(|e| ReportError::Figure(e.to_string()))?;
    Ok(png)
}

/// Draws a thumbnail scaled to `size` inside a frame of `colour` with its top-left corner at `at`.
fn draw_framed(
    canvas: &mut image::RgbImage,
    shown: &Shown,
    colour: Rgb<u8>,
    dim: bool,
    at: (u32, u32),
    size: (u32, u32),
) -> Result<(), ReportError> {
    let thumb = image::load_from_memory(&shown.jpeg)
        .map_err(|e| ReportError::Figure(format!("{}: {e}", shown.path)))?
        .to_rgb8();
    let thumb =
        image::imageops::resize(&thumb, size.0, size.1, image::imageops::FilterType::Nearest);
    let (x, y) = at;
    for dy in 0..size.1 + 2 * FRAME {
        for dx in 0..size.0 + 2 * FRAME {
            canvas.put_pixel(x + dx, y + dy, colour);
        }
    }
    for (px, py, pixel) in thumb.enumerate_pixels() {
        let pixel = match dim {
            // Halfway to white.
            true => Rgb(pixel.0.map(|v| v / 2 + 128)),
            false => *pixel,
        };
        canvas.put_pixel(x + FRAME + px, y + FRAME + py, pixel);
    }
    Ok(())
}
