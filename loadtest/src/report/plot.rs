//! `--plot FILE.svg|png`: latency over time (p50 and p99 of every second, sessions on a
//! second axis) above the latency distribution on an HDR percentile axis (0, 90, 99, 99.9 …).
//!
//! SVG needs no font: the text stays text for the viewer to render. PNG text is rasterised with
//! `ab_glyph` from a TrueType font read at run time: `$CORRAL_PLOT_FONT` if set, else the first
//! of [`FONT_CANDIDATES`] that exists; without one, plotting to PNG fails with an error that
//! says so and suggests SVG.

use std::path::{Path, PathBuf};

use ab_glyph::{Font, FontVec, PxScale, ScaleFont, point};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters_backend::text_anchor::{HPos, VPos};
use plotters_backend::{BackendColor, BackendCoord, BackendTextStyle, DrawingErrorKind};

use super::json::ReportError;
use super::{Latency, Report};

/// Environment variable naming the TrueType / OpenType font for PNG plots.
pub const FONT_ENV: &str = "CORRAL_PLOT_FONT";

/// Where PNG plots look for a font when [`FONT_ENV`] is not set, in order (Debian / Ubuntu,
/// Fedora, Arch, Alpine, macOS, Windows).
pub const FONT_CANDIDATES: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu-sans-fonts/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/ttf-dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/liberation-sans/LiberationSans-Regular.ttf",
    "/usr/share/fonts/truetype/freefont/FreeSans.ttf",
    "/usr/share/fonts/truetype/noto/NotoSans-Regular.ttf",
    "/usr/share/fonts/noto/NotoSans-Regular.ttf",
    "/System/Library/Fonts/Supplemental/Arial.ttf",
    "/Library/Fonts/Arial.ttf",
    "C:\\Windows\\Fonts\\arial.ttf",
];

/// Pixel size of a plot.
const SIZE: (u32, u32) = (1200, 1000);
/// Highest decade of the percentile axis: 99.9999 %.
const MAX_DECADES: f64 = 6.0;

const P50: RGBColor = RGBColor(31, 119, 180);
const P99: RGBColor = RGBColor(214, 39, 40);
const SESSIONS: RGBColor = RGBColor(44, 160, 44);
const CONNECT: RGBColor = RGBColor(255, 127, 14);

/// Plot file formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlotFormat {
    /// `.svg`
    Svg,
    /// `.png`
    Png,
}

impl PlotFormat {
    /// The format for `path`, by extension.
    pub fn of(path: &Path) -> Result<Self, ReportError> {
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        match ext.as_deref() {
            Some("svg") => Ok(PlotFormat::Svg),
            Some("png") => Ok(PlotFormat::Png),
            _ => Err(ReportError::Plot {
                path: path.to_owned(),
                reason: "unknown plot format: name the file .svg or .png".to_owned(),
            }),
        }
    }
}

impl Report {
    /// Draws the plots into `path`, SVG or PNG by extension.
    pub fn plot(&self, path: &Path) -> Result<(), ReportError> {
        match PlotFormat::of(path)? {
            PlotFormat::Svg => {
                let svg = self.plot_svg()?;
                std::fs::write(path, svg).map_err(|source| ReportError::Io {
                    path: path.to_owned(),
                    source,
                })
            }
            PlotFormat::Png => self.plot_png(path, &font_candidates()),
        }
    }

    /// The plots as an SVG document.
    pub fn plot_svg(&self) -> Result<String, ReportError> {
        let mut svg = String::new();
        {
            let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
            draw(self, &root)
                .and_then(|()| root.present())
                .map_err(|e| plot_error(Path::new("(svg)"), e))?;
        }
        Ok(svg)
    }

    /// The plots as a PNG file, with the first readable font of `fonts`.
    fn plot_png(&self, path: &Path, fonts: &[PathBuf]) -> Result<(), ReportError> {
        let font = load_font(fonts).map_err(|reason| ReportError::Plot {
            path: path.to_owned(),
            reason,
        })?;
        let root = GlyphBackend {
            inner: BitMapBackend::new(path, SIZE),
            font,
        }
        .into_drawing_area();
        draw(self, &root)
            .and_then(|()| root.present())
            .map_err(|e| plot_error(path, e))
    }
}

fn plot_error(path: &Path, e: impl std::fmt::Display) -> ReportError {
    ReportError::Plot {
        path: path.to_owned(),
        reason: e.to_string(),
    }
}

