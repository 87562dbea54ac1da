//! Figures with plotters, each as SVG and PNG: sweeps (metric vs a numeric axis, one line per combination of the
//! other axes, error bars ±1 sample std over seeds), CMC curves and training curves per cell group. Okabe–Ito
//! colours (colour-blind safe), DejaVu Sans embedded so a fresh machine renders the same text.

use super::ReportError;
use super::results::Results;
use super::stats::{mean, sample_std};
use super::summary::short_name;
use crate::spec::ReportLayout;
use image::ImageEncoder as _;
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::{Path, PathBuf};
use std::sync::Once;

/// Okabe & Ito (2008), without yellow (too faint on white): blue, vermillion, bluish green, reddish purple, orange,
/// sky blue, black.
const PALETTE: [RGBColor; 7] = [
    RGBColor(0, 114, 178),
    RGBColor(213, 94, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(230, 159, 0),
    RGBColor(86, 180, 233),
    RGBColor(0, 0, 0),
];
const FONT: &str = "sans-serif";

/// One line of a figure: label and (x, mean, std) points; std is NaN for a single value.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    pub label: String,
    pub points: Vec<(f64, f64, f64)>,
}

/// One panel: title, axis descriptions, lines, and whether x is drawn on a log scale.
#[derive(Debug, Clone, PartialEq)]
pub struct Panel {
    pub title: String,
    pub x_desc: String,
    pub y_desc: String,
    pub lines: Vec<Line>,
    pub log_x: bool,
    pub error_bars: bool,
    /// A reference drawn across the whole x range behind the lines (the baseline's interval).
    pub band: Option<Band>,
}

/// A horizontal band: `mid` as a dashed line, `lo`..`hi` shaded.
#[derive(Debug, Clone, PartialEq)]
pub struct Band {
    pub label: String,
    pub lo: f64,
    pub mid: f64,
    pub hi: f64,
}

const BAND_COLOUR: RGBColor = RGBColor(110, 110, 110);

pub(super) fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The embedded font is a valid TrueType file; if registration ever failed, plotters reports a font error
        // when drawing text, which surfaces as a figure error.
        let _ = plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular());
    });
}

/// Per x value, the values of every seed.
type SeedValues = Vec<(f64, Vec<f64>)>;

