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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_rounded_and_grouped_by_thousands() {
        assert_eq!(rate_str(999.4), "999");
        assert_eq!(rate_str(1_000.0), "1,000");
        assert_eq!(rate_str(1_234_567.5), "1,234,568");
    }

    #[test]
    fn medians_skip_what_is_not_a_number_and_split_even_counts_as_documented() {
        let values = [4.0, f64::NAN, 1.0, 3.0, f64::INFINITY, 2.0];
        assert_eq!(median_f64(values.into_iter()), Some(2.5));
        assert_eq!(median_f64([5.0, 1.0, 3.0].into_iter()), Some(3.0));
        assert_eq!(median_f64(std::iter::empty()), None);
        assert_eq!(median(&[4, 1, 3, 2]), Some(3));
        assert_eq!(median::<u32>(&[]), None);
    }

    #[test]
    fn a_run_without_a_duration_shows_what_it_was_given() {
        assert_eq!(secs_or(Some(Duration::from_millis(6_340)), "-"), "6.3 s");
        assert_eq!(secs_or(None, "did not finish"), "did not finish");
        assert_eq!(flags(&[]), "(defaults)");
    }
}