/// [`FONT_ENV`] if set, then [`FONT_CANDIDATES`].
fn font_candidates() -> Vec<PathBuf> {
    std::env::var_os(FONT_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .into_iter()
        .chain(FONT_CANDIDATES.iter().map(PathBuf::from))
        .collect()
}

fn load_font(candidates: &[PathBuf]) -> Result<FontVec, String> {
    let mut unreadable = Vec::new();
    for path in candidates {
        match std::fs::read(path) {
            Ok(bytes) => match FontVec::try_from_vec(bytes) {
                Ok(font) => return Ok(font),
                Err(e) => unreadable.push(format!("{}: {e}", path.display())),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => unreadable.push(format!("{}: {e}", path.display())),
        }
    }
    let mut msg = format!(
        "PNG plots need a TrueType font for their text and none was found (looked for {}); \
         plot to a .svg file instead, which needs no font, or install one (Debian: apt-get \
         install fonts-dejavu-core) or point {FONT_ENV} at a .ttf file",
        candidates
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    if !unreadable.is_empty() {
        msg.push_str(&format!("; unusable: {}", unreadable.join("; ")));
    }
    Err(msg)
}

/// `(min, max)` of an axis showing `values`, never empty.
fn axis_max(values: impl Iterator<Item = f64>) -> f64 {
    let max = values.filter(|v| v.is_finite()).fold(0.0, f64::max);
    if max > 0.0 { max * 1.1 } else { 1.0 }
}

/// Position of `percentile` on the HDR axis: `-log10(1 - p / 100)`, so 90 % is 1, 99 % is 2,
/// 99.9 % is 3; 100 % (the maximum) is put at `end`.
fn hdr_x(percentile: f64, end: f64) -> f64 {
    if percentile >= 100.0 {
        end
    } else {
        (-(1.0 - percentile / 100.0).log10()).clamp(0.0, end)
    }
}

/// The label of position `x` on the HDR axis: `0%`, `90%`, `99%`, `99.9%` …
fn percentile_label(x: f64) -> String {
    let p = 100.0 * (1.0 - 10f64.powf(-x));
    let decimals = (x.round() as usize).saturating_sub(2);
    format!("{p:.decimals$}%")
}

fn legend(color: RGBColor) -> impl Fn((i32, i32)) -> PathElement<(i32, i32)> {
    move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(3))
}

fn draw<DB: DrawingBackend>(
    report: &Report,
    root: &DrawingArea<DB, Shift>,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    root.fill(&WHITE)?;
    let (top, bottom) = root.split_vertically(SIZE.1 * 52 / 100);
    draw_timeline(report, &top)?;
    draw_distribution(report, &bottom)
}

fn draw_timeline<DB: DrawingBackend>(
    report: &Report,
    area: &DrawingArea<DB, Shift>,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let timeline = &report.timeline;
    let measured: Vec<_> = timeline
        .iter()
        .filter(|s| s.p50_ms > 0.0 || s.p99_ms > 0.0)
        .collect();
    let t_end = timeline.last().map_or(1.0, |s| s.t_s + 1.0).max(1.0);
    let y_max = axis_max(measured.iter().map(|s| s.p99_ms.max(s.p50_ms)));
    let s_max = axis_max(timeline.iter().map(|s| s.sessions as f64));
    let title = format!("{}: latency over time", report.scenario);
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 26))
        .margin(15)
        .x_label_area_size(50)
        .y_label_area_size(75)
        .right_y_label_area_size(75)
        .build_cartesian_2d(0f64..t_end, 0f64..y_max)?
        .set_secondary_coord(0f64..t_end, 0f64..s_max);
    chart
        .configure_mesh()
        .x_desc("seconds since start")
        .y_desc("latency (ms)")
        .label_style(("sans-serif", 15))
        .axis_desc_style(("sans-serif", 17))
        .draw()?;
    chart
        .configure_secondary_axes()
        .y_desc("sessions")
        .y_label_formatter(&|v| format!("{v:.0}"))
        .label_style(("sans-serif", 15))
        .axis_desc_style(("sans-serif", 17))
        .draw()?;
    if timeline.is_empty() {
        area.draw(&Text::new(
            "no timeline samples",
            (SIZE.0 as i32 / 2 - 90, 200),
            ("sans-serif", 20),
        ))?;
        return Ok(());
    }
    // A sample covers [t, t + 1): draw it mid-second.
    let few = measured.len() < 60;
    for (name, color, value) in [
        (
            "p50",
            P50,
            (|s: &super::Sample| s.p50_ms) as fn(&super::Sample) -> f64,
        ),
        ("p99", P99, |s: &super::Sample| s.p99_ms),
    ] {
        let points: Vec<(f64, f64)> = measured.iter().map(|s| (s.t_s + 0.5, value(s))).collect();
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?
            .label(name)
            .legend(legend(color));
        if few {
            chart.draw_series(
                points
                    .into_iter()
                    .map(|p| Circle::new(p, 3, color.filled())),
            )?;
        }
    }
    chart
        .draw_secondary_series(LineSeries::new(
            timeline.iter().map(|s| (s.t_s + 0.5, s.sessions as f64)),
            SESSIONS.stroke_width(2),
        ))?
        .label("sessions")
        .legend(legend(SESSIONS));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .label_font(("sans-serif", 16))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

fn draw_distribution<DB: DrawingBackend>(
    report: &Report,
    area: &DrawingArea<DB, Shift>,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let series: Vec<(&str, RGBColor, &Latency)> = [
        ("latency", P99, report.latency_ms.as_ref()),
        ("connect", CONNECT, report.connect_ms.as_ref()),
    ]
    .into_iter()
    .filter_map(|(n, c, l)| l.map(|l| (n, c, l)))
    .collect();
    // As many decades as the finest percentile measured, 2 (99 %) at least.
    let x_end = series
        .iter()
        .flat_map(|(_, _, l)| l.distribution.iter())
        .filter(|(p, _)| *p < 100.0)
        .map(|(p, _)| hdr_x(*p, MAX_DECADES))
        .fold(2.0, f64::max)
        .ceil()
        .min(MAX_DECADES);
    let y_max = axis_max(
        series
            .iter()
            .flat_map(|(_, _, l)| l.distribution.iter().map(|(_, v)| *v).chain([l.max])),
    );
    // No right axis, but the same plot width as the panel above.
    let mut chart = ChartBuilder::on(area)
        .caption("latency by percentile", ("sans-serif", 26))
        .margin(15)
        .margin_right(15 + 75)
        .x_label_area_size(50)
        .y_label_area_size(75)
        .build_cartesian_2d(0f64..x_end, 0f64..y_max)?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("latency (ms)")
        .x_labels(x_end as usize + 1)
        .x_label_formatter(&|x| percentile_label(*x))
        .label_style(("sans-serif", 15))
        .axis_desc_style(("sans-serif", 17))
        .draw()?;
    if series.is_empty() {
        area.draw(&Text::new(
            "no latency samples",
            (SIZE.0 as i32 / 2 - 90, 200),
            ("sans-serif", 20),
        ))?;
        return Ok(());
    }
    for (name, color, latency) in series {
        let points: Vec<(f64, f64)> = latency
            .distribution
            .iter()
            .map(|&(p, v)| (hdr_x(p, x_end), v))
            .collect();
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?
            .label(name)
            .legend(legend(color));
        chart.draw_series(
            points
                .into_iter()
                .map(|p| Circle::new(p, 3, color.filled())),
        )?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .label_font(("sans-serif", 16))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

/// A bitmap backend that draws its text with `ab_glyph` from a font read at run time, so PNG
/// plots need neither fontconfig nor a C library. Everything but text goes to the bitmap.
struct GlyphBackend<'a> {
    inner: BitMapBackend<'a>,
    font: FontVec,
}

/// A laid-out line of text: its glyphs and its size in pixels.
struct Layout {
    glyphs: Vec<ab_glyph::Glyph>,
    width: f32,
    height: f32,
}

impl GlyphBackend<'_> {
    fn layout(&self, text: &str, size: f64) -> Layout {
        // plotters sizes text so that the em is `size / 1.24` pixels (as its SVG backend
        // writes `font-size`); ab_glyph scales by ascent - descent.
        let em = size as f32 / 1.24;
        let units = self.font.units_per_em().unwrap_or(1000.0);
        let scale = PxScale::from(em * self.font.height_unscaled() / units);
        let font = self.font.as_scaled(scale);
        let mut glyphs = Vec::with_capacity(text.len());
        let mut caret = 0.0f32;
        let mut previous = None;
        for c in text.chars() {
            let id = font.glyph_id(c);
            if let Some(p) = previous {
                caret += font.kern(p, id);
            }
            glyphs.push(id.with_scale_and_position(scale, point(caret, font.ascent())));
            caret += font.h_advance(id);
            previous = Some(id);
        }
        Layout {
            glyphs,
            width: caret,
            height: font.ascent() - font.descent(),
        }
    }
}

type BitMapError = <BitMapBackend<'static> as DrawingBackend>::ErrorType;

impl DrawingBackend for GlyphBackend<'_> {
    type ErrorType = BitMapError;

    fn get_size(&self) -> (u32, u32) {
        self.inner.get_size()
    }

    fn ensure_prepared(&mut self) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.inner.ensure_prepared()
    }

    fn present(&mut self) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.inner.present()
    }

    fn draw_pixel(
        &mut self,
        point: BackendCoord,
        color: BackendColor,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.inner.draw_pixel(point, color)
    }

    fn draw_line<S: plotters_backend::BackendStyle>(
        &mut self,
        from: BackendCoord,
        to: BackendCoord,
        style: &S,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.inner.draw_line(from, to, style)
    }

    fn draw_rect<S: plotters_backend::BackendStyle>(
        &mut self,
        upper_left: BackendCoord,
        bottom_right: BackendCoord,
        style: &S,
        fill: bool,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.inner.draw_rect(upper_left, bottom_right, style, fill)
    }

    fn draw_path<S: plotters_backend::BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        path: I,
        style: &S,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.inner.draw_path(path, style)
    }

    fn draw_circle<S: plotters_backend::BackendStyle>(
        &mut self,
        center: BackendCoord,
        radius: u32,
        style: &S,
        fill: bool,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.inner.draw_circle(center, radius, style, fill)
    }

    fn fill_polygon<S: plotters_backend::BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        vert: I,
        style: &S,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.inner.fill_polygon(vert, style)
    }

    fn blit_bitmap(
        &mut self,
        pos: BackendCoord,
        size: (u32, u32),
        src: &[u8],
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.inner.blit_bitmap(pos, size, src)
    }

    fn estimate_text_size<TStyle: BackendTextStyle>(
        &self,
        text: &str,
        style: &TStyle,
    ) -> Result<(u32, u32), DrawingErrorKind<Self::ErrorType>> {
        let layout = self.layout(text, style.size());
        Ok((layout.width.ceil() as u32, layout.height.ceil() as u32))
    }

    fn draw_text<TStyle: BackendTextStyle>(
        &mut self,
        text: &str,
        style: &TStyle,
        pos: BackendCoord,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        let color = style.color();
        if color.alpha == 0.0 {
            return Ok(());
        }
        let layout = self.layout(text, style.size());
        let (width, height) = (layout.width.round() as i32, layout.height.round() as i32);
        let dx = match style.anchor().h_pos {
            HPos::Left => 0,
            HPos::Right => -width,
            HPos::Center => -width / 2,
        };
        let dy = match style.anchor().v_pos {
            VPos::Top => 0,
            VPos::Center => -height / 2,
            VPos::Bottom => -height,
        };
        let transform = style.transform();
        let mut pixels = Vec::new();
        for glyph in layout.glyphs {
            let Some(outline) = self.font.outline_glyph(glyph) else {
                continue;
            };
            let bounds = outline.px_bounds();
            outline.draw(|x, y, coverage| {
                if coverage > 0.0 {
                    let gx = bounds.min.x as i32 + x as i32 + dx;
                    let gy = bounds.min.y as i32 + y as i32 + dy;
                    pixels.push((transform.transform(gx, gy), coverage));
                }
            });
        }
        for ((x, y), coverage) in pixels {
            self.inner.draw_pixel(
                (pos.0 + x, pos.1 + y),
                BackendColor {
                    alpha: color.alpha * f64::from(coverage.min(1.0)),
                    rgb: color.rgb,
                },
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::testdata::sample_report;

    /// A file in a directory of its own, removed when the guard drops.
    struct Temp(PathBuf);

    impl Drop for Temp {
        fn drop(&mut self) {
            if let Some(dir) = self.0.parent() {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }

    impl AsRef<Path> for Temp {
        fn as_ref(&self) -> &Path {
            &self.0
        }
    }

    impl std::ops::Deref for Temp {
        type Target = Path;

        fn deref(&self) -> &Path {
            &self.0
        }
    }

    fn temp(name: &str) -> Temp {
        let dir = std::env::temp_dir().join(format!("corral-plot-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Temp(dir.join(name))
    }

    #[test]
    fn svg_has_both_panels_and_every_series() {
        let svg = sample_report().plot_svg().unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..100]);
        for text in [
            "chat: latency over time",
            "latency by percentile",
            ">\np50\n<",
            ">\np99\n<",
            ">\nsessions\n<",
            ">\nlatency\n<",
            ">\nconnect\n<",
            "percentile",
            "99.9%",
            "<polyline",
        ] {
            assert!(svg.contains(text), "no {text:?} in the SVG");
        }
        let path = temp("plot.svg");
        sample_report().plot(&path).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), svg);
    }

    #[test]
    fn svg_of_an_empty_report() {
        let svg = Report::new("connect").plot_svg().unwrap();
        assert!(svg.contains("no timeline samples"));
        assert!(svg.contains("no latency samples"));
    }

    #[test]
    fn png_is_drawn_when_a_font_is_found() {
        // scripts/setup --test installs fonts-dejavu-core.
        let fonts = font_candidates();
        if let Err(e) = load_font(&fonts) {
            panic!("{e}");
        }
        let path = temp("plot.png");
        sample_report().plot(&path).unwrap();
        let png = std::fs::read(&path).unwrap();
        assert!(png.len() > 10_000, "{} bytes", png.len());
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        let empty = temp("empty.png");
        Report::new("connect").plot(&empty).unwrap();
        assert!(std::fs::metadata(&empty).unwrap().len() > 5_000);
    }

    #[test]
    fn glyph_backend_draws_text_where_asked() {
        let Ok(font) = load_font(&font_candidates()) else {
            eprintln!("no system font: text drawing not tested");
            return;
        };
        let (w, h) = (200u32, 60u32);
        let mut buffer = vec![255u8; (w * h * 3) as usize];
        {
            let mut backend = GlyphBackend {
                inner: BitMapBackend::with_buffer(&mut buffer, (w, h)),
                font,
            };
            let style = TextStyle::from(("sans-serif", 30).into_font());
            let (tw, th) = backend.estimate_text_size("p99", &style).unwrap();
            assert!(
                (30..90).contains(&tw) && (15..45).contains(&th),
                "{tw}x{th}"
            );
            backend.draw_text("p99", &style, (10, 10)).unwrap();
            backend.present().unwrap();
        }
        // Dark pixels, all within the text's box right of and below (10, 10).
        let dark: Vec<(u32, u32)> = (0..w * h)
            .filter(|i| buffer[(*i * 3) as usize] < 128)
            .map(|i| (i % w, i / w))
            .collect();
        assert!(dark.len() > 50, "{} dark pixels", dark.len());
        assert!(
            dark.iter()
                .all(|&(x, y)| (10..100).contains(&x) && (10..50).contains(&y))
        );
    }

    #[test]
    fn png_without_a_font_says_to_use_svg() {
        let path = temp("nofont.png");
        let err = sample_report()
            .plot_png(&path, &[PathBuf::from("/nonexistent/font.ttf")])
            .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("no"), "{msg}");
        assert!(msg.contains("/nonexistent/font.ttf"), "{msg}");
        assert!(msg.contains(".svg"), "{msg}");
        assert!(msg.contains(FONT_ENV), "{msg}");
        assert!(!path.exists());
        // A file that is not a font is named as unusable.
        let bogus = temp("bogus.ttf");
        std::fs::write(&bogus, b"not a font").unwrap();
        let msg = sample_report()
            .plot_png(&path, &[bogus.to_path_buf()])
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains(&format!("unusable: {}", bogus.display())),
            "{msg}"
        );
    }

    #[test]
    fn unknown_extensions_are_refused() {
        let err = sample_report().plot(Path::new("plot.jpg")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "plot plot.jpg: unknown plot format: name the file .svg or .png"
        );
        assert_eq!(PlotFormat::of(Path::new("A.SVG")).unwrap(), PlotFormat::Svg);
    }

    #[test]
    fn hdr_axis() {
        assert_eq!(hdr_x(0.0, 4.0), 0.0);
        assert!((hdr_x(90.0, 4.0) - 1.0).abs() < 1e-9);
        assert!((hdr_x(99.9, 4.0) - 3.0).abs() < 1e-9);
        assert_eq!(hdr_x(100.0, 4.0), 4.0);
        assert_eq!(hdr_x(99.9999, 4.0), 4.0);
        let labels: Vec<String> = (0..5).map(|x| percentile_label(f64::from(x))).collect();
        assert_eq!(labels, ["0%", "90%", "99%", "99.9%", "99.99%"]);
    }
}
