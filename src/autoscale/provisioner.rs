//! Who adds and removes nodes, and the safe order of a removal.
//!
//! [`Provisioner`] is the seam between the controller and the world: the local provisioner
//! starts and stops processes in a `ringkv cluster up` directory (reusing `local_cluster`'s
//! machinery), the command provisioner runs the operator's hooks (`kubectl scale ...`). What a
//! scale step *means* is the same for both and lives here once:
//!
//! - **up**: [`Provisioner::add_node`], then wait (bounded) until the cluster shows the new node
//!   `up`; a node that does not get there is reported loudly and left running.
//! - **down**: choose the node ([`Provisioner::choose_leaver`]), ask it to hand its data off
//!   (`POST /v1/admin/leave`, or the operator's `leave_command`), wait (bounded) until every
//!   reachable node's `/v1/cluster` shows it `left`, and only then
//!   [`Provisioner::remove_node`]. A node whose handoff is refused (a 404 from a node without
//!   the endpoint included), fails or does not finish in time is never stopped.

use super::controller::{MemberObs, Status};
use super::metrics_probe::{ClusterView, Probe};
use super::policy::fill_template;
use crate::local_cluster::{self, LocalNode};
use std::fmt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// Why a scale step did not complete.
#[derive(Debug, Clone, PartialEq)]
pub enum ActionError {
    /// Nothing to remove that this provisioner can remove.
    NoCandidate(String),
    /// The node answered 404 to `POST /v1/admin/leave`: it cannot hand its data off, so it is
    /// not removed.
    LeaveUnsupported { node: String, http: String },
    /// The node refused to leave, or could not be asked; nothing was stopped.
    LeaveRefused { node: String, reason: String },
    /// The handoff did not finish in time; the node keeps running.
    LeaveTimeout { node: String, waited: Duration },
    /// The new node (or the fleet) was not `up` in time; it keeps running.
    JoinTimeout { what: String, waited: Duration },
    /// A provisioner command failed or timed out.
    Command { command: String, outcome: String },
    /// Starting or stopping a local process failed.
    Local(String),
    /// The controller was asked to stop while waiting.
    Interrupted(String),
}

impl ActionError {
    /// `refused` (nothing was changed on purpose) or `failed`.
    pub fn result_word(&self) -> &'static str {
        match self {
            ActionError::NoCandidate(_)
            | ActionError::LeaveUnsupported { .. }
            | ActionError::LeaveRefused { .. } => "refused",
            _ => "failed",
        }
    }
}

impl fmt::Display for ActionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ActionError::NoCandidate(why) => write!(f, "no node to remove: {why}"),
            ActionError::LeaveUnsupported { node, http } => write!(
                f,
                "scale-down refused: {node} ({http}) answered 404 to POST /v1/admin/leave, so it \
                 cannot hand its data off; no node is stopped before its data is handed off \
                 (scale-down waits on the leave endpoint)"
            ),
            ActionError::LeaveRefused { node, reason } => {
                write!(
                    f,
                    "scale-down refused: {node} did not accept to leave: {reason}"
                )
            }
            ActionError::LeaveTimeout { node, waited } => write!(
                f,
                "{node} did not finish handing its data off within {:.0}s; it is left running \
                 (check `ringkv status`; it is stopped once it shows `left`)",
                waited.as_secs_f64()
            ),
            ActionError::JoinTimeout { what, waited } => write!(
                f,
                "{what} not up within {:.0}s; left running",
                waited.as_secs_f64()
            ),
            ActionError::Command { command, outcome } => write!(f, "`{command}` {outcome}"),
            ActionError::Local(e) => write!(f, "local cluster: {e}"),
            ActionError::Interrupted(what) => write!(f, "stopped while {what}"),
        }
    }
}

impl std::error::Error for ActionError {}

/// Adds and removes nodes. See the module doc for the order of a removal.
pub trait Provisioner {
    fn kind(&self) -> &'static str;

    /// HTTP addresses to find the cluster through, besides the policy's `http_addrs`.
    fn discovery_addrs(&self) -> Vec<String> {
        Vec::new()
    }

