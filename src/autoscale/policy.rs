//! The autoscaling policy: what load a node should carry, the bounds on the fleet, how long a
//! signal must last before the controller acts, and who provisions nodes. Read from a TOML file
//! (commented example: `config/autoscale-policy.toml`) and validated as a whole, so a policy the
//! controller cannot honour is refused at start with a message naming the setting.

use std::fmt;
use std::path::Path;
use std::time::Duration;
use toml::{Table as Doc, Value};

/// Who adds and removes nodes.
#[derive(Debug, Clone, PartialEq)]
pub enum ProvisionerSpec {
    /// Node processes on this machine, in the local cluster directory `ringkv cluster up` made.
    Local,
    /// A command per change of size, for fleets an orchestrator runs (Kubernetes, systemd).
    Command {
        /// Run with `{replicas}` replaced by the desired node count, e.g.
        /// `kubectl scale statefulset ringkv --replicas={replicas}`.
        scale_command: String,
        /// Run to make the chosen node hand its data off, with `{node}`, `{http}` and
        /// `{replicas}` (the count after it goes) replaced; without it the controller calls
        /// `POST /v1/admin/leave` on the node's HTTP address itself.
        leave_command: Option<String>,
        /// Bound on each command's run time.
        timeout: Duration,
    },
}

impl ProvisionerSpec {
    pub fn kind(&self) -> &'static str {
        match self {
            ProvisionerSpec::Local => "local",
            ProvisionerSpec::Command { .. } => "command",
        }
    }
}

/// A validated policy. Durations are whole or fractional seconds in the file.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub min_nodes: usize,
    pub max_nodes: usize,
    /// N, replicas per key: the controller never goes below `max(replicas, min_nodes)`.
    pub replicas: usize,
    /// Client operations per second each node should carry at most.
    pub target_ops_per_node: f64,
    /// Scale up once load has stayed above target this long.
    pub up_after: Duration,
    /// Scale down once load has stayed below `down_fraction * target` this long.
    pub down_after: Duration,
    pub down_fraction: f64,
    /// Scale up while the worst node's p99 operation latency is above this (milliseconds).
    pub max_p99_ms: Option<f64>,
    /// Scale up while a node's storage uses more than this fraction of `disk_capacity_bytes`.
    pub max_disk_fraction: Option<f64>,
    /// The disk each node has (e.g. the size of a StatefulSet's volume claim).
    pub disk_capacity_bytes: Option<u64>,
    /// No new action until this long after the previous one ended.
    pub cooldown: Duration,
    /// Time between observations.
    pub interval: Duration,
    /// How long a new node may take to show `up` before the controller says so loudly.
    pub join_timeout: Duration,
    /// How long a leaving node may take to hand its data off; past it the node is left running.
    pub leave_timeout: Duration,
    /// Nodes' HTTP addresses to find the cluster through (besides a local cluster's own).
    pub http_addrs: Vec<String>,
    pub provisioner: ProvisionerSpec,
}

impl Policy {
    /// The fewest nodes the controller allows: never below N nor the policy's minimum.
    pub fn floor(&self) -> usize {
        self.min_nodes.max(self.replicas)
    }
}

/// Why a policy was refused.
#[derive(Debug, Clone, PartialEq)]
pub enum PolicyError {
    Read {
        path: String,
        error: String,
    },
    /// Not TOML (the parser's message, with its line and column).
    Syntax(String),
    /// A setting that is missing, of the wrong type, out of range, or inconsistent with another.
    Invalid {
        setting: String,
        message: String,
    },
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PolicyError::Read { path, error } => write!(f, "cannot read policy {path}: {error}"),
            PolicyError::Syntax(e) => {
                write!(f, "policy is not valid TOML: {e}")
            }
            PolicyError::Invalid { setting, message } => write!(f, "policy: {setting}: {message}"),
        }
    }
}

impl std::error::Error for PolicyError {}

fn invalid(setting: &str, message: impl Into<String>) -> PolicyError {
    PolicyError::Invalid {
        setting: setting.to_string(),
        message: message.into(),
    }
}

