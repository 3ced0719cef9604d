//! SVG charts: latency percentiles per peer at the fixed rate (one proxy and mesh pairs) and CPU
//! per request under HTTP/1.1 keep-alive saturation.

use std::path::Path;

use plotters::coord::ranged1d::SegmentValue;
use plotters::prelude::*;

use super::{Report, Table};

const PERCENTILES: [&str; 4] = ["p50 ms", "p90 ms", "p99 ms", "p99.9 ms"];

/// (label, p50…p99.9) for every row of the fixed-rate tables that has them.
fn latency_lines(r: &Report) -> Vec<(String, Vec<f64>)> {
    let mut out = Vec::new();
    for (id, suffix) in [("rate", ""), ("mesh", " mesh")] {
        let Some(t) = r.tables.iter().find(|t| t.id == id) else {
            continue;
        };
        for row in &t.rows {
            let v: Option<Vec<f64>> = PERCENTILES
                .iter()
                .map(|c| t.value(&row.peer, c).filter(|x| x.is_finite()))
                .collect();
            if let Some(v) = v {
                if !(id == "mesh" && row.peer == "direct") {
                    out.push((format!("{}{suffix}", row.peer), v));
                }
            }
        }
    }
    out
}

fn cpu_bars(t: Option<&Table>) -> Vec<(String, f64)> {
    let Some(t) = t else { return Vec::new() };
    t.rows
        .iter()
        .filter_map(|row| {
            let v = t.value(&row.peer, "CPU µs/req")?;
            v.is_finite().then(|| (row.peer.clone(), v))
        })
        .collect()
}

pub fn write(r: &Report, path: &Path) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, (1200, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let (left, right) = root.split_horizontally(680);

    let lines = latency_lines(r);
    // Log scale: a tail of tens of milliseconds would flatten every sub-millisecond median.
    let all = || lines.iter().flat_map(|(_, v)| v.iter().copied());
    let ymax = all().fold(0.0f64, f64::max).max(0.01) * 1.5;
    let ymin = all()
        .fold(f64::INFINITY, f64::min)
        .min(ymax / 10.0)
        .max(0.001)
        / 1.5;
    let mut chart = ChartBuilder::on(&left)
        .caption(
            "Latency at the fixed rate (from the scheduled send)",
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(-0.2f64..3.2f64, (ymin..ymax).log_scale())
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_labels(4)
        .x_label_formatter(&|x| {
            let i = x.round();
            if (x - i).abs() < 0.01 && (0.0..4.0).contains(&i) {
                PERCENTILES[i as usize].trim_end_matches(" ms").to_string()
            } else {
                String::new()
            }
        })
        .y_desc("ms (log scale)")
        .draw()
        .map_err(err)?;
    for (i, (label, v)) in lines.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let pts: Vec<(f64, f64)> = v.iter().enumerate().map(|(x, y)| (x as f64, *y)).collect();
        chart
            .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
            .map_err(err)?
            .label(label.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2))
            });
        chart
            .draw_series(pts.iter().map(|p| Circle::new(*p, 3, color.filled())))
            .map_err(err)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;

    let bars = cpu_bars(r.tables.iter().find(|t| t.id == "http1"));
    let n = bars.len().max(1) as i32;
    let bmax = bars
        .iter()
        .map(|(_, v)| *v)
        .fold(0.0f64, f64::max)
        .max(0.001)
        * 1.15;
    let mut chart = ChartBuilder::on(&right)
        .caption(
            "CPU µs per request, HTTP/1.1 keep-alive",
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(50)
        .build_cartesian_2d((0..n).into_segmented(), 0f64..bmax)
        .map_err(err)?;
    let names: Vec<String> = bars.iter().map(|(p, _)| p.clone()).collect();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) | SegmentValue::Exact(i) => {
                names.get(*i as usize).cloned().unwrap_or_default()
            }
            SegmentValue::Last => String::new(),
        })
        .y_desc("µs")
        .draw()
        .map_err(err)?;
    chart
        .draw_series(bars.iter().enumerate().map(|(i, (_, v))| {
            let i = i as i32;
            let color = Palette99::pick(i as usize).to_rgba();
            let mut r = Rectangle::new(
                [
                    (SegmentValue::Exact(i), 0.0),
                    (SegmentValue::Exact(i + 1), *v),
                ],
                color.filled(),
            );
            r.set_margin(0, 0, 12, 12);
            r
        }))
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}

fn err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow::anyhow!("plotting: {e:?}")
}
