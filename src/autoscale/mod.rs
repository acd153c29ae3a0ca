//! `ringkv autoscale --policy FILE`: a controller beside the cluster, the way a Kubernetes
//! HorizontalPodAutoscaler sits beside its pods. Every interval it reads the member table of a
//! reachable node and every member's `/metrics` ([`metrics_probe`]), decides with a pure
//! function ([`controller::decide`]) whether to add a node, remove one or hold, and has a
//! [`provisioner::Provisioner`] carry it out: local processes in a `ringkv cluster up`
//! directory, or the operator's commands (`kubectl scale statefulset ...`).
//!
//! It is its own process and owns nothing the cluster needs: if it stops, scaling stops and
//! nothing else does. It never goes below `max(N, min_nodes)` and never stops a node before
//! that node shows `left` (its data handed off). Each observation and decision is one log line,
//! and the latest of both, with the current or last action, is in a status file
//! (`CLUSTER_DIR/autoscale.json` by default) for `cat`, scripts and tests.

pub mod controller;
pub mod metrics_probe;
pub mod policy;
pub mod provisioner;

use anyhow::{bail, Context as _};
use clap::Args;
use controller::{ControllerState, Decision, MemberObs, Observation};
use metrics_probe::Probe;
use policy::{Policy, ProvisionerSpec};
use provisioner::{ActionError, CommandProvisioner, LocalProvisioner, Provisioner, Waits};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tracing::{error, info, warn};

/// `ringkv autoscale` flags.
#[derive(Args, Debug)]
pub struct AutoscaleArgs {
    /// Policy file, TOML (commented example: config/autoscale-policy.toml).
    #[arg(long)]
    policy: PathBuf,
    /// The local cluster's directory, as given to `ringkv cluster up --dir`: the local
    /// provisioner starts and stops nodes there; the status file goes there too.
    #[arg(long, default_value = "./ringkv-cluster")]
    cluster_dir: PathBuf,
    /// Where the controller writes what it sees and does [default: CLUSTER_DIR/autoscale.json].
    #[arg(long)]
    status_file: Option<PathBuf>,
    /// Observe and decide, log what would be done, change nothing.
    #[arg(long)]
    dry_run: bool,
    /// The nodes' client password, if they have one.
    #[arg(long, env = "RINGKV_PASSWORD", hide_env_values = true)]
    password: Option<String>,
}

/// How a scale step ended: what was done and the node concerned, or why it did not complete.
type Outcome = Result<(String, Option<String>), ActionError>;

/// Status file name in the cluster directory.
pub const STATUS_FILE: &str = "autoscale.json";
/// Actions kept in the status file's history.
const HISTORY: usize = 20;

