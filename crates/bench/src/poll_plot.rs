//! `switchyard bench poll --plot FILE.svg`: polls per job against p95
//! delay on the log-normal workload without progress, for each strategy
//! over a range of its knob (the gap, the schedule's scale, the target),
//! with the limit at each target: a user picks a target from it.

use crate::poll::Curve;
use crate::poll_learned::{limit, simulate, Strat, Workload};
use anyhow::anyhow;
use plotters::prelude::*;
use std::path::Path;

const TARGETS: [f64; 7] = [3.0, 5.0, 7.0, 10.0, 15.0, 20.0, 30.0];
const SCALES: [f64; 5] = [0.5, 1.0, 2.0, 3.0, 5.0];

/// (polls per job, p95 delay) points of one series.
pub type Series = (String, Vec<(f64, f64)>);

fn point(runs: &[(u32, f64)]) -> (f64, f64) {
    let n = runs.len().max(1) as f64;
    let polls = runs.iter().map(|(p, _)| f64::from(*p)).sum::<f64>() / n;
    let delays = crate::poll::sorted(runs.iter().map(|(_, d)| *d).collect());
    (polls, crate::poll::pct(&delays, 0.95))
}

/// The series drawn, computed on `jobs` jobs.
pub fn series(jobs: usize, seed: u64) -> Vec<Series> {
    let w = Workload::LogNormal;
    let all = w.jobs(jobs, seed);
    let range = w.counted(jobs);
    let durs: Vec<f64> = all[range.clone()].iter().map(|(_, d)| *d).collect();
    let curve = Curve::Ulazai;
    let of = |s: Strat| point(&simulate(&s, curve, &all, seed)[range.clone()]);
    vec![
        (
            "fixed gap (= target)".into(),
            TARGETS.iter().map(|t| of(Strat::Fixed(*t))).collect(),
        ),
        (
            "seed 3/5/8/10 s, scaled x0.5..x5".into(),
            SCALES.iter().map(|f| of(Strat::Seed(*f))).collect(),
        ),
        (
            "learned, at each target".into(),
            TARGETS.iter().map(|t| of(Strat::Learned(*t))).collect(),
        ),
        (
            "limit (start + fixed gap)".into(),
            TARGETS.iter().map(|t| (limit(&durs, *t).0, *t)).collect(),
        ),
    ]
}

pub fn plot(path: &Path, jobs: usize, seed: u64) -> anyhow::Result<()> {
    let all = series(jobs, seed);
    let err = |e: &dyn std::fmt::Display| anyhow!("drawing {}: {e}", path.display());
    let root = SVGBackend::new(path, (900, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "polls per job vs p95 delay, log-normal jobs (median 90 s), no progress",
            ("sans-serif", 20),
        )
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(55)
        .build_cartesian_2d(0f64..30f64, 0f64..65f64)
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc("polls per job")
        .y_desc("p95 delay from finish to known (s)")
        .draw()
        .map_err(|e| err(&e))?;
    let colors = [RED, BLUE, GREEN, BLACK];
    for ((name, points), color) in all.into_iter().zip(colors) {
        let points: Vec<(f64, f64)> = points
            .into_iter()
            .filter(|(x, y)| *x <= 30.0 && *y <= 65.0)
            .collect();
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
            .map_err(|e| err(&e))?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        chart
            .draw_series(points.iter().map(|p| Circle::new(*p, 4, color.filled())))
            .map_err(|e| err(&e))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plot_is_an_svg_with_every_series() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("poll.svg");
        plot(&path, 200, 1).expect("plot");
        let svg = std::fs::read_to_string(&path).expect("read");
        assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(80)]);
        for name in ["fixed gap", "learned", "limit"] {
            assert!(svg.contains(name), "{name}");
        }
    }
}
