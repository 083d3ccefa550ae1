//! SVG charts for report.html, drawn with plotters: latency percentile
//! curves and lines over time.

use anyhow::Result;
use loadgen::result::LatencySummary;
use plotters::coord::Shift;
use plotters::prelude::*;

pub(crate) const CHART_SIZE: (u32, u32) = (560, 300);

/// (1/(1-p), latency in ms) points: from the serialized HDR histogram when
/// there is one, else from the summary's percentiles.
pub fn percentile_curve(l: &LatencySummary) -> Vec<(f64, f64)> {
    let ms = |us: u64| us as f64 / 1_000.0;
    if let Ok(hist) = loadgen::histogram::from_summary(l) {
        if !hist.is_empty() {
            // Beyond 1/(1-p) = count the tail is a single sample.
            let top = (hist.len() as f64).clamp(10.0, 1e6);
            let steps = 120;
            let mut points: Vec<(f64, f64)> = (0..=steps)
                .map(|i| {
                    let x = top.powf(f64::from(i) / f64::from(steps));
                    (x, ms(hist.value_at_quantile(1.0 - 1.0 / x)))
                })
                .collect();
            points.push((top, ms(hist.max())));
            return points;
        }
    }
    [
        (0.0, l.min_us),
        (0.5, l.p50_us),
        (0.9, l.p90_us),
        (0.99, l.p99_us),
        (0.999, l.p999_us),
        (0.9999, l.p9999_us),
    ]
    .into_iter()
    .map(|(p, v)| (1.0 / (1.0 - p), ms(v)))
    .collect()
}

/// `99.9%` for x = 1/(1-p) = 1000.
pub(crate) fn percentile_label(x: &f64) -> String {
    let p = (1.0 - 1.0 / x) * 100.0;
    let decimals = (x.log10().round() as i32 - 2).max(0) as usize;
    format!("{p:.decimals$}%")
}

pub(crate) type Series = (String, Vec<(f64, f64)>);

pub(crate) fn color(i: usize) -> RGBColor {
    const COLORS: [RGBColor; 8] = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(214, 39, 40),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
        RGBColor(127, 127, 127),
    ];
    COLORS[i % COLORS.len()]
}

pub(crate) fn bounds(series: &[Series]) -> Option<(f64, f64, f64)> {
    let points = series.iter().flat_map(|(_, p)| p.iter());
    let (mut x0, mut x1, mut y1) = (f64::INFINITY, f64::NEG_INFINITY, 0.0f64);
    let mut any = false;
    for &(x, y) in points {
        if x.is_finite() && y.is_finite() {
            any = true;
            x0 = x0.min(x);
            x1 = x1.max(x);
            y1 = y1.max(y);
        }
    }
    any.then_some((
        x0,
        if x1 > x0 { x1 } else { x0 + 1.0 },
        if y1 > 0.0 { y1 * 1.1 } else { 1.0 },
    ))
}

pub(crate) fn latency_chart(title: &str, series: &[Series]) -> Option<String> {
    let (_, x1, y1) = bounds(series)?;
    let mut svg = String::new();
    let drawn = (|| -> Result<(), Box<dyn std::error::Error>> {
        let root = SVGBackend::with_string(&mut svg, CHART_SIZE).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 16))
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(55)
            .build_cartesian_2d((1.0..x1.max(10.0)).log_scale(), 0.0..y1)?;
        chart
            .configure_mesh()
            .x_desc("percentile (log scale of 1/(1-p))")
            .y_desc("latency (ms)")
            .x_label_formatter(&percentile_label)
            .draw()?;
        draw_series(&mut chart, series)?;
        finish(&root)
    })();
    drawn.ok().map(|_| svg)
}

pub(crate) fn line_chart(
    title: &str,
    x_desc: &str,
    y_desc: &str,
    series: &[Series],
) -> Option<String> {
    let (x0, x1, y1) = bounds(series)?;
    let mut svg = String::new();
    let drawn = (|| -> Result<(), Box<dyn std::error::Error>> {
        let root = SVGBackend::with_string(&mut svg, CHART_SIZE).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 16))
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(65)
            .build_cartesian_2d(x0..x1, 0.0..y1)?;
        chart
            .configure_mesh()
            .x_desc(x_desc)
            .y_desc(y_desc)
            .y_label_formatter(&|y| short_number(*y))
            .draw()?;
        draw_series(&mut chart, series)?;
        finish(&root)
    })();
    drawn.ok().map(|_| svg)
}

/// `12k`, `1.5M`, `0.25`: axis labels that fit.
pub(crate) fn short_number(y: f64) -> String {
    if y.abs() >= 1e6 {
        format!("{:.1}M", y / 1e6)
    } else if y.abs() >= 1e4 {
        format!("{:.0}k", y / 1e3)
    } else if y.abs() >= 10.0 || y == 0.0 {
        format!("{y:.0}")
    } else {
        format!("{y:.2}")
    }
}

pub(crate) fn draw_series<'a, X, Y>(
    chart: &mut ChartContext<'a, SVGBackend<'a>, Cartesian2d<X, Y>>,
    series: &[Series],
) -> Result<(), Box<dyn std::error::Error>>
where
    X: Ranged<ValueType = f64>,
    Y: Ranged<ValueType = f64>,
{
    for (i, (label, points)) in series.iter().enumerate() {
        let c = color(i);
        chart
            .draw_series(LineSeries::new(points.iter().copied(), c.stroke_width(2)))?
            .label(label.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .draw()?;
    Ok(())
}

pub(crate) fn finish(
    root: &DrawingArea<SVGBackend<'_>, Shift>,
) -> Result<(), Box<dyn std::error::Error>> {
    root.present()?;
    Ok(())
}