pub fn run(args: AutoscaleArgs) -> anyhow::Result<()> {
    let policy = policy::load(&args.policy)?;
    let status_path = args
        .status_file
        .clone()
        .unwrap_or_else(|| args.cluster_dir.join(STATUS_FILE));
    let mut provisioner: Box<dyn Provisioner> = match &policy.provisioner {
        ProvisionerSpec::Local => {
            Box::new(LocalProvisioner::new(args.cluster_dir.clone()).context(
                "the local provisioner needs a cluster started with `ringkv cluster up`",
            )?)
        }
        ProvisionerSpec::Command {
            scale_command,
            leave_command,
            timeout,
        } => Box::new(CommandProvisioner {
            scale_command: scale_command.clone(),
            leave_command: leave_command.clone(),
            timeout: *timeout,
        }),
    };
    if let Some(parent) = status_path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    refuse_second_controller(&status_path)?;
    let mut probe = Probe::new(args.password.clone()).context("cannot build the HTTP client")?;
    let stop = stop_on_signal();
    let mut report = Report::new(&args, &policy, &status_path);
    info!(
        "autoscaler: policy {} (nodes {}..={}, floor {} = max(N, min_nodes), target {} ops/s per \
         node, every {:.1}s, provisioner {}{}); status in {}",
        args.policy.display(),
        policy.min_nodes,
        policy.max_nodes,
        policy.floor(),
        policy.target_ops_per_node,
        policy.interval.as_secs_f64(),
        provisioner.kind(),
        if args.dry_run { ", dry run" } else { "" },
        status_path.display()
    );

    let started = Instant::now();
    let mut state = ControllerState::default();
    let mut known: Vec<String> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let tick = Instant::now();
        let mut candidates = provisioner.discovery_addrs();
        candidates.extend(policy.http_addrs.iter().cloned());
        candidates.extend(known.iter().cloned());
        dedup(&mut candidates);
        let obs = match probe.first_view(&candidates) {
            Some(view) => {
                if !args.dry_run {
                    provisioner.reconcile(&view);
                }
                known = view
                    .members
                    .iter()
                    .filter(|m| !m.http_addr.is_empty())
                    .map(|m| m.http_addr.clone())
                    .collect();
                Observation {
                    members: probe.observe_members(&view),
                    cluster_n: view.n,
                }
            }
            None => Observation::default(),
        };
        let decision = controller::decide(&policy, &mut state, &obs, started.elapsed());
        let line = summary(&policy, &obs);
        match &decision {
            Decision::Hold(_) => info!("{line} -> {decision}"),
            _ => warn!("{line} -> {decision}"),
        }
        report.observed(&policy, &obs, &decision);
        report.write();

        if !matches!(decision, Decision::Hold(_)) {
            let action_started = unix_ms();
            report.action_begins(&decision, action_started);
            report.write();
            let outcome = if args.dry_run {
                Ok(("dry run: nothing done".to_string(), None))
            } else {
                let waits = Waits {
                    probe: &probe,
                    stop: &stop,
                    poll: Duration::from_millis(250),
                };
                execute(&policy, provisioner.as_mut(), &waits, &decision, &obs)
            };
            state.action_ended(started.elapsed());
            match &outcome {
                Ok((what, _)) => warn!("{decision}: done: {what}"),
                Err(e @ ActionError::Interrupted(_)) => warn!("{decision}: {e}"),
                Err(e) => error!("{decision}: {}: {e}", e.result_word()),
            }
            report.action_ends(outcome);
            report.write();
        }

        let next = tick + policy.interval;
        while Instant::now() < next && !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(50).min(policy.interval));
        }
    }
    info!("autoscaler stopping (signal); the cluster keeps running as it is");
    report.stopped();
    report.write();
    Ok(())
}

/// Carries out a scale decision. On success: what was done and the node concerned.
fn execute(
    policy: &Policy,
    provisioner: &mut dyn Provisioner,
    waits: &Waits<'_>,
    decision: &Decision,
    obs: &Observation,
) -> Outcome {
    let others: Vec<String> = obs
        .members
        .iter()
        .map(|m| m.http_addr.clone())
        .filter(|h| !h.is_empty())
        .collect();
    match *decision {
        Decision::Hold(_) => Ok(("nothing".into(), None)),
        Decision::ScaleUp { to, .. } => match provisioner.add_node(to)? {
            Some((id, http)) => {
                let took = waits.until_up(&id, &http, &others, policy.join_timeout)?;
                Ok((
                    format!("{id} is up after {:.1}s", took.as_secs_f64()),
                    Some(id),
                ))
            }
            None => {
                let took = waits.until_fleet_up(&others, to, policy.join_timeout)?;
                Ok((
                    format!("{to} members up after {:.1}s", took.as_secs_f64()),
                    None,
                ))
            }
        },
        Decision::ScaleDown { to, .. } => {
            let leaver: MemberObs = provisioner.choose_leaver(&obs.members)?;
            info!(
                "asking {} ({}) to hand its data off and leave",
                leaver.id, leaver.http_addr
            );
            provisioner.request_leave(waits.probe, &leaver, to)?;
            let took =
                waits.until_left(&leaver.id, &leaver.http_addr, &others, policy.leave_timeout)?;
            info!(
                "{} has left after {:.1}s (its data is handed off)",
                leaver.id,
                took.as_secs_f64()
            );
            let removed = provisioner.remove_node(&leaver, to)?;
            Ok((
                format!(
                    "{} left after {:.1}s; {removed}",
                    leaver.id,
                    took.as_secs_f64()
                ),
                Some(leaver.id),
            ))
        }
    }
}