/// Sweep panels for `axis`: one per metric, one line per combination of the other axes, mean ± std over seeds.
pub fn sweep_panels(results: &Results, layout: &ReportLayout, axis: &str) -> Vec<Panel> {
    let Some(x_at) = results.axes.iter().position(|a| a == axis) else {
        return Vec::new();
    };
    let others: Vec<usize> = (0..results.axes.len()).filter(|&i| i != x_at).collect();
    layout
        .metrics
        .iter()
        .map(|&metric| {
            let mut lines: Vec<(String, SeedValues)> = Vec::new();
            for row in &results.rows {
                let Ok(x) = row.axes[x_at].parse::<f64>() else {
                    continue;
                };
                let label = others
                    .iter()
                    .filter(|&&i| !row.axes[i].is_empty())
                    .map(|&i| {
                        format!(
                            "{}={}",
                            short_name(&results.axes[i], &results.axes),
                            row.axes[i]
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(", ");
                let value = row.metric(metric).unwrap_or(f64::NAN) * 100.0;
                let at = match lines.iter().position(|(l, _)| *l == label) {
                    Some(i) => i,
                    None => {
                        lines.push((label, Vec::new()));
                        lines.len() - 1
                    }
                };
                let points = &mut lines[at].1;
                match points.iter_mut().find(|(px, _)| *px == x) {
                    Some((_, values)) => values.push(value),
                    None => points.push((x, vec![value])),
                }
            }
            let lines: Vec<Line> = lines
                .into_iter()
                .map(|(label, mut points)| {
                    points.sort_by(|a, b| a.0.total_cmp(&b.0));
                    Line {
                        label: if label.is_empty() {
                            "all".into()
                        } else {
                            label
                        },
                        points: points
                            .into_iter()
                            .map(|(x, v)| (x, mean(&v), sample_std(&v)))
                            .collect(),
                    }
                })
                .collect();
            let xs: Vec<f64> = lines
                .iter()
                .flat_map(|l| l.points.iter().map(|p| p.0))
                .collect();
            let (lo, hi) = min_max(&xs);
            Panel {
                title: format!("{} vs {}", metric.label(), short_name(axis, &results.axes)),
                x_desc: short_name(axis, &results.axes),
                y_desc: format!("{} (%)", metric.label()),
                lines,
                log_x: lo > 0.0 && hi / lo >= 10.0,
                error_bars: true,
                band: None,
            }
        })
        .collect()
}

/// Mean ± std of per-seed curves (each a list of y by 1-based x), grouped by cell group in row order.
pub fn curve_lines(groups: &[(String, Vec<Vec<f64>>)], scale: f64) -> Vec<Line> {
    groups
        .iter()
        .map(|(label, curves)| {
            let len = curves.iter().map(Vec::len).min().unwrap_or(0);
            Line {
                label: label.clone(),
                points: (0..len)
                    .map(|i| {
                        let v: Vec<f64> = curves.iter().map(|c| c[i] * scale).collect();
                        ((i + 1) as f64, mean(&v), sample_std(&v))
                    })
                    .collect(),
            }
        })
        .collect()
}

fn min_max(xs: &[f64]) -> (f64, f64) {
    xs.iter()
        .filter(|x| x.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &x| {
            (lo.min(x), hi.max(x))
        })
}

/// A figure written as SVG and PNG.
#[derive(Debug, Clone, PartialEq)]
pub struct Figure {
    pub title: String,
    pub svg: PathBuf,
    pub png: PathBuf,
}

/// Writes `<stem>.svg` and `<stem>.png` with the panels side by side and one legend below them.
pub fn write_figure(stem: &Path, title: &str, panels: &[Panel]) -> Result<Figure, ReportError> {
    register_font();
    let (rows, columns) = grid(panels.len());
    let width = 560 * columns as u32;
    let legend = Legend::new(panels, width);
    let size = (width, 430 * rows as u32 + legend.height());
    let mut svg = String::new();
    {
        let area = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        draw(&area, title, panels, &legend)?;
        area.present().map_err(figure_error)?;
    }
    let mut rgb = vec![0u8; (size.0 * size.1 * 3) as usize];
    {
        let area = BitMapBackend::with_buffer(&mut rgb, size).into_drawing_area();
        draw(&area, title, panels, &legend)?;
        area.present().map_err(figure_error)?;
    }
    let mut png = Vec::new();
    image::codecs::png::PngEncoder::new(&mut png)
        .write_image(&rgb, size.0, size.1, image::ExtendedColorType::Rgb8)
        .map_err(|e| ReportError::Figure(e.to_string()))?;
    let svg_path = stem.with_extension("svg");
    let png_path = stem.with_extension("png");
    mgat_util::fsio::write_atomic(&svg_path, svg.as_bytes())?;
    mgat_util::fsio::write_atomic(&png_path, &png)?;
    Ok(Figure {
        title: title.to_string(),
        svg: svg_path,
        png: png_path,
    })
}

/// The figure's legend, below the panels so it never hides data: the first panel's line labels (every panel of
/// a figure draws the same lines in the same colours), in as many columns as fit.
struct Legend {
    labels: Vec<String>,
    /// The first panel's band, listed last.
    band: Option<String>,
    columns: usize,
    column_width: u32,
}

const LEGEND_ROW: u32 = 22;

impl Legend {
    fn new(panels: &[Panel], width: u32) -> Legend {
        let labels: Vec<String> = panels
            .first()
            .map(|p| p.lines.iter().map(|l| l.label.clone()).collect())
            .unwrap_or_default();
        let band = panels
            .first()
            .and_then(|p| p.band.as_ref().map(|b| b.label.clone()));
        let longest = labels
            .iter()
            .chain(&band)
            .map(|l| l.chars().count())
            .max()
            .unwrap_or(0) as u32;
        let column_width = 44 + longest * 8;
        let entries = labels.len() + usize::from(band.is_some());
        let columns = ((width - 40) / column_width).clamp(1, entries.max(1) as u32) as usize;
        Legend {
            labels,
            band,
            columns,
            column_width,
        }
    }

    fn entries(&self) -> usize {
        self.labels.len() + usize::from(self.band.is_some())
    }

    fn height(&self) -> u32 {
        let rows = self.entries().div_ceil(self.columns) as u32;
        rows * LEGEND_ROW + 16
    }

    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> Result<(), ReportError> {
        let total = self.columns as u32 * self.column_width;
        let left = (area.dim_in_pixel().0.saturating_sub(total) / 2) as i32;
        for (i, label) in self.labels.iter().chain(&self.band).enumerate() {
            let (col, row) = ((i % self.columns) as i32, (i / self.columns) as i32);
            let x = left + col * self.column_width as i32;
            let y = 8 + row * LEGEND_ROW as i32 + LEGEND_ROW as i32 / 2;
            if i < self.labels.len() {
                let style = line_style(i);
                match i < PALETTE.len() {
                    true => area.draw(&PathElement::new(vec![(x, y), (x + 28, y)], style)),
                    false => area
                        .draw(&PathElement::new(vec![(x, y), (x + 9, y)], style))
                        .and_then(|()| {
                            area.draw(&PathElement::new(vec![(x + 19, y), (x + 28, y)], style))
                        }),
                }
                .map_err(figure_error)?;
                area.draw(&marker(i, (x + 14, y), PALETTE[i % PALETTE.len()]))
                    .map_err(figure_error)?;
            } else {
                area.draw(&Rectangle::new(
                    [(x, y - 6), (x + 28, y + 6)],
                    BAND_COLOUR.mix(0.25).filled(),
                ))
                .map_err(figure_error)?;
            }
            area.draw(&Text::new(
                label.clone(),
                (x + 36, y - 4),
                (FONT, 14).into_font(),
            ))
            .map_err(figure_error)?;
        }
        Ok(())
    }
}

/// Line `i`'s marker at `at`: a circle for the first round of the palette, a triangle once colours repeat (where
/// lines are dashed), so that two lines of one colour stay apart even as single points.
fn marker<C, DB: DrawingBackend>(i: usize, at: C, color: RGBColor) -> DynElement<'static, DB, C>
where
    C: Clone + 'static,
{
    if i < PALETTE.len() {
        Circle::new(at, 4, color.filled()).into_dyn()
    } else {
        TriangleMarker::new(at, 6, color.filled()).into_dyn()
    }
}

fn line_style(i: usize) -> ShapeStyle {
    ShapeStyle::from(&PALETTE[i % PALETTE.len()]).stroke_width(2)
}

fn figure_error<E: std::error::Error + Send + Sync>(e: DrawingAreaErrorKind<E>) -> ReportError {
    ReportError::Figure(e.to_string())
}

fn draw<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    title: &str,
    panels: &[Panel],
    legend: &Legend,
) -> Result<(), ReportError> {
    area.fill(&WHITE).map_err(figure_error)?;
    let area = area
        .titled(title, (FONT, 22).into_font())
        .map_err(figure_error)?;
    let plots_height = area.dim_in_pixel().1.saturating_sub(legend.height());
    let (plots, legend_area) = area.split_vertically(plots_height);
    for (panel, cell) in panels.iter().zip(plots.split_evenly(grid(panels.len()))) {
        draw_panel(&cell, panel)?;
    }
    legend.draw(&legend_area)
}

/// Rows and columns of a figure's panels: one row of up to 4, else rows of 3.
fn grid(panels: usize) -> (usize, usize) {
    match panels {
        0 => (1, 1),
        1..=4 => (1, panels),
        _ => (panels.div_ceil(3), 3),
    }
}

fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    panel: &Panel,
) -> Result<(), ReportError> {
    let tx = |x: f64| if panel.log_x { x.log10() } else { x };
    let xs: Vec<f64> = panel
        .lines
        .iter()
        .flat_map(|l| l.points.iter().map(|p| tx(p.0)))
        .collect();
    let ys: Vec<f64> = panel
        .lines
        .iter()
        .flat_map(|l| {
            l.points.iter().flat_map(|&(_, m, s)| {
                let s = if s.is_finite() { s } else { 0.0 };
                [m - s, m + s]
            })
        })
        .chain(panel.band.iter().flat_map(|b| [b.lo, b.hi]))
        .collect();
    let (x_lo, x_hi) = padded(min_max(&xs), 0.06);
    let (y_lo, y_hi) = padded(min_max(&ys), 0.12);
    // Neither the padding nor an error bar takes the axis below 0 unless a mean is negative (a cosine can be).
    let lowest_mean = panel
        .lines
        .iter()
        .flat_map(|l| l.points.iter().map(|p| p.1))
        .chain(panel.band.iter().map(|b| b.mid))
        .fold(f64::INFINITY, f64::min);
    let y_lo = if lowest_mean >= 0.0 {
        y_lo.max(0.0)
    } else {
        y_lo
    };
    let mut chart = ChartBuilder::on(area)
        .caption(&panel.title, (FONT, 18).into_font())
        .margin(12)
        .x_label_area_size(48)
        .y_label_area_size(60)
        .build_cartesian_2d(x_lo..x_hi, y_lo..y_hi)
        .map_err(figure_error)?;
    let log_x = panel.log_x;
    // On a log scale, two significant digits (0.32, 3.2, 32); otherwise up to three decimals.
    let x_label = move |v: &f64| match log_x {
        true => {
            let x = 10f64.powf(*v);
            let decimals = (1 - x.log10().floor() as i32).max(0) as usize;
            format!("{x:.decimals$}")
        }
        false => format!("{}", (v * 1000.0).round() / 1000.0),
    };
    chart
        .configure_mesh()
        .x_desc(if log_x {
            format!("{} (log scale)", panel.x_desc)
        } else {
            panel.x_desc.clone()
        })
        .y_desc(&panel.y_desc)
        .x_label_formatter(&x_label)
        .x_labels(8)
        .y_labels(8)
        .label_style((FONT, 14).into_font())
        .axis_desc_style((FONT, 16).into_font())
        .light_line_style(WHITE.mix(0.0))
        .bold_line_style(BLACK.mix(0.12))
        .draw()
        .map_err(figure_error)?;
    if let Some(band) = &panel.band {
        chart
            .draw_series(std::iter::once(Rectangle::new(
                [(x_lo, band.lo), (x_hi, band.hi)],
                BAND_COLOUR.mix(0.25).filled(),
            )))
            .map_err(figure_error)?;
        chart
            .draw_series(DashedLineSeries::new(
                [(x_lo, band.mid), (x_hi, band.mid)],
                8,
                5,
                ShapeStyle::from(&BAND_COLOUR).stroke_width(1),
            ))
            .map_err(figure_error)?;
    }
    for (i, line) in panel.lines.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let style = line_style(i);
        let points: Vec<(f64, f64)> = line.points.iter().map(|&(x, m, _)| (tx(x), m)).collect();
        let dashed = i >= PALETTE.len();
        let series = if dashed {
            chart.draw_series(DashedLineSeries::new(points.clone(), 8, 5, style))
        } else {
            chart.draw_series(LineSeries::new(points.clone(), style))
        };
        series.map_err(figure_error)?;
        if line.points.len() <= 20 {
            let markers = points.iter().map(|&p| marker(i, p, color));
            chart.draw_series(markers).map_err(figure_error)?;
        }
        if panel.error_bars {
            chart
                .draw_series(
                    line.points
                        .iter()
                        .filter(|p| p.2.is_finite())
                        .map(|&(x, m, s)| {
                            ErrorBar::new_vertical(
                                tx(x),
                                m - s,
                                m,
                                m + s,
                                style.stroke_width(1),
                                10,
                            )
                        }),
                )
                .map_err(figure_error)?;
        }
    }
    Ok(())
}

