//! What the controller sees of the cluster: the member table one reachable node serves on
//! `/v1/cluster`, and each member's `/metrics`.
//!
//! The arithmetic is pure and unit-tested: [`parse_prometheus`] reads the text exposition,
//! [`NodeSample::from_metrics`] picks ringkv's figures out of it, [`rate`] and [`p99_between`] turn
//! two samples of one node into ops/s and the p99 latency of the operations in between. The
//! [`Probe`] around them does the HTTP, every call bounded by a timeout.
//!
//! The figures (see `crates/server/src/metrics.rs`): `ringkv_ops_total{op}` counts the client
//! operations a node coordinated (summed over `op`, the rates of all nodes add up to the
//! cluster's client load); `ringkv_op_seconds_bucket{op,le}` is the histogram of their latency,
//! durability and replication included; `ringkv_storage_disk_bytes` is what the node's storage
//! engine uses on disk.

use super::controller::{MemberObs, Status};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// One sample line of the Prometheus text format.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Parses the text exposition format, minimally: comment and blank lines are skipped, and so is
/// any line that does not parse (a scrape must never fail on a metric the controller does not
/// read). Timestamps are ignored.
pub fn parse_prometheus(text: &str) -> Vec<Sample> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<Sample> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let name_end = line
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .unwrap_or(line.len());
    let name = &line[..name_end];
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(after) = rest.strip_prefix('{') {
        let mut chars = after.char_indices().peekable();
        loop {
            while chars.peek().is_some_and(|(_, c)| *c == ' ' || *c == ',') {
                chars.next();
            }
            let (start, c) = *chars.peek()?;
            if c == '}' {
                chars.next();
                rest = &after[start + 1..];
                break;
            }
            let mut end = start;
            while let Some(&(i, c)) = chars.peek() {
                if c.is_ascii_alphanumeric() || c == '_' {
                    chars.next();
                    end = i + c.len_utf8();
                } else {
                    break;
                }
            }
            let key = &after[start..end];
            if key.is_empty() {
                return None;
            }
            while chars.peek().is_some_and(|(_, c)| *c == ' ') {
                chars.next();
            }
            if chars.next()?.1 != '=' {
                return None;
            }
            while chars.peek().is_some_and(|(_, c)| *c == ' ') {
                chars.next();
            }
            if chars.next()?.1 != '"' {
                return None;
            }
            let mut value = String::new();
            loop {
                match chars.next()?.1 {
                    '"' => break,
                    '\\' => match chars.next()?.1 {
                        'n' => value.push('\n'),
                        other => value.push(other),
                    },
                    c => value.push(c),
                }
            }
            labels.push((key.to_string(), value));
        }
    }
    let value_text = rest.split_whitespace().next()?;
    let value = match value_text {
        "+Inf" | "Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        v => v.parse().ok()?,
    };
    Some(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

/// Operations fewer than this in an interval give no p99: one slow operation among three is not
/// a latency problem worth a node.
pub const MIN_OPS_FOR_P99: f64 = 20.0;

/// ringkv's figures in one scrape of one node.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeSample {
    /// `ringkv_ops_total`, summed over `op`.
    pub ops_total: f64,
    /// `ringkv_op_seconds_bucket`, summed over `op`: (upper bound in seconds, cumulative count),
    /// ascending, `+Inf` last.
    pub latency_buckets: Vec<(f64, f64)>,
    /// `ringkv_storage_disk_bytes`.
    pub disk_bytes: Option<f64>,
}

impl NodeSample {
    /// `None` when the text has no `ringkv_ops_total`: not a ringkv node (or not this version).
    pub fn from_metrics(samples: &[Sample]) -> Option<NodeSample> {
        let ops: Vec<f64> = samples
            .iter()
            .filter(|s| s.name == "ringkv_ops_total")
            .map(|s| s.value)
            .collect();
        if ops.is_empty() {
            return None;
        }
        let mut buckets: Vec<(f64, f64)> = Vec::new();
        for s in samples
            .iter()
            .filter(|s| s.name == "ringkv_op_seconds_bucket")
        {
            let Some(le) = s.label("le").and_then(|le| match le {
                "+Inf" => Some(f64::INFINITY),
                v => v.parse::<f64>().ok(),
            }) else {
                continue;
            };
            match buckets.iter_mut().find(|(b, _)| *b == le) {
                Some((_, count)) => *count += s.value,
                None => buckets.push((le, s.value)),
            }
        }
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        let disk_bytes = samples
            .iter()
            .find(|s| s.name == "ringkv_storage_disk_bytes")
            .map(|s| s.value);
        Some(NodeSample {
            ops_total: ops.iter().sum(),
            latency_buckets: buckets,
            disk_bytes,
        })
    }
}

