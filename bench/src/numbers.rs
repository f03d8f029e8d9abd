//! How the report writes numbers (rates, durations, medians) and worker flags. No I/O.

use std::time::Duration;

/// `n` things over `d`, per second.
pub fn per_second(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64().max(1e-9)
}

/// `d` as "12.3 s", or `none` when there is no duration (a run that did not finish).
pub fn secs_or(d: Option<Duration>, none: &str) -> String {
    d.map_or(none.to_owned(), |d| format!("{:.1} s", d.as_secs_f64()))
}

/// A number rounded, with thousands separators: `1,234,567`.
pub fn rate_str(r: f64) -> String {
    let r = r.round() as u64;
    let s = r.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Worker flags as shown: joined, or `(defaults)`.
pub fn flags(args: &[String]) -> String {
    if args.is_empty() {
        "(defaults)".into()
    } else {
        args.join(" ")
    }
}

/// A duration in milliseconds.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The median (the mean of the middle two for an even count).
pub fn median_f64(values: impl Iterator<Item = f64>) -> Option<f64> {
    let mut v: Vec<f64> = values.filter(|x| x.is_finite()).collect();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(v[n / 2]),
        _ => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
    }
}

/// The median (the upper of the middle two for an even count).
pub fn median<T: Copy + Ord>(v: &[T]) -> Option<T> {
    let mut v = v.to_vec();
    v.sort();
    v.get(v.len() / 2).copied()
}