fn dedup(list: &mut Vec<String>) {
    let mut seen = std::collections::HashSet::new();
    list.retain(|x| seen.insert(x.clone()));
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn fmt_opt(v: Option<f64>, unit: &str) -> String {
    v.map(|v| format!("{v:.1}{unit}"))
        .unwrap_or_else(|| "-".into())
}

/// The one-line summary of an observation.
fn summary(policy: &Policy, obs: &Observation) -> String {
    if obs.members.is_empty() {
        return "no node reachable".into();
    }
    let members: Vec<String> = obs
        .members
        .iter()
        .map(|m| {
            let health = if m.unhealthy {
                " DOWN"
            } else if !m.scraped {
                " UNREACHABLE"
            } else {
                ""
            };
            format!(
                "{} {}{health} {}",
                m.id,
                m.status.as_str(),
                fmt_opt(m.ops_per_sec, "/s")
            )
        })
        .collect();
    let ops = obs.ops_per_sec();
    let disk = obs
        .disk_fraction(policy.disk_capacity_bytes)
        .map(|d| format!(", disk {:.1}%", d * 100.0))
        .unwrap_or_default();
    format!(
        "{} nodes [{}]: {} ops/s, {} per node (target {}), p99 {}{disk}",
        obs.nodes(),
        members.join(", "),
        fmt_opt(ops, ""),
        fmt_opt(ops.map(|o| o / obs.nodes() as f64), ""),
        policy.target_ops_per_node,
        fmt_opt(obs.p99_ms(), " ms"),
    )
}

/// A SIGINT or SIGTERM sets the flag; the loop and every wait check it, so the controller stops
/// within a poll. (Nodes it started run in their own process group: a Ctrl-C does not reach
/// them.)
fn stop_on_signal() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    let set = flag.clone();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    match runtime {
        Ok(runtime) => {
            // Register the handlers before returning, so a signal sent right away is seen.
            let term = runtime.block_on(async {
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            });
            std::thread::spawn(move || {
                runtime.block_on(async move {
                    match term {
                        Ok(mut term) => {
                            tokio::select! {
                                _ = tokio::signal::ctrl_c() => {}
                                _ = term.recv() => {}
                            }
                        }
                        Err(_) => {
                            let _ = tokio::signal::ctrl_c().await;
                        }
                    }
                });
                set.store(true, Ordering::Relaxed);
            });
        }
        Err(e) => warn!("cannot watch for signals ({e}); stop the controller with SIGKILL"),
    }
    flag
}

/// Two controllers on one cluster would fight; the status file names the running one.
fn refuse_second_controller(path: &Path) -> anyhow::Result<()> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(());
    };
    let Ok(status) = serde_json::from_str::<serde_json::Value>(&text) else {
        return Ok(());
    };
    if let Some(pid) = status["pid"].as_u64() {
        let running = status["state"] == "running"
            && pid != u64::from(std::process::id())
            && crate::local_cluster::process_alive(pid)
            && std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| c.split(|b| *b == 0).any(|a| a == b"autoscale"))
                .unwrap_or(false);
        if running {
            bail!(
                "another autoscaler (pid {pid}) is running for this cluster (status file {}); \
                 stop it first",
                path.display()
            );
        }
    }
    Ok(())
}

/// The status file: the latest observation and decision, the current or last action, and the
/// last [`HISTORY`] actions. Rewritten atomically after each of them.
struct Report {
    path: PathBuf,
    doc: serde_json::Value,
}