/// Operations per second between two samples of one node `elapsed` apart; `None` when the
/// counter went backwards (the node restarted) or no time passed.
pub fn rate(prev: &NodeSample, cur: &NodeSample, elapsed: Duration) -> Option<f64> {
    let secs = elapsed.as_secs_f64();
    let delta = cur.ops_total - prev.ops_total;
    (secs > 0.0 && delta >= 0.0).then(|| delta / secs)
}

/// p99 latency in milliseconds of the operations between two samples, from the difference of
/// their histograms (as Prometheus's `histogram_quantile` over an `increase`): linear within
/// the bucket the 99th percentile falls in; the largest finite bound when it falls past it.
/// `None` with fewer than [`MIN_OPS_FOR_P99`] operations, or histograms that do not line up.
pub fn p99_between(prev: &NodeSample, cur: &NodeSample) -> Option<f64> {
    if prev.latency_buckets.len() != cur.latency_buckets.len() {
        return None;
    }
    let mut delta = Vec::with_capacity(cur.latency_buckets.len());
    for (&(le_a, a), &(le_b, b)) in prev.latency_buckets.iter().zip(&cur.latency_buckets) {
        if le_a != le_b || b < a {
            return None;
        }
        delta.push((le_b, b - a));
    }
    quantile(0.99, &delta).map(|secs| secs * 1000.0)
}

/// The `q` quantile of a cumulative histogram (bounds ascending, `+Inf` last).
pub fn quantile(q: f64, buckets: &[(f64, f64)]) -> Option<f64> {
    let &(last_le, total) = buckets.last()?;
    if !last_le.is_infinite() || total < MIN_OPS_FOR_P99 {
        return None;
    }
    let rank = q * total;
    let mut lower = (0.0, 0.0);
    for &(le, count) in buckets {
        if count >= rank {
            if le.is_infinite() {
                return Some(lower.0);
            }
            let width = count - lower.1;
            let within = if width > 0.0 {
                (rank - lower.1) / width
            } else {
                1.0
            };
            return Some(lower.0 + (le - lower.0) * within);
        }
        lower = (le, count);
    }
    None
}

/// A member of a `/v1/cluster` answer, as far as the controller cares.
#[derive(Debug, Clone, PartialEq)]
pub struct ViewMember {
    pub id: String,
    pub http_addr: String,
    pub status: Status,
    /// `down` or `suspected` in the answering node's view.
    pub unhealthy: bool,
}

/// One node's `/v1/cluster`.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterView {
    /// The HTTP address that answered.
    pub from: String,
    /// The cluster's N as that node applies it (`replicas_per_key`, else `n`).
    pub n: Option<usize>,
    pub members: Vec<ViewMember>,
}

impl ClusterView {
    /// Reads the JSON of `/v1/cluster` (see `crates/server/src/api/http/cluster.rs`).
    pub fn from_json(from: &str, body: &serde_json::Value) -> Option<ClusterView> {
        let members = body["members"]
            .as_array()?
            .iter()
            .filter_map(|m| {
                Some(ViewMember {
                    id: m["id"].as_str()?.to_string(),
                    http_addr: m["http_addr"].as_str().unwrap_or_default().to_string(),
                    status: Status::parse(m["status"].as_str().unwrap_or_default()),
                    unhealthy: m["down"].as_bool().unwrap_or(true)
                        || m["suspected"].as_bool().unwrap_or(false),
                })
            })
            .collect();
        let n = body["n"]
            .as_u64()
            .or_else(|| body["replicas_per_key"].as_u64())
            .map(|n| n as usize);
        Some(ClusterView {
            from: from.to_string(),
            n,
            members,
        })
    }

    pub fn member(&self, id: &str) -> Option<&ViewMember> {
        self.members.iter().find(|m| m.id == id)
    }
}

/// Bound on each HTTP request the controller makes.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(3);

/// The IO around the arithmetic: fetches views and scrapes, and keeps each node's previous
/// sample for the next rate.
pub struct Probe {
    client: reqwest::blocking::Client,
    password: Option<String>,
    previous: HashMap<String, (Instant, NodeSample)>,
}

impl Probe {
    pub fn new(password: Option<String>) -> Result<Probe, reqwest::Error> {
        let client = reqwest::blocking::Client::builder()
            .timeout(HTTP_TIMEOUT)
            .connect_timeout(Duration::from_secs(1))
            .build()?;
        Ok(Probe {
            client,
            password,
            previous: HashMap::new(),
        })
    }

    /// A request with the client password, if one is set.
    pub fn request(&self, method: reqwest::Method, url: &str) -> reqwest::blocking::RequestBuilder {
        let req = self.client.request(method, url);
        match &self.password {
            Some(p) => req.bearer_auth(p),
            None => req,
        }
    }