fn padded((lo, hi): (f64, f64), fraction: f64) -> (f64, f64) {
    if !lo.is_finite() || !hi.is_finite() {
        return (0.0, 1.0);
    }
    let span = if hi > lo { hi - lo } else { hi.abs().max(1.0) };
    (lo - span * fraction, hi + span * fraction)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::results::tests::table;

    #[test]
    fn sweep_lines_average_seeds_per_x() {
        let results = table(
            &["model.head", "model.gamma"],
            &[
                (&["mgat", "2"], 1, 0.50, 0.30),
                (&["mgat", "0.5"], 1, 0.40, 0.20),
                (&["mgat", "0.5"], 2, 0.60, 0.20),
                (&["gat", "0.5"], 1, 0.30, 0.10),
            ],
        );
        let layout = ReportLayout {
            axes: results.axes.clone(),
            rows: vec!["model.head".into()],
            columns: vec!["model.gamma".into()],
            metrics: vec![crate::spec::ReportMetric::Rank1],
            sweeps: vec!["model.gamma".into()],
            baseline: vec![],
        };
        let panels = sweep_panels(&results, &layout, "model.gamma");
        assert_eq!(panels.len(), 1);
        let mgat = &panels[0].lines[0];
        assert_eq!(mgat.label, "head=mgat");
        assert_eq!(mgat.points[0].0, 0.5);
        assert!((mgat.points[0].1 - 50.0).abs() < 1e-9);
        assert!((mgat.points[0].2 - 200f64.sqrt()).abs() < 1e-9);
        assert_eq!(mgat.points[1].0, 2.0);
        assert_eq!(panels[0].lines[1].label, "head=gat");
        assert!(!panels[0].log_x);
    }

    #[test]
    fn figures_are_written_as_svg_and_png() {
        let dir = mgat_testutil::tempdir();
        let panel = Panel {
            title: "t".into(),
            x_desc: "x".into(),
            y_desc: "y".into(),
            lines: vec![Line {
                label: "a".into(),
                points: vec![(1.0, 2.0, 0.5), (10.0, 3.0, f64::NAN), (100.0, 1.0, 0.1)],
            }],
            log_x: true,
            error_bars: true,
            band: None,
        };
        let figure = write_figure(&dir.join("f"), "title", &[panel]).unwrap();
        let svg = std::fs::read_to_string(&figure.svg).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("title"));
        let png = image::open(&figure.png).unwrap();
        assert_eq!((png.width(), png.height()), (560, 430 + 22 + 16));
    }
}
