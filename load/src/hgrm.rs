//! Histogram files: HdrHistogram's percentile-distribution text (`.hgrm`)
//! and an SVG percentile plot of every phase.
//!
//! Owns: the `.hgrm` layout — the text HdrHistogram's
//! `outputPercentileDistribution` prints (values in microseconds, scaling
//! ratio 1, five ticks per half distance), which HdrHistogram's plotter and
//! wrk2 tooling read — and the plot. Does not measure anything.

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::Path;

use hdrhistogram::Histogram;
use plotters::prelude::*;

use super::stats::{Phase, Stats, SIGFIG};

/// Percentile steps per halving of the distance to 100%.
const TICKS_PER_HALF_DISTANCE: u32 = 5;

/// Writes `<phase>.hgrm` for every phase and `percentiles.svg` into `dir`.
pub fn write_dir(dir: &Path, stats: &Stats) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    for phase in Phase::ALL {
        let file = File::create(dir.join(format!("{}.hgrm", phase.name())))?;
        let mut out = BufWriter::new(file);
        write_hgrm(stats.histogram(phase), &mut out)?;
        out.flush()?;
    }
    write_svg(&dir.join("percentiles.svg"), stats)
}

/// Writes `h` in the percentile-distribution text format.
pub fn write_hgrm(h: &Histogram<u64>, out: &mut impl Write) -> io::Result<()> {
    let p = usize::from(SIGFIG);
    writeln!(
        out,
        "{:>12} {:>14} {:>10} {:>14}\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    )?;
    let mut total = 0u64;
    for step in h.iter_quantiles(TICKS_PER_HALF_DISTANCE) {
        total += step.count_since_last_iteration();
        let value = step.value_iterated_to() as f64;
        let q = step.quantile_iterated_to();
        if q < 1.0 {
            let inverted = 1.0 / (1.0 - q);
            writeln!(out, "{value:>12.p$} {q:>2.12} {total:>10} {inverted:>14.2}")?;
        } else {
            writeln!(out, "{value:>12.p$} {q:>2.12} {total:>10}")?;
        }
    }
    let (mean, stdev, max) = (h.mean(), h.stdev(), h.max() as f64);
    writeln!(
        out,
        "#[Mean    = {mean:>12.p$}, StdDeviation   = {stdev:>12.p$}]"
    )?;
    writeln!(
        out,
        "#[Max     = {max:>12.p$}, Total count    = {:>12}]",
        h.len()
    )?;
    writeln!(
        out,
        "#[Buckets = {:>12}, SubBuckets     = {:>12}]",
        h.buckets(),
        sub_buckets(SIGFIG)
    )
}

/// Sub-buckets per bucket for a histogram with lowest value 1: the power of
/// two that resolves `2 × 10^sigfig` at unit resolution.
fn sub_buckets(sigfig: u8) -> u64 {
    (2 * 10u64.pow(u32::from(sigfig))).next_power_of_two()
}

/// Points of a percentile plot: x = 1/(1-q), y = latency in µs.
fn plot_points(h: &Histogram<u64>) -> Vec<(f64, f64)> {
    let last = (1.0 - 1.0 / h.len().max(1) as f64).max(0.5);
    let mut points: Vec<(f64, f64)> = h
        .iter_quantiles(TICKS_PER_HALF_DISTANCE)
        .map(|s| (s.quantile_iterated_to().min(last), s.value_iterated_to()))
        .map(|(q, v)| (1.0 / (1.0 - q), v.max(1) as f64))
        .collect();
    points.dedup_by(|a, b| a.0 <= b.0 && a.1 <= b.1);
    points
}

/// Draws every non-empty phase's percentile curve, log-log.
fn write_svg(path: &Path, stats: &Stats) -> io::Result<()> {
    draw(path, stats).map_err(|e| io::Error::other(format!("plotting {}: {e}", path.display())))
}

fn draw(path: &Path, stats: &Stats) -> Result<(), Box<dyn std::error::Error>> {
    let curves: Vec<(Phase, Vec<(f64, f64)>)> = Phase::ALL
        .iter()
        .filter(|&&p| !stats.histogram(p).is_empty())
        .map(|&p| (p, plot_points(stats.histogram(p))))
        .collect();
    let x_max = curves
        .iter()
        .flat_map(|c| &c.1)
        .map(|p| p.0)
        .fold(10.0, f64::max);
    let y_max = curves
        .iter()
        .flat_map(|c| &c.1)
        .map(|p| p.1)
        .fold(10.0, f64::max);
    let root = SVGBackend::new(path, (960, 600)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption("mxgate-load latency by percentile", ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d((1f64..x_max).log_scale(), (1f64..y_max * 2.0).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("latency (µs)")
        .x_label_formatter(&|x| format!("{}%", 100.0 * (1.0 - 1.0 / x)))
        .y_label_formatter(&|y| format!("{y:.0}"))
        .draw()?;
    for (i, (phase, points)) in curves.into_iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))?
            .label(phase.name())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .border_style(BLACK)
        .background_style(WHITE)
        .draw()?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Histogram<u64> {
        let mut h = Histogram::new_with_bounds(1, 3_600_000_000, SIGFIG).unwrap();
        for v in 1..=1000u64 {
            h.record(v * 10).unwrap();
        }
        h
    }

    #[test]
    fn hgrm_has_header_rows_and_footer() {
        let mut text = Vec::new();
        write_hgrm(&sample(), &mut text).unwrap();
        let text = String::from_utf8(text).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "       Value     Percentile TotalCount 1/(1-Percentile)"
        );
        assert_eq!(lines[1], "");
        let rows = &lines[2..lines.len() - 3];
        assert!(rows.len() > 20);
        for row in &rows[..rows.len() - 1] {
            let cols: Vec<&str> = row.split_whitespace().collect();
            assert_eq!(cols.len(), 4, "{row}");
            let q: f64 = cols[1].parse().unwrap();
            assert_eq!(cols[1].split('.').nth(1).unwrap().len(), 12, "{row}");
            assert!(q < 1.0);
            assert_eq!(cols[0].split('.').nth(1).unwrap().len(), 3, "{row}");
        }
        let last: Vec<&str> = rows[rows.len() - 1].split_whitespace().collect();
        assert_eq!(last, ["10007.000", "1.000000000000", "1000"]);
        assert_eq!(rows[0].split_whitespace().nth(2), Some("1"));
        assert!(lines[lines.len() - 3].starts_with("#[Mean    =     5005."));
        assert_eq!(
            lines[lines.len() - 2],
            "#[Max     =    10007.000, Total count    =         1000]"
        );
        assert!(lines[lines.len() - 1].ends_with("SubBuckets     =         2048]"));
    }

    #[test]
    fn hgrm_counts_rise_to_the_total() {
        let mut text = Vec::new();
        write_hgrm(&sample(), &mut text).unwrap();
        let text = String::from_utf8(text).unwrap();
        let counts: Vec<u64> = text
            .lines()
            .skip(2)
            .take_while(|l| !l.starts_with('#'))
            .map(|l| l.split_whitespace().nth(2).unwrap().parse().unwrap())
            .collect();
        assert!(counts.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(counts.last(), Some(&1000));
    }

    #[test]
    fn directory_gets_every_phase_and_a_plot() {
        let dir = tempfile::tempdir().unwrap();
        let mut stats = Stats::default();
        for v in [5, 50, 500, 5000] {
            stats.record(Phase::Rcpt, v);
            stats.record(Phase::Session, v * 10);
        }
        write_dir(dir.path(), &stats).unwrap();
        for phase in Phase::ALL {
            assert!(dir.path().join(format!("{}.hgrm", phase.name())).exists());
        }
        let svg = fs::read_to_string(dir.path().join("percentiles.svg")).unwrap();
        assert!(svg.starts_with("<svg"));
        assert!(svg.contains("rcpt") && svg.contains("session"));
        assert!(svg.contains("<polyline"));
    }
}