    /// `/v1/cluster` of the node at `http`, if it answers.
    pub fn view_of(&self, http: &str) -> Option<ClusterView> {
        let resp = self
            .request(reqwest::Method::GET, &format!("http://{http}/v1/cluster"))
            .send()
            .ok()?;
        if !resp.status().is_success() {
            return None;
        }
        ClusterView::from_json(http, &resp.json().ok()?)
    }

    /// The view of the first of `candidates` that answers (bounded: one timeout each).
    pub fn first_view(&self, candidates: &[String]) -> Option<ClusterView> {
        candidates.iter().find_map(|http| self.view_of(http))
    }

    fn scrape(&self, http: &str) -> Option<NodeSample> {
        let resp = self
            .request(reqwest::Method::GET, &format!("http://{http}/metrics"))
            .send()
            .ok()?;
        if !resp.status().is_success() {
            return None;
        }
        NodeSample::from_metrics(&parse_prometheus(&resp.text().ok()?))
    }

    /// Scrapes every member of `view` that is not `left` and turns the samples into the
    /// controller's per-member figures. A member that does not answer is marked unscraped.
    pub fn observe_members(&mut self, view: &ClusterView) -> Vec<MemberObs> {
        let mut out = Vec::new();
        let mut seen = Vec::new();
        for m in view.members.iter().filter(|m| m.status != Status::Left) {
            seen.push(m.id.clone());
            let sample = if m.http_addr.is_empty() {
                None
            } else {
                self.scrape(&m.http_addr)
            };
            let now = Instant::now();
            let mut obs = MemberObs {
                id: m.id.clone(),
                http_addr: m.http_addr.clone(),
                status: m.status,
                unhealthy: m.unhealthy,
                scraped: sample.is_some(),
                ops_per_sec: None,
                p99_ms: None,
                disk_bytes: None,
            };
            match sample {
                Some(cur) => {
                    obs.disk_bytes = cur.disk_bytes.map(|b| b.max(0.0) as u64);
                    if let Some((then, prev)) = self.previous.get(&m.id) {
                        obs.ops_per_sec = rate(prev, &cur, now.duration_since(*then));
                        obs.p99_ms = p99_between(prev, &cur);
                    }
                    self.previous.insert(m.id.clone(), (now, cur));
                }
                // No sample: the next rate must not span the gap as if it were one interval.
                None => {
                    self.previous.remove(&m.id);
                }
            }
            out.push(obs);
        }
        self.previous.retain(|id, _| seen.contains(id));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
# HELP ringkv_ops Completed key-value operations.
# TYPE ringkv_ops counter
ringkv_ops_total{op=\"put\"} 10
ringkv_ops_total{op=\"get\"} 5
ringkv_ops_total{op=\"delete\"} 1
# TYPE ringkv_op_seconds histogram
ringkv_op_seconds_sum{op=\"put\"} 0.02
ringkv_op_seconds_count{op=\"put\"} 10
ringkv_op_seconds_bucket{le=\"0.001\",op=\"put\"} 4
ringkv_op_seconds_bucket{le=\"0.01\",op=\"put\"} 10
ringkv_op_seconds_bucket{le=\"+Inf\",op=\"put\"} 10
ringkv_op_seconds_bucket{le=\"0.001\",op=\"get\"} 5
ringkv_op_seconds_bucket{le=\"0.01\",op=\"get\"} 5
ringkv_op_seconds_bucket{le=\"+Inf\",op=\"get\"} 5
ringkv_storage_disk_bytes 123456
weird_metric{a=\"x\\\"y\\\\z\\n\", b=\"\"} 1.5e3 1700000000000
ringkv_odd{=\"x\"} 1
not a sample line
ringkv_no_value{op=\"x\"}
ringkv_bad_value 12abc
# EOF
";

    #[test]
    fn parses_samples_and_skips_what_it_cannot_read() {
        let samples = parse_prometheus(TEXT);
        let names: Vec<&str> = samples.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names.iter().filter(|n| **n == "ringkv_ops_total").count(),
            3
        );
        assert!(!names.contains(&"ringkv_odd"));
        assert!(!names.contains(&"ringkv_no_value"));
        assert!(!names.contains(&"ringkv_bad_value"));
        assert!(!names.contains(&"not"));
        let weird = samples.iter().find(|s| s.name == "weird_metric").unwrap();
        assert_eq!(weird.label("a"), Some("x\"y\\z\n"));
        assert_eq!(weird.label("b"), Some(""));
        assert_eq!(weird.value, 1500.0);
        let inf = parse_prometheus("x{le=\"+Inf\"} +Inf\ny NaN\n");
        assert!(inf[0].value.is_infinite() && inf[1].value.is_nan());
        assert!(parse_prometheus("").is_empty());
    }

    #[test]
    fn picks_ringkv_figures_summed_over_labels() {
        let s = NodeSample::from_metrics(&parse_prometheus(TEXT)).unwrap();
        assert_eq!(s.ops_total, 16.0);
        assert_eq!(
            s.latency_buckets,
            vec![(0.001, 9.0), (0.01, 15.0), (f64::INFINITY, 15.0)]
        );
        assert_eq!(s.disk_bytes, Some(123456.0));
        assert!(NodeSample::from_metrics(&parse_prometheus("other_total 3\n")).is_none());
    }

    fn sample(ops: f64, buckets: &[(f64, f64)]) -> NodeSample {
        NodeSample {
            ops_total: ops,
            latency_buckets: buckets.to_vec(),
            disk_bytes: None,
        }
    }

    #[test]
    fn rate_is_the_counter_delta_over_time_and_none_on_reset() {
        let a = sample(100.0, &[]);
        let b = sample(300.0, &[]);
        assert_eq!(rate(&a, &b, Duration::from_secs(2)), Some(100.0));
        assert_eq!(rate(&b, &a, Duration::from_secs(2)), None, "restart");
        assert_eq!(rate(&a, &b, Duration::ZERO), None);
        assert_eq!(rate(&a, &a, Duration::from_secs(1)), Some(0.0));
    }

    #[test]
    fn p99_interpolates_within_the_bucket_of_the_interval() {
        const INF: f64 = f64::INFINITY;
        let prev = sample(
            0.0,
            &[(0.001, 50.0), (0.01, 50.0), (0.1, 50.0), (INF, 50.0)],
        );
        // 100 new ops: 90 under 1 ms, 8 under 10 ms, 2 under 100 ms. Rank 99 falls in the
        // (0.01, 0.1] bucket, halfway between its 98th and 100th: 0.055 s.
        let cur = sample(
            0.0,
            &[(0.001, 140.0), (0.01, 148.0), (0.1, 150.0), (INF, 150.0)],
        );
        let p = p99_between(&prev, &cur).unwrap();
        assert!((p - 55.0).abs() < 1e-6, "{p}");
        // Past the last finite bound: that bound (all we know).
        let slow = sample(
            0.0,
            &[(0.001, 50.0), (0.01, 50.0), (0.1, 50.0), (INF, 150.0)],
        );
        assert_eq!(p99_between(&prev, &slow), Some(100.0));
        // Too few operations in the interval.
        let few = sample(
            0.0,
            &[(0.001, 60.0), (0.01, 60.0), (0.1, 60.0), (INF, 60.0)],
        );
        assert_eq!(p99_between(&prev, &few), None);
        // Histograms that do not line up, or went backwards.
        assert_eq!(p99_between(&prev, &sample(0.0, &[(INF, 500.0)])), None);
        assert_eq!(p99_between(&cur, &prev), None);
        // Everything in the first bucket: interpolated from 0.
        let first = sample(0.0, &[(0.001, 100.0), (INF, 100.0)]);
        let p = p99_between(&sample(0.0, &[(0.001, 0.0), (INF, 0.0)]), &first).unwrap();
        assert!((p - 0.99).abs() < 1e-9, "{p}");
    }

    #[test]
    fn cluster_view_reads_the_member_table() {
        let body = serde_json::json!({
            "n": 3,
            "members": [
                {"id": "n1", "http_addr": "127.0.0.1:1", "status": "up", "down": false, "suspected": false},
                {"id": "n2", "http_addr": "127.0.0.1:2", "status": "leaving", "down": false, "suspected": true},
                {"id": "n3", "http_addr": "127.0.0.1:3", "status": "left", "down": true, "suspected": false},
                {"id": "n4", "status": "joining"},
                {"http_addr": "no id"}
            ]
        });
        let v = ClusterView::from_json("127.0.0.1:1", &body).unwrap();
        assert_eq!(v.n, Some(3));
        assert_eq!(v.members.len(), 4);
        assert_eq!(v.member("n1").unwrap().status, Status::Up);
        assert!(!v.member("n1").unwrap().unhealthy);
        assert!(v.member("n2").unwrap().unhealthy);
        assert_eq!(v.member("n3").unwrap().status, Status::Left);
        // A member without health flags is not trusted to be healthy.
        assert!(v.member("n4").unwrap().unhealthy);
        assert_eq!(v.member("n4").unwrap().http_addr, "");
        assert!(ClusterView::from_json("x", &serde_json::json!({})).is_none());
    }
}
