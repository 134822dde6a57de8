//! Line charts for the reproduction's figures and for every `mdem` subcommand that draws:
//! several series, optional bands, a linear or logarithmic $y$ axis, written as SVG or PNG
//! (chosen by the file extension) with `plotters`.
//!
//! ```no_run
//! use experiments::plot::{Chart, Series};
//! let em = Series::new("EM", vec![(0.0, 1.0), (1.0, 1e-3), (2.0, 1e-7)]);
//! let gd = Series::new("GD", vec![(0.0, 1.0), (1.0, 0.5), (2.0, 0.25)]);
//! Chart::new("suboptimality", "iteration", "L_t − L*")
//!     .log_y(true)
//!     .series(em)
//!     .series(gd)
//!     .save("fig.svg")?;
//! # Ok::<(), experiments::plot::PlotError>(())
//! ```
//!
//! On a logarithmic axis, points with $y \le 0$ or non-finite $y$ cannot be drawn: they
//! are dropped (a series is cut there), and the axis spans whole decades around the
//! remaining points ([`log_axis_range`]).
//!
//! Text is measured and, in PNGs, drawn with an embedded DejaVu Sans ([`FONT`], which
//! also says why: plotters' default font path drew `j` as "¡" in PNGs).

use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::Path;

/// The font of every text in a figure: DejaVu Sans 2.37, embedded in the binary
/// (`crates/experiments/assets/fonts/`, licence beside it) and registered with plotters as
/// `"sans-serif"` ([`register_font`]).
///
/// Why embedded, through plotters' `ab_glyph` feature rather than its default `ttf` one:
/// with `ttf`, plotters rasterises each glyph (through font-kit and FreeType) into a
/// square canvas whose left edge is the pen position, and font-kit 0.14's blit, when a
/// glyph bitmap starts left of that edge (a negative left side bearing, as DejaVu Sans'
/// `j`), clips the destination without offsetting the source: the bitmap is shifted right
/// and loses its right-most columns. For `j` those hold the stem and the dot, so PNG
/// figures showed "Armijo" as "Armi¡o" (SVGs, drawn by the viewer, were fine). The
/// `ab_glyph` backend rasterises the whole outline, so `j` is drawn complete, and the
/// embedded font makes PNGs independent of the system's fonts (and the build independent
/// of fontconfig and FreeType). Its known limitation: plotters' `ab_glyph` backend places each
/// glyph's ink at the pen position, ignoring the left side bearing, so letter spacing is
/// uneven by about a pixel (`ij` looks slightly spread); the glyphs themselves are right.
pub const FONT: &[u8] = include_bytes!("../assets/fonts/DejaVuSans.ttf");

/// Registers [`FONT`] as plotters' `"sans-serif"` family (once per process; later calls
/// return the first outcome). Every drawing needs it: plotters measures text through it
/// for SVG too.
///
/// # Errors
/// A message when plotters refuses the font data (it does not for the embedded file).
pub fn register_font() -> Result<(), String> {
    static REGISTERED: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            plotters::style::register_font("sans-serif", FontStyle::Normal, FONT)
                .map_err(|_| "the embedded font is not a valid OpenType font".to_string())
        })
        .clone()
}

/// Why a figure could not be written.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum PlotError {
    /// The file name ends neither in `.svg` nor in `.png`.
    #[error("{path}: unsupported figure format; expected a file name ending in .svg or .png")]
    Format {
        /// The path.
        path: String,
    },
    /// No series has a drawable point (on a log axis: no finite $y > 0$).
    #[error("{path}: nothing to draw: {reason}")]
    Empty {
        /// The path.
        path: String,
        /// Why.
        reason: String,
    },
    /// The backend failed (file not writable, font missing, ...).
    #[error("{path}: cannot draw the figure: {reason}")]
    Backend {
        /// The path.
        path: String,
        /// The backend's message.
        reason: String,
    },
}

/// One line of a chart, with an optional band (e.g. a spread over instances).
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Legend label.
    pub name: String,
    /// Points $(x, y)$ in drawing order.
    pub points: Vec<(f64, f64)>,
    /// Optional band: $(x, y_{\text{lo}}, y_{\text{hi}})$, drawn shaded under the line.
    pub band: Option<Vec<(f64, f64, f64)>>,
}

impl Series {
    /// A line without band.
    pub fn new(name: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        Series {
            name: name.into(),
            points,
            band: None,
        }
    }
    /// Adds a band $(x, y_{\text{lo}}, y_{\text{hi}})$.
    pub fn with_band(mut self, band: Vec<(f64, f64, f64)>) -> Self {
        self.band = Some(band);
        self
    }
}

