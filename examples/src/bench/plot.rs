//! `execd bench --plot DIR`: the scaling curves of every server measured in the run, one SVG
//! per curve, servers side by side, plus `scaling.json` with the numbers.
//!
//! Drawn with plotters' SVG backend alone: no bitmap backend and no font library (text goes
//! into the SVG as `<text>` for the viewer to render), so nothing is read from the system.

use std::path::Path;

use anyhow::Context as _;
use plotters::prelude::*;

use super::scaling::Scaling;

/// Series colours, in the order of the servers.
const COLOURS: [RGBColor; 4] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0x94, 0x67, 0xbd),
];

/// One chart: a file, a title, axis names, a log-scaled x axis or not, and per server the
/// series to draw (name suffix, points).
struct Chart<'a> {
    file: &'a str,
    title: &'a str,
    x_label: &'a str,
    y_label: &'a str,
    series: Vec<(String, Vec<(f64, f64)>)>,
}

/// Writes `scaling.json` and the SVGs for `runs` into `dir` (created if missing).
pub(crate) fn write(dir: &Path, runs: &[Scaling]) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let json = serde_json::to_string_pretty(runs)?;
    std::fs::write(dir.join("scaling.json"), json)?;
    let each = |f: fn(&Scaling) -> &Vec<(f64, f64)>, suffix: &str| {
        runs.iter()
            .filter(|r| !f(r).is_empty())
            .map(|r| (format!("{}{suffix}", r.server), f(r).clone()))
            .collect::<Vec<_>>()
    };
    let mut echo = each(|r| &r.echo_p50, " p50");
    echo.extend(each(|r| &r.echo_p99, " p99"));
    let charts = [
        Chart {
            file: "throughput.svg",
            title: "stdout throughput vs concurrent streams",
            x_label: "concurrent streams (one session each)",
            y_label: "MiB/s (all streams)",
            series: each(|r| &r.throughput, ""),
        },
        Chart {
            file: "echo.svg",
            title: "echo latency while streams run",
            x_label: "streams running (cat /dev/zero)",
            y_label: "write -> echoed output, ms",
            series: echo,
        },
        Chart {
            file: "spawn_live.svg",
            title: "start /bin/true -> closed p50 vs live processes",
            x_label: "live processes (sleep 600)",
            y_label: "ms",
            series: each(|r| &r.spawn_closed_p50, ""),
        },
        Chart {
            file: "rss_processes.svg",
            title: "server RSS vs live processes",
            x_label: "live processes (sleep 600)",
            y_label: "RSS, MiB",
            series: each(|r| &r.rss_processes, ""),
        },
        Chart {
            file: "rss_sessions.svg",
            title: "server RSS vs idle sessions",
            x_label: "idle sessions",
            y_label: "RSS, MiB",
            series: each(|r| &r.rss_sessions, ""),
        },
    ];
    for chart in &charts {
        let path = dir.join(chart.file);
        draw(&path, chart).with_context(|| format!("cannot draw {}", path.display()))?;
    }
    Ok(())
}

fn draw(path: &Path, chart: &Chart<'_>) -> anyhow::Result<()> {
    let points = chart.series.iter().flat_map(|(_, p)| p.iter());
    let x_max = points.clone().map(|p| p.0).fold(1.0, f64::max);
    let y_max = points.map(|p| p.1).fold(0.0, f64::max).max(1e-3) * 1.15;
    let root = SVGBackend::new(path, (720, 440)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_error)?;
    let mut ctx = ChartBuilder::on(&root)
        .caption(chart.title, ("sans-serif", 20))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d(0.0..x_max * 1.05, 0.0..y_max)
        .map_err(plot_error)?;
    ctx.configure_mesh()
        .x_desc(chart.x_label)
        .y_desc(chart.y_label)
        .draw()
        .map_err(plot_error)?;
    for (i, (name, pts)) in chart.series.iter().enumerate() {
        let colour = COLOURS.get(i % COLOURS.len()).copied().unwrap_or(BLACK);
        // p99 series dashed-looking: thinner.
        let width = if name.ends_with("p99") { 1 } else { 2 };
        ctx.draw_series(LineSeries::new(
            pts.iter().copied(),
            colour.stroke_width(width),
        ))
        .map_err(plot_error)?
        .label(name.as_str())
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour));
        ctx.draw_series(
            pts.iter()
                .map(|&(x, y)| Circle::new((x, y), 3, colour.filled())),
        )
        .map_err(plot_error)?;
    }
    ctx.configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(plot_error)?;
    root.present().map_err(plot_error)?;
    Ok(())
}

fn plot_error(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("{e}")
}