const TOP_KEYS: &[&str] = &[
    "min_nodes",
    "max_nodes",
    "replicas",
    "target_ops_per_node",
    "up_after_secs",
    "down_after_secs",
    "down_fraction",
    "max_p99_ms",
    "max_disk_fraction",
    "disk_capacity_bytes",
    "cooldown_secs",
    "interval_secs",
    "join_timeout_secs",
    "leave_timeout_secs",
    "http_addrs",
];
const PROVISIONER_KEYS: &[&str] = &[
    "kind",
    "scale_command",
    "leave_command",
    "command_timeout_secs",
];

/// Placeholders each command template may use.
const SCALE_PLACEHOLDERS: &[&str] = &["replicas"];
const LEAVE_PLACEHOLDERS: &[&str] = &["replicas", "node", "http"];

/// The local provisioner's ceiling (`ringkv cluster up` starts at most 64 nodes too).
const LOCAL_MAX_NODES: usize = 64;

/// Reads and validates a policy file.
pub fn load(path: &Path) -> Result<Policy, PolicyError> {
    let text = std::fs::read_to_string(path).map_err(|e| PolicyError::Read {
        path: path.display().to_string(),
        error: e.to_string(),
    })?;
    parse(&text)
}

/// Parses and validates a policy's text.
pub fn parse(text: &str) -> Result<Policy, PolicyError> {
    let doc: Doc = toml::from_str(text).map_err(|e| PolicyError::Syntax(e.to_string()))?;
    from_document(&doc)
}

struct Table<'a> {
    prefix: &'static str,
    keys: Option<&'a Doc>,
}

impl Table<'_> {
    fn name(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    fn get(&self, key: &str) -> Option<&Value> {
        self.keys.and_then(|k| k.get(key))
    }

    fn wrong_type(&self, key: &str, want: &str, v: &Value) -> PolicyError {
        let found = match v {
            Value::String(_) => "a string",
            Value::Integer(_) => "a whole number",
            Value::Float(_) => "a number",
            Value::Boolean(_) => "a boolean",
            Value::Datetime(_) => "a date",
            Value::Array(_) => "an array",
            Value::Table(_) => "a table",
        };
        invalid(&self.name(key), format!("must be {want}, not {found}"))
    }

    fn count(&self, key: &str) -> Result<Option<usize>, PolicyError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Integer(i)) if *i >= 0 => Ok(Some(*i as usize)),
            Some(Value::Integer(i)) => Err(invalid(
                &self.name(key),
                format!("must not be negative, got {i}"),
            )),
            Some(v) => Err(self.wrong_type(key, "a whole number", v)),
        }
    }

    fn number(&self, key: &str) -> Result<Option<f64>, PolicyError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Integer(i)) => Ok(Some(*i as f64)),
            Some(Value::Float(f)) => Ok(Some(*f)),
            Some(v) => Err(self.wrong_type(key, "a number", v)),
        }
    }

    fn string(&self, key: &str) -> Result<Option<String>, PolicyError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(v) => Err(self.wrong_type(key, "a string", v)),
        }
    }

    fn strings(&self, key: &str) -> Result<Option<Vec<String>>, PolicyError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s.clone()),
                    other => Err(self.wrong_type(key, "an array of strings", other)),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(v) => Err(self.wrong_type(key, "an array of strings", v)),
        }
    }

    /// Seconds, at least `min`; `default` when absent.
    fn secs(&self, key: &str, default: f64, min: f64) -> Result<Duration, PolicyError> {
        let secs = self.number(key)?.unwrap_or(default);
        if !(secs >= min && secs <= 7.0 * 24.0 * 3600.0) {
            let floor = if min > 0.0 {
                format!("more than 0 (at least {min})")
            } else {
                "0 or more".to_string()
            };
            return Err(invalid(
                &self.name(key),
                format!("must be {floor} and at most a week, got {secs}"),
            ));
        }
        Ok(Duration::from_secs_f64(secs))
    }

    fn unknown_keys(&self, known: &[&str]) -> Result<(), PolicyError> {
        for key in self.keys.into_iter().flat_map(|t| t.keys()) {
            if !known.contains(&key.as_str()) {
                return Err(invalid(
                    &self.name(key),
                    format!("unknown setting; known here: {}", known.join(", ")),
                ));
            }
        }
        Ok(())
    }
}

