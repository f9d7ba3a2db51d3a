//! Grafana's server-side expressions that alert rules chain after a query: reduce and
//! threshold (`pkg/expr`, types `reduce` and `threshold`), evaluated per series the way
//! Grafana does, so a test can tell whether a rule's condition fires.

use std::collections::BTreeMap;

use crate::frames::Series;

/// How a reduce treats values that are not numbers (NULL, NaN, ±Inf): `mode` of the reduce
/// expression's settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    /// "" (strict): any non-number makes the result NaN.
    Strict,
    /// "dropNN": non-numbers are dropped first.
    DropNonNumbers,
    /// "replaceNN": non-numbers are replaced by the value.
    Replace(f64),
}

/// One number per series: Grafana's reducers `sum`, `mean`, `min`, `max`, `count`, `last`,
/// `median`. An empty series gives NaN, except `sum` and `count` (0).
pub fn reduce(reducer: &str, mode: Mode, series: &Series) -> Result<f64, String> {
    let mut values = Vec::with_capacity(series.points.len());
    for (_, v) in &series.points {
        let v = v.unwrap_or(f64::NAN);
        if v.is_finite() {
            values.push(v);
        } else {
            match mode {
                Mode::Strict => values.push(f64::NAN),
                Mode::DropNonNumbers => {}
                Mode::Replace(r) => values.push(r),
            }
        }
    }
    let nan_if_empty = |f: &dyn Fn(&[f64]) -> f64| if values.is_empty() { f64::NAN } else { f(&values) };
    Ok(match reducer {
        "sum" => values.iter().sum(),
        "count" => values.len() as f64,
        "mean" => nan_if_empty(&|v| v.iter().sum::<f64>() / v.len() as f64),
        "min" => nan_if_empty(&|v| v.iter().copied().fold(f64::INFINITY, f64::min)),
        "max" => nan_if_empty(&|v| v.iter().copied().fold(f64::NEG_INFINITY, f64::max)),
        "last" => nan_if_empty(&|v| v[v.len() - 1]),
        "median" => nan_if_empty(&|v| {
            let mut s = v.to_vec();
            s.sort_by(f64::total_cmp);
            let n = s.len();
            if n % 2 == 1 {
                s[n / 2]
            } else {
                (s[n / 2 - 1] + s[n / 2]) / 2.0
            }
        }),
        other => return Err(format!("reducer {other:?} is not reproduced")),
    })
    .map(|r: f64| if mode == Mode::Strict && values.iter().any(|v| v.is_nan()) { f64::NAN } else { r })
}

/// A threshold expression: 1 when the value passes, else 0 (NaN never passes).
pub fn threshold(evaluator: &str, params: &[f64], v: f64) -> Result<bool, String> {
    let p = |i: usize| params.get(i).copied().ok_or_else(|| format!("{evaluator} needs {} parameters", i + 1));
    Ok(match evaluator {
        "gt" => v > p(0)?,
        "lt" => v < p(0)?,
        "within_range" => v > p(0)? && v < p(1)?,
        "outside_range" => v < p(0)? || v > p(1)?,
        other => return Err(format!("evaluator {other:?} is not reproduced")),
    })
}

/// Results of a rule's refIds: each is a list of (labels, numbers) per series instance.
pub type Instances = Vec<(BTreeMap<String, String>, f64)>;

/// Evaluates one expression node (a rule's `data[i].model` with `type: reduce|threshold`)
/// over the results computed so far.
pub fn evaluate(
    model: &serde_json::Value,
    series: &BTreeMap<String, Vec<Series>>,
    numbers: &BTreeMap<String, Instances>,
) -> Result<Instances, String> {
    let kind = model["type"].as_str().ok_or("expression without type")?;
    let input = model["expression"].as_str().ok_or("expression without input")?.trim_start_matches('$');
    match kind {
        "reduce" => {
            let reducer = model["reducer"].as_str().ok_or("reduce without reducer")?;
            let mode = match model["settings"]["mode"].as_str().unwrap_or("") {
                "" => Mode::Strict,
                "dropNN" => Mode::DropNonNumbers,
                "replaceNN" => Mode::Replace(model["settings"]["replaceWithValue"].as_f64().unwrap_or(0.0)),
                other => return Err(format!("reduce mode {other:?} is not reproduced")),
            };
            let input = series.get(input).ok_or_else(|| format!("reduce of unknown query {input}"))?;
            input.iter().map(|s| Ok((s.labels.clone(), reduce(reducer, mode, s)?))).collect()
        }
        "threshold" => {
            let cond = &model["conditions"][0]["evaluator"];
            let evaluator = cond["type"].as_str().ok_or("threshold without evaluator type")?;
            let params: Vec<f64> = cond["params"]
                .as_array()
                .ok_or("threshold without params")?
                .iter()
                .filter_map(|p| p.as_f64())
                .collect();
            let input = numbers.get(input).ok_or_else(|| format!("threshold of unknown expression {input}"))?;
            input
                .iter()
                .map(|(l, v)| Ok((l.clone(), if threshold(evaluator, &params, *v)? { 1.0 } else { 0.0 })))
                .collect()
        }
        other => Err(format!("expression type {other:?} is not reproduced")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(values: &[Option<f64>]) -> Series {
        Series {
            name: "v".into(),
            labels: BTreeMap::new(),
            points: values.iter().enumerate().map(|(i, v)| (i as f64 * 60.0, *v)).collect(),
        }
    }

    #[test]
    fn reducers_follow_grafana() {
        let s = series(&[Some(1.0), Some(4.0), Some(2.0)]);
        assert_eq!(reduce("last", Mode::Strict, &s).unwrap(), 2.0);
        assert_eq!(reduce("max", Mode::Strict, &s).unwrap(), 4.0);
        assert_eq!(reduce("min", Mode::Strict, &s).unwrap(), 1.0);
        assert_eq!(reduce("sum", Mode::Strict, &s).unwrap(), 7.0);
        assert_eq!(reduce("count", Mode::Strict, &s).unwrap(), 3.0);
        assert_eq!(reduce("median", Mode::Strict, &s).unwrap(), 2.0);
    }

    #[test]
    fn null_values_poison_strict_reduces_and_are_dropped_or_replaced_otherwise() {
        let s = series(&[Some(1.0), None, Some(3.0)]);
        assert!(reduce("max", Mode::Strict, &s).unwrap().is_nan());
        assert_eq!(reduce("max", Mode::DropNonNumbers, &s).unwrap(), 3.0);
        assert_eq!(reduce("last", Mode::Replace(9.0), &series(&[Some(1.0), None])).unwrap(), 9.0);
    }

    #[test]
    fn empty_series_reduce_to_nan_except_sum_and_count() {
        let s = series(&[]);
        assert!(reduce("last", Mode::DropNonNumbers, &s).unwrap().is_nan());
        assert_eq!(reduce("count", Mode::DropNonNumbers, &s).unwrap(), 0.0);
        assert_eq!(reduce("sum", Mode::DropNonNumbers, &s).unwrap(), 0.0);
    }

    #[test]
    fn thresholds_compare_and_nan_never_passes() {
        assert!(threshold("gt", &[0.0], 0.1).unwrap());
        assert!(!threshold("gt", &[0.0], 0.0).unwrap());
        assert!(!threshold("gt", &[0.0], f64::NAN).unwrap());
        assert!(threshold("outside_range", &[1.0, 2.0], 3.0).unwrap());
        assert!(threshold("within_range", &[1.0, 2.0], 1.5).unwrap());
        assert!(threshold("lt", &[1.0], 0.5).unwrap());
        assert!(threshold("gt", &[], 1.0).is_err());
    }
}
