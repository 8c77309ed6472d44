//! Just enough of the Prometheus text format to read samples.

use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

#[derive(Debug, Clone, Default)]
pub struct Metrics {
    pub samples: Vec<Sample>,
    pub text: String,
}

impl Metrics {
    pub fn parse(text: &str) -> Self {
        let samples = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .filter_map(parse_line)
            .collect();
        Self {
            samples,
            text: text.to_string(),
        }
    }

    /// Samples named `name` whose labels include every pair in `labels`.
    pub fn find<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = &'a Sample> {
        self.samples.iter().filter(move |s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
    }

    /// Sum of the matching samples (0 when none match).
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.find(name, labels).map(|s| s.value).sum()
    }
}

fn parse_line(line: &str) -> Option<Sample> {
    let Some(brace) = line.find('{') else {
        let (n, v) = line.split_once(' ')?;
        return Some(Sample {
            name: n.to_string(),
            labels: BTreeMap::new(),
            value: parse_value(v)?,
        });
    };
    let mut labels = BTreeMap::new();
    let b: Vec<char> = line[brace + 1..].chars().collect();
    let mut i = 0;
    // key="value",… with \" \\ \n escapes inside values.
    loop {
        while i < b.len() && (b[i] == ',' || b[i] == ' ') {
            i += 1;
        }
        match b.get(i)? {
            '}' => {
                i += 1;
                break;
            }
            _ => {
                let key_start = i;
                while i < b.len() && b[i] != '=' {
                    i += 1;
                }
                let key: String = b[key_start..i].iter().collect();
                i += 1;
                if b.get(i) != Some(&'"') {
                    return None;
                }
                i += 1;
                let mut val = String::new();
                while i < b.len() && b[i] != '"' {
                    if b[i] == '\\' && i + 1 < b.len() {
                        i += 1;
                        val.push(if b[i] == 'n' { '\n' } else { b[i] });
                    } else {
                        val.push(b[i]);
                    }
                    i += 1;
                }
                i += 1;
                labels.insert(key.trim().to_string(), val);
            }
        }
    }
    let rest: String = b.get(i..)?.iter().collect();
    Some(Sample {
        name: line[..brace].to_string(),
        labels,
        value: parse_value(&rest)?,
    })
}

fn parse_value(v: &str) -> Option<f64> {
    match v.split_whitespace().next()? {
        "+Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        s => s.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_samples() {
        let m = Metrics::parse(
            "# HELP x y\n# TYPE trigate_connections_total counter\n\
             trigate_connections_total{destination=\"up\",outcome=\"ok\",workload=\"pod-a\"} 2\n\
             trigate_connections_total{destination=\"up\",outcome=\"io_error\",workload=\"pod-b\"} 1\n\
             trigate_workloads_enrolled 3\n\
             odd{l=\"a\\\"b,c}\"} 4\n",
        );
        assert_eq!(m.sum("trigate_connections_total", &[]), 3.0);
        assert_eq!(
            m.sum("trigate_connections_total", &[("workload", "pod-a")]),
            2.0
        );
        assert_eq!(m.sum("trigate_workloads_enrolled", &[]), 3.0);
        assert_eq!(m.sum("odd", &[("l", "a\"b,c}")]), 4.0);
    }
}