    /// Called with each interval's view: tidy up (finish removing nodes that have left, reap
    /// exited children).
    fn reconcile(&mut self, _view: &ClusterView) {}

    /// Starts one node (the fleet becomes `to` nodes). Returns the new member's id and HTTP
    /// address when known, for the wait until it is `up`.
    fn add_node(&mut self, to: usize) -> Result<Option<(String, String)>, ActionError>;

    /// The member to remove, among `members` (all `up`).
    fn choose_leaver(&self, members: &[MemberObs]) -> Result<MemberObs, ActionError>;

    /// Asks `member` to hand its partitions off and leave; `to` is the size after it goes.
    fn request_leave(
        &mut self,
        probe: &Probe,
        member: &MemberObs,
        _to: usize,
    ) -> Result<(), ActionError> {
        post_leave(probe, member)
    }

    /// Takes `member`, which has left, out of the fleet (now `to` nodes). Returns what it did.
    fn remove_node(&mut self, member: &MemberObs, to: usize) -> Result<String, ActionError>;
}

/// `POST http://NODE/v1/admin/leave`: 2xx means the node is now `leaving`.
pub fn post_leave(probe: &Probe, member: &MemberObs) -> Result<(), ActionError> {
    let url = format!("http://{}/v1/admin/leave", member.http_addr);
    let resp = probe
        .request(reqwest::Method::POST, &url)
        .send()
        .map_err(|e| ActionError::LeaveRefused {
            node: member.id.clone(),
            reason: format!("cannot reach {url}: {e}"),
        })?;
    let status = resp.status();
    if status.is_success() {
        return Ok(());
    }
    if status == reqwest::StatusCode::NOT_FOUND {
        return Err(ActionError::LeaveUnsupported {
            node: member.id.clone(),
            http: member.http_addr.clone(),
        });
    }
    let body = resp.text().unwrap_or_default();
    let msg = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["error"].as_str().map(String::from))
        .unwrap_or(body);
    Err(ActionError::LeaveRefused {
        node: member.id.clone(),
        reason: format!("{status}: {}", msg.trim()),
    })
}

/// What the waits need: the probe and the stop flag.
pub struct Waits<'a> {
    pub probe: &'a Probe,
    pub stop: &'a AtomicBool,
    pub poll: Duration,
}