impl Report {
    fn new(args: &AutoscaleArgs, policy: &Policy, path: &Path) -> Report {
        Report {
            path: path.to_path_buf(),
            doc: json!({
                "pid": std::process::id(),
                "state": "running",
                "started_unix_ms": unix_ms(),
                "policy_file": args.policy.display().to_string(),
                "provisioner": policy.provisioner.kind(),
                "dry_run": args.dry_run,
                "policy": {
                    "min_nodes": policy.min_nodes,
                    "max_nodes": policy.max_nodes,
                    "floor": policy.floor(),
                    "target_ops_per_node": policy.target_ops_per_node,
                    "max_p99_ms": policy.max_p99_ms,
                    "max_disk_fraction": policy.max_disk_fraction,
                },
                "observation": null,
                "decision": null,
                "action": null,
                "history": [],
            }),
        }
    }

    fn observed(&mut self, policy: &Policy, obs: &Observation, decision: &Decision) {
        let members: Vec<_> = obs
            .members
            .iter()
            .map(|m| {
                json!({
                    "id": m.id,
                    "http_addr": m.http_addr,
                    "status": m.status.as_str(),
                    "unhealthy": m.unhealthy,
                    "scraped": m.scraped,
                    "ops_per_sec": m.ops_per_sec,
                    "p99_ms": m.p99_ms,
                    "disk_bytes": m.disk_bytes,
                })
            })
            .collect();
        let ops = obs.ops_per_sec();
        self.doc["observation"] = json!({
            "at_unix_ms": unix_ms(),
            "nodes": obs.nodes(),
            "cluster_n": obs.cluster_n,
            "ops_per_sec": ops,
            "ops_per_node": ops.map(|o| o / obs.nodes().max(1) as f64),
            "p99_ms": obs.p99_ms(),
            "disk_fraction": obs.disk_fraction(policy.disk_capacity_bytes),
            "members": members,
        });
        self.doc["decision"] = json!(decision.to_string());
    }

    fn action_begins(&mut self, decision: &Decision, at: u64) {
        let (kind, from, to) = match decision {
            Decision::ScaleUp { from, to, .. } => ("scale_up", *from, *to),
            Decision::ScaleDown { from, to, .. } => ("scale_down", *from, *to),
            Decision::Hold(_) => return,
        };
        self.doc["action"] = json!({
            "kind": kind,
            "from": from,
            "to": to,
            "decision": decision.to_string(),
            "started_unix_ms": at,
            "ended_unix_ms": null,
            "result": "in_progress",
            "message": null,
            "node": null,
        });
    }

    fn action_ends(&mut self, outcome: Outcome) {
        let action = &mut self.doc["action"];
        action["ended_unix_ms"] = json!(unix_ms());
        match outcome {
            Ok((message, node)) => {
                action["result"] = json!("ok");
                action["message"] = json!(message);
                action["node"] = json!(node);
            }
            Err(e) => {
                action["result"] = json!(e.result_word());
                action["message"] = json!(e.to_string());
                if let ActionError::LeaveUnsupported { node, .. }
                | ActionError::LeaveRefused { node, .. }
                | ActionError::LeaveTimeout { node, .. } = &e
                {
                    action["node"] = json!(node);
                }
            }
        }
        let action = self.doc["action"].clone();
        if let Some(history) = self.doc["history"].as_array_mut() {
            history.push(action);
            let excess = history.len().saturating_sub(HISTORY);
            history.drain(..excess);
        }
    }

    fn stopped(&mut self) {
        self.doc["state"] = json!("stopped");
    }