/// A line chart: title, axis labels, axis scale, series.
#[derive(Debug, Clone, PartialEq)]
pub struct Chart {
    title: String,
    x_label: String,
    y_label: String,
    log_y: bool,
    size: (u32, u32),
    series: Vec<Series>,
}

/// Colours of successive series (colour-blind-safe Okabe–Ito palette).
const PALETTE: [RGBColor; 7] = [
    RGBColor(0, 114, 178),
    RGBColor(213, 94, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(230, 159, 0),
    RGBColor(86, 180, 233),
    RGBColor(0, 0, 0),
];

/// The colour of series number `i`.
pub fn series_color(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

/// A tick label: integers without a decimal point, other values with up to four
/// significant digits (trailing zeros trimmed).
pub fn tick_label(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        return format!("{v:.0}");
    }
    let s = format!("{v:.4}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    s.to_string()
}

/// The $y$ range of a logarithmic axis holding the positive finite `values`: from
/// $10^{\lfloor \log_{10} \min \rfloor}$ to $10^{\lceil \log_{10} \max \rceil}$ (one
/// decade when all values are equal powers of ten), or `None` if there is no such value.
pub fn log_axis_range(values: impl IntoIterator<Item = f64>) -> Option<(f64, f64)> {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in values {
        if v.is_finite() && v > 0.0 {
            lo = lo.min(v);
            hi = hi.max(v);
        }
    }
    if !lo.is_finite() {
        return None;
    }
    let a = lo.log10().floor();
    let mut b = hi.log10().ceil();
    if b <= a {
        b = a + 1.0;
    }
    Some((10f64.powf(a), 10f64.powf(b)))
}

/// The range of a linear axis holding the finite `values`, padded by 5 % on each side
/// (±1 around a single value), or `None` if there is none.
pub fn linear_axis_range(values: impl IntoIterator<Item = f64>) -> Option<(f64, f64)> {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in values.into_iter().filter(|v| v.is_finite()) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if !lo.is_finite() {
        return None;
    }
    if hi - lo <= f64::EPSILON * hi.abs().max(1.0) {
        return Some((lo - 1.0, hi + 1.0));
    }
    let pad = 0.05 * (hi - lo);
    Some((lo - pad, hi + pad))
}

impl Chart {
    /// An empty chart with a linear $y$ axis, 900 × 560 pixels.
    pub fn new(
        title: impl Into<String>,
        x_label: impl Into<String>,
        y_label: impl Into<String>,
    ) -> Self {
        Chart {
            title: title.into(),
            x_label: x_label.into(),
            y_label: y_label.into(),
            log_y: false,
            size: (900, 560),
            series: Vec::new(),
        }
    }
    /// Logarithmic (base 10) $y$ axis.
    pub fn log_y(mut self, on: bool) -> Self {
        self.log_y = on;
        self
    }
    /// Figure size in pixels.
    pub fn size(mut self, width: u32, height: u32) -> Self {
        self.size = (width.max(200), height.max(150));
        self
    }
    /// Adds a series.
    pub fn series(mut self, s: Series) -> Self {
        self.series.push(s);
        self
    }
    /// The series, after dropping points the axis cannot show (non-finite, or $y \le 0$
    /// on a log axis). Each series is returned as runs of consecutive drawable points.
    fn drawable(&self) -> Vec<Vec<Vec<(f64, f64)>>> {
        let ok = |&(x, y): &(f64, f64)| x.is_finite() && y.is_finite() && (!self.log_y || y > 0.0);
        self.series
            .iter()
            .map(|s| {
                let mut runs: Vec<Vec<(f64, f64)>> = vec![Vec::new()];
                for p in &s.points {
                    if ok(p) {
                        if let Some(r) = runs.last_mut() {
                            r.push(*p);
                        }
                    } else if runs.last().is_some_and(|r| !r.is_empty()) {
                        runs.push(Vec::new());
                    }
                }
                runs.retain(|r| !r.is_empty());
                runs
            })
            .collect()
    }

    /// Writes the chart to `path`: SVG for `.svg`, PNG for `.png`.
    ///
    /// # Errors
    /// [`PlotError::Format`] for another extension, [`PlotError::Empty`] when nothing is
    /// drawable, [`PlotError::Backend`] when the file cannot be written.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), PlotError> {
        let path = path.as_ref();
        let shown = path.display().to_string();
        register_font().map_err(|reason| PlotError::Backend {
            path: shown.clone(),
            reason,
        })?;
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        let backend = |reason: String| PlotError::Backend {
            path: shown.clone(),
            reason,
        };
        if !matches!(ext.as_deref(), Some("svg" | "png")) {
            return Err(PlotError::Format { path: shown });
        }
        // Drawn into a temporary file beside `path` and renamed over it once complete, so
        // a failed drawing never leaves a partial figure or destroys an existing one.
        em_as_md::fit::atomic::write_via_path(
            path,
            |e| backend(e.to_string()),
            |tmp| {
                if ext.as_deref() == Some("svg") {
                    self.draw(SVGBackend::new(tmp, self.size).into_drawing_area(), &shown)?;
                } else {
                    self.draw(
                        BitMapBackend::new(tmp, self.size).into_drawing_area(),
                        &shown,
                    )?;
                }
                // plotters reports some write failures only on drop; check the file.
                match std::fs::metadata(tmp) {
                    Ok(m) if m.len() > 0 => Ok(()),
                    Ok(_) => Err(backend("the file is empty after drawing".into())),
                    Err(e) => Err(backend(e.to_string())),
                }
            },
        )
    }

    fn draw<DB: DrawingBackend>(
        &self,
        root: DrawingArea<DB, Shift>,
        shown: &str,
    ) -> Result<(), PlotError> {
        let runs = self.drawable();
        let xs = runs.iter().flatten().flatten().map(|p| p.0);
        let ys: Vec<f64> = runs.iter().flatten().flatten().map(|p| p.1).collect();
        let empty = |reason: &str| PlotError::Empty {
            path: shown.to_string(),
            reason: reason.to_string(),
        };
        let (x0, x1) = linear_axis_range(xs).ok_or_else(|| {
            empty(if self.log_y {
                "no point with a finite y > 0 for the logarithmic axis"
            } else {
                "no finite point"
            })
        })?;
        let err = |e: &dyn std::fmt::Display| PlotError::Backend {
            path: shown.to_string(),
            reason: e.to_string(),
        };
        root.fill(&WHITE).map_err(|e| err(&e))?;
        let mut builder = ChartBuilder::on(&root);
        builder
            .caption(&self.title, ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(44)
            .y_label_area_size(78);
        let bands = self
            .series
            .iter()
            .map(|s| s.band.clone().unwrap_or_default());
        if self.log_y {
            let band_ys = bands.flatten().flat_map(|(_, lo, hi)| [lo, hi]);
            let (y0, y1) = log_axis_range(ys.iter().copied().chain(band_ys))
                .ok_or_else(|| empty("no point with a finite y > 0 for the logarithmic axis"))?;
            let mut chart = builder
                .build_cartesian_2d(x0..x1, (y0..y1).log_scale())
                .map_err(|e| err(&e))?;
            chart
                .configure_mesh()
                .x_desc(self.x_label.as_str())
                .y_desc(self.y_label.as_str())
                .x_label_formatter(&|v| tick_label(*v))
                .y_label_formatter(&|v| format!("{v:.0e}"))
                .draw()
                .map_err(|e| err(&e))?;
            self.draw_series(&mut chart, &runs, |y| y > 0.0)
                .map_err(|e| err(&e))?;
            legend(&mut chart).map_err(|e| err(&e))?;
        } else {
            let band_ys = bands.flatten().flat_map(|(_, lo, hi)| [lo, hi]);
            let (y0, y1) = linear_axis_range(ys.iter().copied().chain(band_ys))
                .ok_or_else(|| empty("no finite point"))?;
            let mut chart = builder
                .build_cartesian_2d(x0..x1, y0..y1)
                .map_err(|e| err(&e))?;
            chart
                .configure_mesh()
                .x_desc(self.x_label.as_str())
                .y_desc(self.y_label.as_str())
                .x_label_formatter(&|v| tick_label(*v))
                .y_label_formatter(&|v| tick_label(*v))
                .draw()
                .map_err(|e| err(&e))?;
            self.draw_series(&mut chart, &runs, |_| true)
                .map_err(|e| err(&e))?;
            legend(&mut chart).map_err(|e| err(&e))?;
        }
        root.present().map_err(|e| err(&e))?;
        Ok(())
    }

    fn draw_series<'a, DB, X, Y>(
        &self,
        chart: &mut ChartContext<'a, DB, Cartesian2d<X, Y>>,
        runs: &[Vec<Vec<(f64, f64)>>],
        y_ok: impl Fn(f64) -> bool,
    ) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>>
    where
        DB: DrawingBackend + 'a,
        X: Ranged<ValueType = f64>,
        Y: Ranged<ValueType = f64>,
    {
        for (i, (s, runs)) in self.series.iter().zip(runs).enumerate() {
            let color = series_color(i);
            if let Some(band) = &s.band {
                let pts: Vec<&(f64, f64, f64)> = band
                    .iter()
                    .filter(|(x, lo, hi)| x.is_finite() && lo.is_finite() && hi.is_finite())
                    .filter(|(_, lo, hi)| y_ok(*lo) && y_ok(*hi))
                    .collect();
                if pts.len() >= 2 {
                    let mut poly: Vec<(f64, f64)> = pts.iter().map(|p| (p.0, p.2)).collect();
                    poly.extend(pts.iter().rev().map(|p| (p.0, p.1)));
                    chart.draw_series(std::iter::once(Polygon::new(poly, color.mix(0.18))))?;
                }
            }
            let mut labelled = false;
            for run in runs {
                let style = color.stroke_width(2);
                if run.len() == 1 {
                    chart.draw_series(std::iter::once(Circle::new(run[0], 3, style.filled())))?;
                    continue;
                }
                let drawn = chart.draw_series(LineSeries::new(run.iter().copied(), style))?;
                if !labelled {
                    labelled = true;
                    drawn.label(s.name.as_str()).legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 22, y)], color.stroke_width(2))
                    });
                }
            }
        }
        Ok(())
    }
}