impl Waits<'_> {
    fn pause(&self, what: &str) -> Result<(), ActionError> {
        let until = Instant::now() + self.poll;
        while Instant::now() < until {
            if self.stop.load(Ordering::Relaxed) {
                return Err(ActionError::Interrupted(what.to_string()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// Waits until node `id` shows `up` (and healthy) in its own view and in another member's.
    pub fn until_up(
        &self,
        id: &str,
        http: &str,
        others: &[String],
        timeout: Duration,
    ) -> Result<Duration, ActionError> {
        let started = Instant::now();
        let mut last_log = started;
        loop {
            let is_up = |v: &ClusterView| {
                v.member(id)
                    .is_some_and(|m| m.status == Status::Up && !m.unhealthy)
            };
            let own = self.probe.view_of(http).is_some_and(|v| is_up(&v));
            let seen = others
                .iter()
                .filter(|h| h.as_str() != http)
                .find_map(|h| self.probe.view_of(h))
                .is_some_and(|v| is_up(&v));
            if own && seen {
                return Ok(started.elapsed());
            }
            if started.elapsed() > timeout {
                return Err(ActionError::JoinTimeout {
                    what: format!("new node {id}"),
                    waited: timeout,
                });
            }
            if last_log.elapsed() > Duration::from_secs(10) {
                info!(
                    "waiting for {id} to show up ({:.0}s)",
                    started.elapsed().as_secs_f64()
                );
                last_log = Instant::now();
            }
            self.pause(&format!("waiting for {id} to be up"))?;
        }
    }

    /// Waits until the cluster has at least `count` members `up` and healthy, and none joining.
    pub fn until_fleet_up(
        &self,
        addrs: &[String],
        count: usize,
        timeout: Duration,
    ) -> Result<Duration, ActionError> {
        let started = Instant::now();
        loop {
            if let Some(v) = self.probe.first_view(addrs) {
                let up = v
                    .members
                    .iter()
                    .filter(|m| m.status == Status::Up && !m.unhealthy)
                    .count();
                if up >= count && !v.members.iter().any(|m| m.status == Status::Joining) {
                    return Ok(started.elapsed());
                }
            }
            if started.elapsed() > timeout {
                return Err(ActionError::JoinTimeout {
                    what: format!("{count} members"),
                    waited: timeout,
                });
            }
            self.pause("waiting for the fleet to grow")?;
        }
    }

    /// Waits until node `id` is `left` in every reachable view (`others`' and, while it
    /// answers, its own at `http`), and explicitly so in at least one other member's.
    pub fn until_left(
        &self,
        id: &str,
        http: &str,
        others: &[String],
        timeout: Duration,
    ) -> Result<Duration, ActionError> {
        let started = Instant::now();
        let mut last_log = started;
        loop {
            let other_views: Vec<ClusterView> = others
                .iter()
                .filter(|h| h.as_str() != http)
                .filter_map(|h| self.probe.view_of(h))
                .collect();
            let own_view = self.probe.view_of(http);
            let status_in = |v: &ClusterView| v.member(id).map(|m| m.status);
            let confirmed = other_views
                .iter()
                .any(|v| status_in(v) == Some(Status::Left));
            // A view without the member at all has forgotten it after it left.
            let pending: Vec<String> = other_views
                .iter()
                .chain(own_view.as_ref())
                .filter_map(|v| match status_in(v) {
                    Some(Status::Left) | None => None,
                    Some(s) => Some(format!("{} says {}", v.from, s.as_str())),
                })
                .collect();
            if confirmed && pending.is_empty() {
                return Ok(started.elapsed());
            }
            if started.elapsed() > timeout {
                return Err(ActionError::LeaveTimeout {
                    node: id.to_string(),
                    waited: timeout,
                });
            }
            if last_log.elapsed() > Duration::from_secs(10) {
                info!(
                    "waiting for {id} to hand its data off ({:.0}s): {}",
                    started.elapsed().as_secs_f64(),
                    pending.join(", ")
                );
                last_log = Instant::now();
            }
            self.pause(&format!("waiting for {id} to leave"))?;
        }
    }
}

/// Node processes on this machine, in a `ringkv cluster up` directory.
pub struct LocalProvisioner {
    dir: PathBuf,
    /// Processes this controller started, to reap once they exit.
    children: Vec<Child>,
}

/// How long a stopped node gets between SIGTERM and SIGKILL (as `ringkv cluster down`).
const STOP_GRACE: Duration = Duration::from_secs(15);

impl LocalProvisioner {
    /// Checks that `dir` holds a local cluster.
    pub fn new(dir: PathBuf) -> Result<LocalProvisioner, ActionError> {
        local_cluster::local_nodes(&dir).map_err(|e| ActionError::Local(format!("{e:#}")))?;
        Ok(LocalProvisioner {
            dir,
            children: Vec::new(),
        })
    }

    fn nodes(&self) -> Vec<LocalNode> {
        local_cluster::local_nodes(&self.dir).unwrap_or_default()
    }
}

impl Provisioner for LocalProvisioner {
    fn kind(&self) -> &'static str {
        "local"
    }

    fn discovery_addrs(&self) -> Vec<String> {
        let mut nodes = self.nodes();
        // Running nodes first: they answer without a connect timeout.
        nodes.sort_by_key(|n| !n.alive);
        nodes.into_iter().map(|n| n.http_addr).collect()
    }

    fn reconcile(&mut self, view: &ClusterView) {
        self.children
            .retain_mut(|c| matches!(c.try_wait(), Ok(None)));
        // A node that shows `left` has handed its data off (an earlier run of the controller may
        // have stopped before it got to stop the process): finish the job.
        for node in self.nodes() {
            if view.member(&node.id).map(|m| m.status) != Some(Status::Left) {
                continue;
            }
            let what = if node.alive {
                "stopping it"
            } else {
                "forgetting it"
            };
            info!("{} has left the cluster (data handed off): {what}", node.id);
            if let Err(e) = local_cluster::stop_node(&self.dir, &node.id, STOP_GRACE) {
                warn!("cannot stop {} after it left: {e:#}", node.id);
            }
        }
    }

    fn add_node(&mut self, _to: usize) -> Result<Option<(String, String)>, ActionError> {
        let (node, child) = local_cluster::start_node(&self.dir)
            .map_err(|e| ActionError::Local(format!("{e:#}")))?;
        info!(
            "started {} (pid {}, http {}, data {})",
            node.id,
            node.pid,
            node.http_addr,
            node.dir.display()
        );
        self.children.push(child);
        Ok(Some((node.id, node.http_addr)))
    }

    /// The newest node (highest `nI`) this directory runs, never the first one if another will
    /// do: it is the seed the others were started with.
    fn choose_leaver(&self, members: &[MemberObs]) -> Result<MemberObs, ActionError> {
        let nodes = self.nodes();
        let mut candidates: Vec<(u32, &MemberObs)> = members
            .iter()
            .filter_map(|m| {
                let node = nodes.iter().find(|n| n.id == m.id && n.alive)?;
                Some((node.index().unwrap_or(0), m))
            })
            .collect();
        candidates.sort_by_key(|(i, _)| *i);
        match candidates.as_slice() {
            [] => Err(ActionError::NoCandidate(format!(
                "no member runs from {}",
                self.dir.display()
            ))),
            [.., (_, newest)] => Ok((*newest).clone()),
        }
    }

    fn remove_node(&mut self, member: &MemberObs, _to: usize) -> Result<String, ActionError> {
        let killed = local_cluster::stop_node(&self.dir, &member.id, STOP_GRACE)
            .map_err(|e| ActionError::Local(format!("{e:#}")))?;
        self.children
            .retain_mut(|c| matches!(c.try_wait(), Ok(None)));
        Ok(if killed {
            format!(
                "stopped {} (SIGKILL after {}s)",
                member.id,
                STOP_GRACE.as_secs()
            )
        } else {
            format!("stopped {}", member.id)
        })
    }
}

/// The operator's commands, for fleets an orchestrator runs.
pub struct CommandProvisioner {
    pub scale_command: String,
    pub leave_command: Option<String>,
    pub timeout: Duration,
}

/// Runs `sh -c command`, bounded by `timeout`; its output goes to the controller's stderr.
pub fn run_command(command: &str, timeout: Duration) -> Result<(), ActionError> {
    info!("running `{command}`");
    let fail = |outcome: String| ActionError::Command {
        command: command.to_string(),
        outcome,
    };
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(command)
        .stdin(Stdio::null())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| fail(format!("could not start: {e}")))?;
    let started = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => {
                info!("`{command}` exited with {status}");
                return Ok(());
            }
            Ok(Some(status)) => return Err(fail(format!("exited with {status}"))),
            Ok(None) if started.elapsed() > timeout => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(fail(format!(
                    "did not finish within {}s and was killed",
                    timeout.as_secs()
                )));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => return Err(fail(format!("could not be waited for: {e}"))),
        }
    }
}