/// Checks that a command template uses only the placeholders it will be given.
fn check_template(setting: &str, template: &str, allowed: &[&str]) -> Result<(), PolicyError> {
    if template.trim().is_empty() {
        return Err(invalid(setting, "must not be empty"));
    }
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else {
            return Err(invalid(setting, "has a `{` without a closing `}`"));
        };
        let name = &after[..close];
        if !allowed.contains(&name) {
            return Err(invalid(
                setting,
                format!(
                    "unknown placeholder {{{name}}}; this command may use {}",
                    allowed
                        .iter()
                        .map(|p| format!("{{{p}}}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
        rest = &after[close + 1..];
    }
    Ok(())
}

fn from_document(doc: &Doc) -> Result<Policy, PolicyError> {
    let mut top_keys = doc.clone();
    let provisioner = match top_keys.remove("provisioner") {
        None => None,
        Some(Value::Table(t)) => Some(t),
        Some(_) => return Err(invalid("provisioner", "must be a table: [provisioner]")),
    };
    if let Some((name, _)) = top_keys.iter().find(|(_, v)| v.is_table()) {
        return Err(invalid(
            &format!("[{name}]"),
            "unknown table; the only table is [provisioner]",
        ));
    }
    let top = Table {
        prefix: "",
        keys: Some(&top_keys),
    };
    let prov = Table {
        prefix: "provisioner.",
        keys: provisioner.as_ref(),
    };
    top.unknown_keys(TOP_KEYS)?;
    prov.unknown_keys(PROVISIONER_KEYS)?;

    let replicas = top.count("replicas")?.unwrap_or(3);
    if replicas == 0 {
        return Err(invalid(
            "replicas",
            "must be at least 1 (it is N, replicas per key)",
        ));
    }
    let min_nodes = top.count("min_nodes")?.unwrap_or(replicas);
    if min_nodes == 0 {
        return Err(invalid("min_nodes", "must be at least 1"));
    }
    if min_nodes < replicas {
        return Err(invalid(
            "min_nodes",
            format!(
                "{min_nodes} is below replicas ({replicas}): the autoscaler never goes below N nodes; \
                 set min_nodes to at least {replicas}"
            ),
        ));
    }
    let max_nodes = top.count("max_nodes")?.ok_or_else(|| {
        invalid(
            "max_nodes",
            "is required (the most nodes the controller may run)",
        )
    })?;
    if max_nodes < min_nodes {
        return Err(invalid(
            "max_nodes",
            format!("{max_nodes} is below min_nodes ({min_nodes})"),
        ));
    }
    let target_ops_per_node = top.number("target_ops_per_node")?.ok_or_else(|| {
        invalid(
            "target_ops_per_node",
            "is required (client operations per second a node should carry)",
        )
    })?;
    if !(target_ops_per_node > 0.0 && target_ops_per_node.is_finite()) {
        return Err(invalid(
            "target_ops_per_node",
            format!("must be more than 0, got {target_ops_per_node}"),
        ));
    }
    let down_fraction = top.number("down_fraction")?.unwrap_or(0.5);
    if !(down_fraction > 0.0 && down_fraction < 1.0) {
        return Err(invalid(
            "down_fraction",
            format!(
                "must be between 0 and 1 (exclusive), got {down_fraction}: scale-down needs load \
                 clearly below the target, or the fleet would flap"
            ),
        ));
    }
    let max_p99_ms = top.number("max_p99_ms")?;
    if let Some(ms) = max_p99_ms {
        if !(ms > 0.0 && ms.is_finite()) {
            return Err(invalid(
                "max_p99_ms",
                format!("must be more than 0, got {ms}"),
            ));
        }
    }
    let max_disk_fraction = top.number("max_disk_fraction")?;
    let disk_capacity_bytes = top.count("disk_capacity_bytes")?.map(|b| b as u64);
    if let Some(f) = max_disk_fraction {
        if !(f > 0.0 && f <= 1.0) {
            return Err(invalid(
                "max_disk_fraction",
                format!("must be more than 0 and at most 1, got {f}"),
            ));
        }
        if disk_capacity_bytes.is_none_or(|b| b == 0) {
            return Err(invalid(
                "max_disk_fraction",
                "needs disk_capacity_bytes (the disk each node has, e.g. its volume's size): a \
                 node reports the bytes it uses, not the size of its disk",
            ));
        }
    }
    let interval = top.secs("interval_secs", 10.0, 0.1)?;
    let up_after = top.secs("up_after_secs", 60.0, 0.0)?;
    let down_after = top.secs("down_after_secs", 300.0, 0.0)?;
    let cooldown = top.secs("cooldown_secs", 120.0, 0.0)?;
    let join_timeout = top.secs("join_timeout_secs", 300.0, 1.0)?;
    let leave_timeout = top.secs("leave_timeout_secs", 1800.0, 1.0)?;
    let http_addrs = top.strings("http_addrs")?.unwrap_or_default();
    for addr in &http_addrs {
        let port_ok = addr
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        if !port_ok || addr.contains('/') {
            return Err(invalid(
                "http_addrs",
                format!("`{addr}` is not host:port (a node's HTTP address, without http://)"),
            ));
        }
    }

    let kind = prov.string("kind")?.unwrap_or_else(|| "local".to_string());
    let scale_command = prov.string("scale_command")?;
    let leave_command = prov.string("leave_command")?;
    let command_timeout = prov.secs("command_timeout_secs", 120.0, 1.0)?;
    let provisioner = match kind.as_str() {
        "local" => {
            for (key, set) in [
                ("scale_command", scale_command.is_some()),
                ("leave_command", leave_command.is_some()),
                (
                    "command_timeout_secs",
                    prov.get("command_timeout_secs").is_some(),
                ),
            ] {
                if set {
                    return Err(invalid(
                        &format!("provisioner.{key}"),
                        "is for kind = \"command\"; the local provisioner starts processes itself",
                    ));
                }
            }
            if max_nodes > LOCAL_MAX_NODES {
                return Err(invalid(
                    "max_nodes",
                    format!("the local provisioner runs at most {LOCAL_MAX_NODES} nodes, got {max_nodes}"),
                ));
            }
            ProvisionerSpec::Local
        }
        "command" => {
            let scale_command = scale_command.ok_or_else(|| {
                invalid(
                    "provisioner.scale_command",
                    "is required for kind = \"command\", e.g. \
                     \"kubectl scale statefulset ringkv --replicas={replicas}\"",
                )
            })?;
            check_template(
                "provisioner.scale_command",
                &scale_command,
                SCALE_PLACEHOLDERS,
            )?;
            if !scale_command.contains("{replicas}") {
                return Err(invalid(
                    "provisioner.scale_command",
                    "must contain {replicas}, the node count the controller wants",
                ));
            }
            if let Some(leave) = &leave_command {
                check_template("provisioner.leave_command", leave, LEAVE_PLACEHOLDERS)?;
            }
            if http_addrs.is_empty() {
                return Err(invalid(
                    "http_addrs",
                    "is required for kind = \"command\": the HTTP address of one or more nodes \
                     (e.g. a Service) to watch the cluster through",
                ));
            }
            ProvisionerSpec::Command {
                scale_command,
                leave_command,
                timeout: command_timeout,
            }
        }
        other => {
            return Err(invalid(
                "provisioner.kind",
                format!("unknown provisioner `{other}`; use \"local\" or \"command\""),
            ))
        }
    };

    Ok(Policy {
        min_nodes,
        max_nodes,
        replicas,
        target_ops_per_node,
        up_after,
        down_after,
        down_fraction,
        max_p99_ms,
        max_disk_fraction,
        disk_capacity_bytes,
        cooldown,
        interval,
        join_timeout,
        leave_timeout,
        http_addrs,
        provisioner,
    })
}

/// Fills a command template: each `{name}` becomes its value, shell-quoted unless it is plain
/// digits, so an address or id can never smuggle shell syntax into the command.
pub fn fill_template(template: &str, values: &[(&str, &str)]) -> String {
    let mut out = template.to_string();
    for (name, value) in values {
        let quoted = if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
            value.to_string()
        } else {
            shell_quote(value)
        };
        out = out.replace(&format!("{{{name}}}"), &quoted);
    }
    out
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "max_nodes = 5\ntarget_ops_per_node = 1000\n";

    fn err(text: &str) -> String {
        parse(text).expect_err(text).to_string()
    }

    #[test]
    fn minimal_policy_gets_the_defaults() {
        let p = parse(MINIMAL).unwrap();
        assert_eq!((p.replicas, p.min_nodes, p.max_nodes), (3, 3, 5));
        assert_eq!(p.floor(), 3);
        assert_eq!(p.interval, Duration::from_secs(10));
        assert_eq!(p.up_after, Duration::from_secs(60));
        assert_eq!(p.down_after, Duration::from_secs(300));
        assert_eq!(p.cooldown, Duration::from_secs(120));
        assert_eq!(p.down_fraction, 0.5);
        assert_eq!(p.provisioner, ProvisionerSpec::Local);
        assert!(p.max_p99_ms.is_none() && p.max_disk_fraction.is_none());
    }

    #[test]
    fn the_example_policy_in_config_is_valid() {
        let text = include_str!("../../config/autoscale-policy.toml");
        let p = parse(text).unwrap();
        assert_eq!(p.provisioner, ProvisionerSpec::Local);
        assert!(p.max_nodes >= p.floor());
    }

    #[test]
    fn full_command_policy() {
        let p = parse(
            "min_nodes = 4\nmax_nodes = 10\nreplicas = 3\ntarget_ops_per_node = 2500.5\n\
             up_after_secs = 0.5\ndown_after_secs = 30\ndown_fraction = 0.4\nmax_p99_ms = 20\n\
             max_disk_fraction = 0.8\ndisk_capacity_bytes = 10_000_000_000\ncooldown_secs = 0\n\
             interval_secs = 1\njoin_timeout_secs = 60\nleave_timeout_secs = 600\n\
             http_addrs = [\"ringkv.default.svc:7380\"]\n\
             [provisioner]\nkind = \"command\"\n\
             scale_command = \"kubectl scale statefulset ringkv --replicas={replicas}\"\n\
             leave_command = \"kubectl exec ringkv-{replicas} -- ringkv leave --http {http}\"\n\
             command_timeout_secs = 30\n",
        )
        .unwrap();
        assert_eq!(p.floor(), 4);
        assert_eq!(p.up_after, Duration::from_millis(500));
        assert_eq!(p.cooldown, Duration::ZERO);
        assert_eq!(p.max_p99_ms, Some(20.0));
        assert_eq!(p.disk_capacity_bytes, Some(10_000_000_000));
        match p.provisioner {
            ProvisionerSpec::Command {
                scale_command,
                leave_command,
                timeout,
            } => {
                assert!(scale_command.ends_with("--replicas={replicas}"));
                assert!(leave_command.unwrap().contains("{http}"));
                assert_eq!(timeout, Duration::from_secs(30));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn refuses_inconsistent_policies_clearly() {
        let cases: &[(&str, &str)] = &[
            ("target_ops_per_node = 10\n", "max_nodes: is required"),
            ("max_nodes = 5\n", "target_ops_per_node: is required"),
            ("min_nodes = 6\nmax_nodes = 5\ntarget_ops_per_node = 1\n", "5 is below min_nodes (6)"),
            ("min_nodes = 2\nmax_nodes = 5\ntarget_ops_per_node = 1\n", "below replicas (3)"),
            ("min_nodes = 1\nreplicas = 1\nmax_nodes = 5\ntarget_ops_per_node = 0\n", "more than 0"),
            ("replicas = 0\nmax_nodes = 5\ntarget_ops_per_node = 1\n", "replicas: must be at least 1"),
            ("max_nodes = 5\ntarget_ops_per_node = 1\ninterval_secs = 0\n", "interval_secs: must be more than 0"),
            ("max_nodes = 5\ntarget_ops_per_node = 1\ncooldown_secs = -1\n", "cooldown_secs"),
            ("max_nodes = 5\ntarget_ops_per_node = 1\ndown_fraction = 1\n", "down_fraction"),
            ("max_nodes = 5\ntarget_ops_per_node = 1\nmax_disk_fraction = 0.9\n", "needs disk_capacity_bytes"),
            ("max_nodes = 5\ntarget_ops_per_node = 1\nmax_disk_fraction = 1.5\ndisk_capacity_bytes = 1\n", "at most 1"),
            ("max_nodes = 5\ntarget_ops_per_node = 1\nmax_p99_ms = 0\n", "max_p99_ms"),
            ("max_nodes = 5\ntarget_ops_per_node = 1\nmin_node = 3\n", "min_node: unknown setting"),
            ("max_nodes = 5\ntarget_ops_per_node = 1\n[provisoner]\n", "[provisoner]: unknown table"),
            ("max_nodes = \"5\"\ntarget_ops_per_node = 1\n", "max_nodes: must be a whole number, not a string"),
            ("max_nodes = -5\ntarget_ops_per_node = 1\n", "must not be negative"),
            ("max_nodes = 65\ntarget_ops_per_node = 1\n", "at most 64"),
            ("max_nodes = 5\ntarget_ops_per_node = 1\nhttp_addrs = [\"http://a:1\"]\n", "not host:port"),
            ("max_nodes = 5\ntarget_ops_per_node = 1\nhttp_addrs = [1]\n", "array of strings"),
            ("max_nodes = 5\ntarget_ops_per_node = 1\n[provisioner]\nkind = \"cloud\"\n", "unknown provisioner `cloud`"),
            ("max_nodes = 5\ntarget_ops_per_node = 1\n[provisioner]\nkind = \"command\"\n", "scale_command: is required"),
            ("max_nodes = 5\ntarget_ops_per_node = 1\nhttp_addrs = [\"a:1\"]\n[provisioner]\nkind = \"command\"\nscale_command = \"scale 5\"\n", "must contain {replicas}"),
            ("max_nodes = 5\ntarget_ops_per_node = 1\nhttp_addrs = [\"a:1\"]\n[provisioner]\nkind = \"command\"\nscale_command = \"scale {replica}\"\n", "unknown placeholder {replica}"),
            ("max_nodes = 5\ntarget_ops_per_node = 1\nhttp_addrs = [\"a:1\"]\n[provisioner]\nkind = \"command\"\nscale_command = \"s {replicas}\"\nleave_command = \"drain {pod}\"\n", "unknown placeholder {pod}"),
            ("max_nodes = 5\ntarget_ops_per_node = 1\n[provisioner]\nkind = \"command\"\nscale_command = \"s {replicas}\"\n", "http_addrs: is required"),
            ("max_nodes = 5\ntarget_ops_per_node = 1\n[provisioner]\nscale_command = \"s {replicas}\"\n", "is for kind = \"command\""),
            ("max_nodes = 5\ntarget_ops_per_node = 1\nmax_nodes = 6\n", "duplicate key"),
        ];
        for (text, needle) in cases {
            let e = err(text);
            assert!(e.contains(needle), "{text:?} gave `{e}`, wanted `{needle}`");
        }
    }

    #[test]
    fn templates_are_filled_and_quoted() {
        assert_eq!(
            fill_template(
                "kubectl scale sts ringkv --replicas={replicas}",
                &[("replicas", "4")]
            ),
            "kubectl scale sts ringkv --replicas=4"
        );
        assert_eq!(
            fill_template(
                "drain {node} at {http} ({replicas})",
                &[("node", "n4"), ("http", "10.0.0.4:7380"), ("replicas", "3")]
            ),
            "drain 'n4' at '10.0.0.4:7380' (3)"
        );
        assert_eq!(
            fill_template("x {node}", &[("node", "a'; rm -rf /; '")]),
            r"x 'a'\''; rm -rf /; '\'''"
        );
    }
}