fn legend<'a, DB, X, Y>(
    chart: &mut ChartContext<'a, DB, Cartesian2d<X, Y>>,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>>
where
    DB: DrawingBackend + 'a,
    X: Ranged<ValueType = f64>,
    Y: Ranged<ValueType = f64>,
{
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("mdem-plot-{}-{name}", std::process::id()))
    }

    /// Darkness (0 = white, 255 = black) of `text` drawn black on white at `size` px with
    /// its pen at (40, 20), in a 120 × 60 RGB bitmap, row-major.
    fn ink(text: &str, size: f64) -> Vec<Vec<u8>> {
        register_font().unwrap();
        let (w, h) = (120usize, 60usize);
        let mut buf = vec![0u8; w * h * 3];
        {
            let root =
                BitMapBackend::with_buffer(&mut buf, (w as u32, h as u32)).into_drawing_area();
            root.fill(&WHITE).unwrap();
            root.draw_text(
                text,
                &("sans-serif", size).into_font().color(&BLACK),
                (40, 20),
            )
            .unwrap();
            root.present().unwrap();
        }
        buf.chunks(3 * w)
            .map(|row| row.chunks(3).map(|p| 255 - p[0]).collect())
            .collect()
    }

    fn row_ink(img: &[Vec<u8>], rows: std::ops::Range<usize>) -> u32 {
        img[rows].iter().flatten().map(|&v| u32::from(v)).sum()
    }

    /// The PNG glyph bug (see [`FONT`]): with plotters' `ttf` backend a small `j` lost
    /// its right-most columns, i.e. its dot and most of its stem, and read as "¡". Here
    /// `j` is checked against `i`, whose dot DejaVu Sans draws at the same height: the
    /// rows of `i`'s dot (above the lightest row that separates it from the stem) must hold
    /// about as much ink for `j`, and `j` must have a descender below `i`'s baseline.
    #[test]
    fn small_j_keeps_its_dot_and_descender_in_png() {
        for size in [11.0, 12.0, 13.0, 14.0, 16.0, 22.0] {
            let (i, j) = (ink("i", size), ink("j", size));
            let inked = |img: &[Vec<u8>], r: usize| img[r].iter().any(|&v| v > 40);
            let top = (0..i.len()).find(|&r| inked(&i, r)).unwrap();
            let bottom = (0..i.len()).rev().find(|&r| inked(&i, r)).unwrap();
            // The lightest row in the upper half of `i` separates its dot from its stem.
            let gap = (top + 1..=(top + bottom) / 2)
                .min_by_key(|&r| row_ink(&i, r..r + 1))
                .unwrap();
            let (dot_i, dot_j) = (row_ink(&i, top..gap), row_ink(&j, top..gap));
            assert!(dot_i > 0);
            let ratio = f64::from(dot_j) / f64::from(dot_i);
            assert!(
                (0.5..2.0).contains(&ratio),
                "size {size}: ink of j's dot / i's dot = {ratio:.2}"
            );
            let below = row_ink(&j, bottom + 1..j.len());
            let below_i = row_ink(&i, bottom + 1..i.len());
            assert_eq!(below_i, 0);
            assert!(below > 255, "size {size}: j has no descender ({below})");
        }
    }

    #[test]
    fn the_embedded_font_registers() {
        assert!(FONT.len() > 100_000);
        assert_eq!(register_font(), Ok(()));
        assert_eq!(register_font(), Ok(()));
    }

    #[test]
    fn log_axis_range_spans_whole_decades() {
        let (a, b) = log_axis_range([3e-7, 0.2, 0.0, -1.0, f64::NAN]).unwrap();
        assert_eq!((a, b), (1e-7, 1.0));
        // Independent check: every positive finite value lies inside.
        for v in [3e-7, 0.2] {
            assert!(a <= v && v <= b);
        }
        assert_eq!(log_axis_range([1.0]), Some((1.0, 10.0)));
        assert_eq!(log_axis_range([0.0, -2.0]), None);
    }

    #[test]
    fn tick_labels() {
        assert_eq!(tick_label(10.0), "10");
        assert_eq!(tick_label(-2.5), "-2.5");
        assert_eq!(tick_label(0.125), "0.125");
        assert_eq!(tick_label(1.0 / 3.0), "0.3333");
    }

    #[test]
    fn linear_axis_range_pads() {
        let (a, b) = linear_axis_range([0.0, 10.0, f64::INFINITY]).unwrap();
        assert!((a + 0.5).abs() < 1e-12 && (b - 10.5).abs() < 1e-12);
        assert_eq!(linear_axis_range([2.0, 2.0]), Some((1.0, 3.0)));
        assert_eq!(linear_axis_range([f64::NAN]), None);
    }

    #[test]
    fn svg_with_log_axis_band_and_legend() {
        let p = tmp("a.svg");
        let em = Series::new(
            "EM-curve",
            vec![(0.0, 1.0), (1.0, 1e-4), (2.0, 0.0), (3.0, 1e-9)],
        )
        .with_band(vec![(0.0, 0.5, 2.0), (1.0, 1e-5, 1e-3)]);
        let gd = Series::new(
            "GD-curve",
            (0..20).map(|t| (t as f64, 0.8f64.powi(t))).collect(),
        );
        Chart::new("title-xyz", "iteration", "gap")
            .log_y(true)
            .series(em)
            .series(gd)
            .save(&p)
            .unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        std::fs::remove_file(&p).unwrap();
        assert!(text.starts_with("<svg"), "{}", &text[..80.min(text.len())]);
        for s in ["EM-curve", "GD-curve", "title-xyz", "iteration"] {
            assert!(text.contains(s), "missing {s}");
        }
        assert!(text.contains("<polyline") || text.contains("<path"));
    }

    #[test]
    fn png_is_written() {
        let p = tmp("b.png");
        Chart::new("t", "x", "y")
            .series(Series::new("s", vec![(0.0, -1.0), (1.0, 2.0)]))
            .save(&p)
            .unwrap();
        let bytes = std::fs::read(&p).unwrap();
        std::fs::remove_file(&p).unwrap();
        assert_eq!(&bytes[1..4], b"PNG");
    }

    #[test]
    fn typed_errors() {
        let c = Chart::new("t", "x", "y").series(Series::new("s", vec![(0.0, 1.0)]));
        assert!(matches!(
            c.save(tmp("c.pdf")),
            Err(PlotError::Format { .. })
        ));
        let c = Chart::new("t", "x", "y")
            .log_y(true)
            .series(Series::new("s", vec![(0.0, 0.0), (1.0, -3.0)]));
        assert!(matches!(c.save(tmp("d.svg")), Err(PlotError::Empty { .. })));
        let c = Chart::new("t", "x", "y").series(Series::new("s", vec![(0.0, 1.0), (1.0, 2.0)]));
        assert!(matches!(
            c.save("/nonexistent-dir-mdem/x.svg"),
            Err(PlotError::Backend { .. })
        ));
    }

    #[test]
    fn non_drawable_points_cut_runs() {
        let c = Chart::new("t", "x", "y").log_y(true).series(Series::new(
            "s",
            vec![
                (0.0, 1.0),
                (1.0, 0.5),
                (2.0, 0.0),
                (3.0, 0.1),
                (4.0, f64::NAN),
            ],
        ));
        let runs = c.drawable();
        assert_eq!(
            runs[0],
            vec![vec![(0.0, 1.0), (1.0, 0.5)], vec![(3.0, 0.1)]]
        );
    }
}