/// Splits an id into its text and trailing number: `ringkv-10` sorts after `ringkv-9`.
fn natural_key(id: &str) -> (String, u64, String) {
    let digits = id.len() - id.trim_end_matches(|c: char| c.is_ascii_digit()).len();
    let (head, tail) = id.split_at(id.len() - digits);
    (head.to_string(), tail.parse().unwrap_or(0), id.to_string())
}

impl Provisioner for CommandProvisioner {
    fn kind(&self) -> &'static str {
        "command"
    }

    fn add_node(&mut self, to: usize) -> Result<Option<(String, String)>, ActionError> {
        let to = to.to_string();
        run_command(
            &fill_template(&self.scale_command, &[("replicas", &to)]),
            self.timeout,
        )?;
        Ok(None)
    }

    /// The member with the highest ordinal: a StatefulSet scaled down by one removes its
    /// highest-numbered pod, so that is the node that must hand its data off first (give nodes
    /// their pod name as id: `--node-id $(POD_NAME)`).
    fn choose_leaver(&self, members: &[MemberObs]) -> Result<MemberObs, ActionError> {
        members
            .iter()
            .max_by_key(|m| natural_key(&m.id))
            .cloned()
            .ok_or_else(|| ActionError::NoCandidate("no members".into()))
    }

    fn request_leave(
        &mut self,
        probe: &Probe,
        member: &MemberObs,
        to: usize,
    ) -> Result<(), ActionError> {
        match &self.leave_command {
            None => post_leave(probe, member),
            Some(template) => {
                let to = to.to_string();
                let command = fill_template(
                    template,
                    &[
                        ("replicas", &to),
                        ("node", &member.id),
                        ("http", &member.http_addr),
                    ],
                );
                run_command(&command, self.timeout).map_err(|e| ActionError::LeaveRefused {
                    node: member.id.clone(),
                    reason: e.to_string(),
                })
            }
        }
    }

    fn remove_node(&mut self, _member: &MemberObs, to: usize) -> Result<String, ActionError> {
        let to_s = to.to_string();
        let command = fill_template(&self.scale_command, &[("replicas", &to_s)]);
        run_command(&command, self.timeout)?;
        Ok(format!("ran `{command}`"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: &str) -> MemberObs {
        MemberObs {
            id: id.into(),
            http_addr: format!("{id}:7380"),
            status: Status::Up,
            unhealthy: false,
            scraped: true,
            ops_per_sec: Some(0.0),
            p99_ms: None,
            disk_bytes: None,
        }
    }

    #[test]
    fn command_provisioner_removes_the_highest_ordinal() {
        let p = CommandProvisioner {
            scale_command: "true {replicas}".into(),
            leave_command: None,
            timeout: Duration::from_secs(5),
        };
        let ms: Vec<MemberObs> = ["ringkv-0", "ringkv-10", "ringkv-9", "ringkv-2"]
            .iter()
            .map(|id| member(id))
            .collect();
        assert_eq!(p.choose_leaver(&ms).unwrap().id, "ringkv-10");
        assert!(p.choose_leaver(&[]).is_err());
    }

    #[test]
    fn commands_report_their_exit_status_and_are_bounded() {
        assert_eq!(run_command("exit 0", Duration::from_secs(5)), Ok(()));
        let e = run_command("exit 3", Duration::from_secs(5)).unwrap_err();
        assert!(e.to_string().contains("exit status: 3"), "{e}");
        let started = Instant::now();
        let e = run_command("sleep 5", Duration::from_millis(300)).unwrap_err();
        assert!(e.to_string().contains("killed"), "{e}");
        assert!(started.elapsed() < Duration::from_secs(3));
    }

    #[test]
    fn command_provisioner_runs_its_templates() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        let log_s = log.display().to_string();
        let mut p = CommandProvisioner {
            scale_command: format!("echo scale {{replicas}} >> {log_s}"),
            leave_command: Some(format!(
                "echo leave {{node}} {{http}} {{replicas}} >> {log_s}"
            )),
            timeout: Duration::from_secs(5),
        };
        assert_eq!(p.add_node(5), Ok(None));
        let probe = Probe::new(None).unwrap();
        p.request_leave(&probe, &member("ringkv-4"), 4).unwrap();
        p.remove_node(&member("ringkv-4"), 4).unwrap();
        assert_eq!(
            std::fs::read_to_string(&log).unwrap(),
            "scale 5\nleave ringkv-4 ringkv-4:7380 4\nscale 4\n"
        );
        // A failing leave hook is a refusal: the caller stops nothing.
        p.leave_command = Some("exit 1".into());
        let e = p.request_leave(&probe, &member("ringkv-4"), 4).unwrap_err();
        assert_eq!(e.result_word(), "refused");
    }

    #[test]
    fn leave_of_an_unreachable_node_is_refused() {
        let probe = Probe::new(None).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut m = member("n9");
        m.http_addr = format!("127.0.0.1:{port}");
        match post_leave(&probe, &m) {
            Err(ActionError::LeaveRefused { node, reason }) => {
                assert_eq!(node, "n9");
                assert!(reason.contains("cannot reach"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
    }
}