    fn write(&mut self) {
        self.doc["updated_unix_ms"] = json!(unix_ms());
        let tmp = self.path.with_extension("json.tmp");
        let result = serde_json::to_string_pretty(&self.doc)
            .map_err(std::io::Error::other)
            .and_then(|text| std::fs::write(&tmp, text))
            .and_then(|()| std::fs::rename(&tmp, &self.path));
        if let Err(e) = result {
            warn!("cannot write {}: {e}", self.path.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::controller::Status;
    use super::*;
    use std::io::{Read as _, Write as _};
    use std::net::TcpListener;

    /// An HTTP server on loopback that answers every request with `status` and `body`, for as
    /// long as the test runs. Returns its address.
    fn stub_server(status: &'static str, body: &'static str) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf);
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
                     connection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        addr
    }

    /// Records what the controller asks of it.
    #[derive(Default)]
    struct Fake {
        removed: Vec<String>,
    }

    impl Provisioner for Fake {
        fn kind(&self) -> &'static str {
            "fake"
        }
        fn add_node(&mut self, _to: usize) -> Result<Option<(String, String)>, ActionError> {
            Ok(None)
        }
        fn choose_leaver(&self, members: &[MemberObs]) -> Result<MemberObs, ActionError> {
            Ok(members.last().unwrap().clone())
        }
        fn remove_node(&mut self, m: &MemberObs, _to: usize) -> Result<String, ActionError> {
            self.removed.push(m.id.clone());
            Ok("removed".into())
        }
    }

    fn members(leaver_http: &str) -> Observation {
        let m = |id: &str, http: &str| MemberObs {
            id: id.into(),
            http_addr: http.into(),
            status: Status::Up,
            unhealthy: false,
            scraped: true,
            ops_per_sec: Some(0.0),
            p99_ms: None,
            disk_bytes: None,
        };
        Observation {
            members: vec![m("n1", "127.0.0.1:1"), m("n4", leaver_http)],
            cluster_n: Some(1),
        }
    }

    fn scale_down(http: &str) -> (Outcome, Vec<String>) {
        let policy = policy::parse(
            "replicas = 1\nmin_nodes = 1\nmax_nodes = 4\ntarget_ops_per_node = 1\n\
             leave_timeout_secs = 1\n",
        )
        .unwrap();
        let probe = Probe::new(None).unwrap();
        let stop = AtomicBool::new(false);
        let waits = Waits {
            probe: &probe,
            stop: &stop,
            poll: Duration::from_millis(100),
        };
        let mut fake = Fake::default();
        let decision = Decision::ScaleDown {
            from: 2,
            to: 1,
            reason: "test".into(),
        };
        let outcome = execute(&policy, &mut fake, &waits, &decision, &members(http));
        (outcome, fake.removed)
    }

    #[test]
    fn a_node_without_the_leave_endpoint_is_never_removed() {
        let http = stub_server("404 Not Found", "");
        let (outcome, removed) = scale_down(&http);
        match outcome {
            Err(e @ ActionError::LeaveUnsupported { .. }) => {
                assert_eq!(e.result_word(), "refused");
                assert!(e.to_string().contains("404"), "{e}");
            }
            other => panic!("{other:?}"),
        }
        assert!(removed.is_empty(), "removed {removed:?}");
    }

    #[test]
    fn a_refused_or_unfinished_leave_removes_nothing() {
        let http = stub_server(
            "409 Conflict",
            r#"{"error":"this node is the last member"}"#,
        );
        let (outcome, removed) = scale_down(&http);
        match outcome {
            Err(ActionError::LeaveRefused { reason, .. }) => {
                assert!(
                    reason.contains("409") && reason.contains("last member"),
                    "{reason}"
                )
            }
            other => panic!("{other:?}"),
        }
        assert!(removed.is_empty());
        // Accepted, but the node never shows `left` (the stub has no /v1/cluster): bounded
        // wait, then a loud failure, and the node is not removed.
        let http = stub_server("202 Accepted", "{}");
        let started = Instant::now();
        let (outcome, removed) = scale_down(&http);
        assert!(
            matches!(outcome, Err(ActionError::LeaveTimeout { .. })),
            "{outcome:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(removed.is_empty());
    }
}
