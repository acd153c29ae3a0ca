//! The autoscaler's decision: a pure, deterministic function of the policy, the controller's
//! small state (since when a signal has held, when the last action was) and one observation, at
//! a given time. No sockets, clocks or processes here, so every rule is a unit test.
//!
//! The rules, in the order they are applied:
//! 1. Nothing reachable: hold.
//! 2. The load signal is classified (high, low, neutral, unknown) and the hysteresis windows are
//!    moved: a high signal starts (or continues) the up window and closes the down window, and
//!    the other way round; neutral or unknown closes both.
//! 3. Within `cooldown` after an action: hold.
//! 4. A member `joining` or `leaving` (a change in progress): hold. One step at a time.
//! 5. Below the floor (`max(N, min_nodes)`): add a node. Above `max_nodes`: remove one (if safe).
//! 6. High for `up_after`: add a node, unless at `max_nodes`.
//! 7. Low for `down_after`: remove a node, unless at the floor, or a member is down, suspected or
//!    did not answer its scrape (its data might be the only copy of something; never shrink a
//!    cluster that is not whole).
//!
//! "High" is any of: ops/s per node above target; the worst node's p99 above `max_p99_ms`; the
//! fullest node's disk above `max_disk_fraction`. "Low" needs all of: every member's rate known;
//! ops/s per node below `down_fraction * target`, *and* the same load spread over one node fewer
//! still below target (so removing a node does not itself cause the next scale-up); p99 within
//! bound; the fullest disk, grown by n/(n-1), still within bound.

use super::policy::Policy;
use std::fmt;
use std::time::Duration;

/// A member's lifecycle status as `/v1/cluster` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Joining,
    Up,
    Leaving,
    Left,
    /// A status this controller does not know: treated as a change in progress.
    Unknown,
}

impl Status {
    pub fn parse(s: &str) -> Status {
        match s {
            "joining" => Status::Joining,
            "up" => Status::Up,
            "leaving" => Status::Leaving,
            "left" => Status::Left,
            _ => Status::Unknown,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Joining => "joining",
            Status::Up => "up",
            Status::Leaving => "leaving",
            Status::Left => "left",
            Status::Unknown => "unknown",
        }
    }
}

/// One member (not `left`) as observed this interval.
#[derive(Debug, Clone, PartialEq)]
pub struct MemberObs {
    pub id: String,
    pub http_addr: String,
    pub status: Status,
    /// Down or suspected in the view the controller read.
    pub unhealthy: bool,
    /// Its `/metrics` answered this interval.
    pub scraped: bool,
    /// Client operations per second since the previous scrape (none on the first).
    pub ops_per_sec: Option<f64>,
    pub p99_ms: Option<f64>,
    pub disk_bytes: Option<u64>,
}

/// One interval's observation of the cluster.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Observation {
    /// Members that are not `left`: the cluster's size.
    pub members: Vec<MemberObs>,
    /// N as the cluster reports it; the floor is never below it.
    pub cluster_n: Option<usize>,
}

impl Observation {
    pub fn nodes(&self) -> usize {
        self.members.len()
    }

    /// The cluster's client operations per second: the sum over members whose rate is known
    /// (a lower bound when some is not).
    pub fn ops_per_sec(&self) -> Option<f64> {
        let rates: Vec<f64> = self.members.iter().filter_map(|m| m.ops_per_sec).collect();
        (!rates.is_empty()).then(|| rates.iter().sum())
    }

    /// Every member's rate is known.
    pub fn rates_complete(&self) -> bool {
        !self.members.is_empty() && self.members.iter().all(|m| m.ops_per_sec.is_some())
    }

    /// The worst member's p99.
    pub fn p99_ms(&self) -> Option<f64> {
        self.members
            .iter()
            .filter_map(|m| m.p99_ms)
            .max_by(f64::total_cmp)
    }

    /// The fullest member's disk use as a fraction of `capacity`.
    pub fn disk_fraction(&self, capacity: Option<u64>) -> Option<f64> {
        let capacity = capacity.filter(|c| *c > 0)? as f64;
        self.members
            .iter()
            .filter_map(|m| m.disk_bytes)
            .max()
            .map(|b| b as f64 / capacity)
    }

    fn disk_complete(&self) -> bool {
        self.members.iter().all(|m| m.disk_bytes.is_some())
    }
}

/// What the controller remembers between observations.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ControllerState {
    /// Since when load has been high, without a break.
    pub high_since: Option<Duration>,
    /// Since when load has been low, without a break.
    pub low_since: Option<Duration>,
    /// When the last action (successful or not) ended; the cooldown counts from here.
    pub last_action_at: Option<Duration>,
}

impl ControllerState {
    /// Records that an action ended at `now` (also when it failed or was refused: the cooldown
    /// keeps a failing action from being retried every interval).
    pub fn action_ended(&mut self, now: Duration) {
        self.last_action_at = Some(now);
        self.high_since = None;
        self.low_since = None;
    }
}

/// Why the controller holds.
#[derive(Debug, Clone, PartialEq)]
pub enum Hold {
    NoMembers,
    Cooldown {
        remaining: Duration,
    },
    InProgress {
        member: String,
        status: Status,
    },
    /// Load within the band between the scale-down and scale-up thresholds.
    WithinTarget,
    /// Not enough samples for a rate yet (first interval, a new or restarted node).
    Warming,
    /// The signal has not lasted its window yet.
    Waiting {
        up: bool,
        held: Duration,
        window: Duration,
    },
    AtMax {
        max: usize,
    },
    AtFloor {
        floor: usize,
    },
    /// Scale-down wanted, but a member is down, suspected or did not answer.
    Unhealthy {
        member: String,
    },
}

/// The decision for one observation. `from` and `to` differ by exactly one.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Hold(Hold),
    ScaleUp {
        from: usize,
        to: usize,
        reason: String,
    },
    ScaleDown {
        from: usize,
        to: usize,
        reason: String,
    },
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Decision::ScaleUp { from, to, reason } => {
                write!(f, "scale up {from} -> {to}: {reason}")
            }
            Decision::ScaleDown { from, to, reason } => {
                write!(f, "scale down {from} -> {to}: {reason}")
            }
            Decision::Hold(h) => match h {
                Hold::NoMembers => write!(f, "hold: no node reachable"),
                Hold::Cooldown { remaining } => {
                    write!(f, "hold: cooldown, {:.1}s left", remaining.as_secs_f64())
                }
                Hold::InProgress { member, status } => write!(
                    f,
                    "hold: {member} is {} (one change at a time)",
                    status.as_str()
                ),
                Hold::WithinTarget => write!(f, "hold: load within target"),
                Hold::Warming => write!(f, "hold: waiting for a second sample to measure load"),
                Hold::Waiting { up, held, window } => write!(
                    f,
                    "hold: load {} for {:.1}s of {:.1}s",
                    if *up { "high" } else { "low" },
                    held.as_secs_f64(),
                    window.as_secs_f64()
                ),
                Hold::AtMax { max } => write!(f, "hold: load high but at max_nodes ({max})"),
                Hold::AtFloor { floor } => {
                    write!(
                        f,
                        "hold: load low but at the floor ({floor} = max(N, min_nodes))"
                    )
                }
                Hold::Unhealthy { member } => write!(
                    f,
                    "hold: load low but {member} is down, suspected or unreachable; never \
                     shrink a cluster that is not whole"
                ),
            },
        }
    }
}

/// The load signal of one observation.
#[derive(Debug, Clone, PartialEq)]
enum Signal {
    High(String),
    Low(String),
    Neutral,
    Unknown,
}

fn classify(policy: &Policy, obs: &Observation) -> Signal {
    let nodes = obs.nodes() as f64;
    let target = policy.target_ops_per_node;
    let ops = obs.ops_per_sec();
    let p99 = obs.p99_ms();
    let disk = obs.disk_fraction(policy.disk_capacity_bytes);
    // High: any one reason is enough, and a partial sum of rates is a lower bound, so it counts.
    if let Some(ops) = ops {
        if ops / nodes > target {
            return Signal::High(format!(
                "{:.1} ops/s per node over target {target}",
                ops / nodes
            ));
        }
    }
    if let (Some(p99), Some(max)) = (p99, policy.max_p99_ms) {
        if p99 > max {
            return Signal::High(format!("p99 {p99:.1} ms over max_p99_ms {max}"));
        }
    }
    if let (Some(disk), Some(max)) = (disk, policy.max_disk_fraction) {
        if disk > max {
            return Signal::High(format!(
                "disk {:.1}% over max_disk_fraction {max}",
                disk * 100.0
            ));
        }
    }
    // Low: every condition, on complete figures.
    let Some(ops) = ops.filter(|_| obs.rates_complete()) else {
        return Signal::Unknown;
    };
    let per_node = ops / nodes;
    let after = if nodes > 1.0 {
        ops / (nodes - 1.0)
    } else {
        f64::INFINITY
    };
    let disk_ok = match policy.max_disk_fraction {
        None => true,
        Some(max) => {
            obs.disk_complete()
                && disk.is_some_and(|d| nodes > 1.0 && d * nodes / (nodes - 1.0) <= max)
        }
    };
    if per_node < policy.down_fraction * target && after < target && disk_ok {
        Signal::Low(format!(
            "{per_node:.1} ops/s per node under {} x target {target}",
            policy.down_fraction
        ))
    } else {
        Signal::Neutral
    }
}

/// Decides what to do about `obs` at `now` (time since the controller started). Moves the
/// hysteresis windows in `state`; when it decides an action it also starts the cooldown at
/// `now` (the caller moves it to the action's end with [`ControllerState::action_ended`]).
pub fn decide(
    policy: &Policy,
    state: &mut ControllerState,
    obs: &Observation,
    now: Duration,
) -> Decision {
    let nodes = obs.nodes();
    if nodes == 0 {
        state.high_since = None;
        state.low_since = None;
        return Decision::Hold(Hold::NoMembers);
    }
    let floor = policy.floor().max(obs.cluster_n.unwrap_or(0));
    let max = policy.max_nodes.max(floor);

    let signal = classify(policy, obs);
    match &signal {
        Signal::High(_) => {
            state.low_since = None;
            state.high_since.get_or_insert(now);
        }
        Signal::Low(_) => {
            state.high_since = None;
            state.low_since.get_or_insert(now);
        }
        Signal::Neutral | Signal::Unknown => {
            state.high_since = None;
            state.low_since = None;
        }
    }

    if let Some(last) = state.last_action_at {
        let until = last + policy.cooldown;
        if now < until {
            return Decision::Hold(Hold::Cooldown {
                remaining: until - now,
            });
        }
    }
    if let Some(m) = obs.members.iter().find(|m| m.status != Status::Up) {
        return Decision::Hold(Hold::InProgress {
            member: m.id.clone(),
            status: m.status,
        });
    }
    let unhealthy = obs.members.iter().find(|m| m.unhealthy || !m.scraped);

    let act = |state: &mut ControllerState, decision: Decision| {
        state.action_ended(now);
        decision
    };
    if nodes < floor {
        return act(
            state,
            Decision::ScaleUp {
                from: nodes,
                to: nodes + 1,
                reason: format!("{nodes} nodes is below the floor {floor} = max(N, min_nodes)"),
            },
        );
    }
    if nodes > max {
        return match unhealthy {
            Some(m) => Decision::Hold(Hold::Unhealthy {
                member: m.id.clone(),
            }),
            None => act(
                state,
                Decision::ScaleDown {
                    from: nodes,
                    to: nodes - 1,
                    reason: format!("{nodes} nodes is above max_nodes {max}"),
                },
            ),
        };
    }
    match signal {
        Signal::Unknown => Decision::Hold(Hold::Warming),
        Signal::Neutral => Decision::Hold(Hold::WithinTarget),
        Signal::High(reason) => {
            let held = now.saturating_sub(state.high_since.unwrap_or(now));
            if held < policy.up_after {
                Decision::Hold(Hold::Waiting {
                    up: true,
                    held,
                    window: policy.up_after,
                })
            } else if nodes >= max {
                Decision::Hold(Hold::AtMax { max })
            } else {
                act(
                    state,
                    Decision::ScaleUp {
                        from: nodes,
                        to: nodes + 1,
                        reason: format!("{reason} for {:.1}s", held.as_secs_f64()),
                    },
                )
            }
        }
        Signal::Low(reason) => {
            let held = now.saturating_sub(state.low_since.unwrap_or(now));
            if nodes <= floor {
                Decision::Hold(Hold::AtFloor { floor })
            } else if let Some(m) = unhealthy {
                Decision::Hold(Hold::Unhealthy {
                    member: m.id.clone(),
                })
            } else if held < policy.down_after {
                Decision::Hold(Hold::Waiting {
                    up: false,
                    held,
                    window: policy.down_after,
                })
            } else {
                act(
                    state,
                    Decision::ScaleDown {
                        from: nodes,
                        to: nodes - 1,
                        reason: format!("{reason} for {:.1}s", held.as_secs_f64()),
                    },
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::autoscale::policy;

    fn policy(extra: &str) -> Policy {
        policy::parse(&format!(
            "min_nodes = 3\nmax_nodes = 5\nreplicas = 3\ntarget_ops_per_node = 100\n\
             up_after_secs = 10\ndown_after_secs = 30\ndown_fraction = 0.5\ncooldown_secs = 60\n\
             interval_secs = 5\n{extra}"
        ))
        .unwrap()
    }

    fn member(i: usize, ops: Option<f64>) -> MemberObs {
        MemberObs {
            id: format!("n{i}"),
            http_addr: format!("127.0.0.1:{}", 7000 + i),
            status: Status::Up,
            unhealthy: false,
            scraped: true,
            ops_per_sec: ops,
            p99_ms: None,
            disk_bytes: None,
        }
    }

    /// `nodes` healthy members carrying `total` ops/s evenly.
    fn load(nodes: usize, total: f64) -> Observation {
        Observation {
            members: (1..=nodes)
                .map(|i| member(i, Some(total / nodes as f64)))
                .collect(),
            cluster_n: Some(3),
        }
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    /// Feeds the same observation every `step` seconds from `from` to `to` (inclusive) and
    /// returns the decisions.
    fn run(
        p: &Policy,
        st: &mut ControllerState,
        obs: &Observation,
        from: u64,
        to: u64,
        step: u64,
    ) -> Vec<(u64, Decision)> {
        (from..=to)
            .step_by(step as usize)
            .map(|t| (t, decide(p, st, obs, secs(t))))
            .collect()
    }

    #[test]
    fn high_load_scales_up_only_after_the_window() {
        let p = policy("");
        let mut st = ControllerState::default();
        let obs = load(3, 3.0 * 150.0);
        let ds = run(&p, &mut st, &obs, 0, 5, 5);
        assert!(
            ds.iter()
                .all(|(_, d)| matches!(d, Decision::Hold(Hold::Waiting { up: true, .. }))),
            "{ds:?}"
        );
        match decide(&p, &mut st, &obs, secs(10)) {
            Decision::ScaleUp {
                from: 3,
                to: 4,
                reason,
            } => {
                assert!(
                    reason.contains("150.0 ops/s per node over target 100"),
                    "{reason}"
                )
            }
            d => panic!("{d}"),
        }
        // The action starts the cooldown and resets the window.
        assert_eq!(st.last_action_at, Some(secs(10)));
        assert_eq!(st.high_since, None);
    }

    #[test]
    fn a_dip_restarts_the_window() {
        let p = policy("");
        let mut st = ControllerState::default();
        let high = load(3, 450.0);
        let mid = load(3, 240.0); // 80 per node: neutral
        assert!(matches!(
            decide(&p, &mut st, &high, secs(0)),
            Decision::Hold(_)
        ));
        assert!(matches!(
            decide(&p, &mut st, &high, secs(5)),
            Decision::Hold(_)
        ));
        assert_eq!(
            decide(&p, &mut st, &mid, secs(8)),
            Decision::Hold(Hold::WithinTarget)
        );
        assert!(matches!(
            decide(&p, &mut st, &high, secs(10)),
            Decision::Hold(Hold::Waiting { .. })
        ));
        assert!(matches!(
            decide(&p, &mut st, &high, secs(19)),
            Decision::Hold(Hold::Waiting { .. })
        ));
        assert!(matches!(
            decide(&p, &mut st, &high, secs(20)),
            Decision::ScaleUp { .. }
        ));
    }

    #[test]
    fn cooldown_holds_every_action_then_lets_the_next_step_through() {
        let p = policy("");
        let mut st = ControllerState {
            last_action_at: Some(secs(100)),
            ..Default::default()
        };
        let obs = load(4, 4.0 * 150.0);
        match decide(&p, &mut st, &obs, secs(130)) {
            Decision::Hold(Hold::Cooldown { remaining }) => assert_eq!(remaining, secs(30)),
            d => panic!("{d}"),
        }
        // The window kept counting during the cooldown: at its end the next step is taken.
        assert_eq!(st.high_since, Some(secs(130)));
        assert!(matches!(
            decide(&p, &mut st, &obs, secs(160)),
            Decision::ScaleUp { from: 4, to: 5, .. }
        ));
        // A refused or failed action also starts a cooldown.
        st.action_ended(secs(170));
        assert!(matches!(
            decide(&p, &mut st, &obs, secs(200)),
            Decision::Hold(Hold::Cooldown { .. })
        ));
    }

    #[test]
    fn never_above_max_nor_below_the_floor() {
        let p = policy("");
        let mut st = ControllerState::default();
        let busy = load(5, 5.0 * 1000.0);
        let ds = run(&p, &mut st, &busy, 0, 100, 5);
        assert!(
            ds.iter()
                .skip(2)
                .all(|(_, d)| *d == Decision::Hold(Hold::AtMax { max: 5 })),
            "{ds:?}"
        );
        let mut st = ControllerState::default();
        let idle = load(3, 0.0);
        let ds = run(&p, &mut st, &idle, 0, 1000, 5);
        assert!(
            ds.iter()
                .skip(1)
                .all(|(_, d)| *d == Decision::Hold(Hold::AtFloor { floor: 3 })),
            "{ds:?}"
        );
    }

    #[test]
    fn below_the_floor_adds_a_node_at_once_and_above_max_removes_one() {
        let p = policy("");
        let mut st = ControllerState::default();
        assert!(matches!(
            decide(&p, &mut st, &load(2, 0.0), secs(0)),
            Decision::ScaleUp { from: 2, to: 3, .. }
        ));
        let mut st = ControllerState::default();
        assert!(matches!(
            decide(&p, &mut st, &load(7, 0.0), secs(0)),
            Decision::ScaleDown { from: 7, to: 6, .. }
        ));
        // ... but not while the cluster is not whole.
        let mut st = ControllerState::default();
        let mut obs = load(6, 0.0);
        obs.members[2].unhealthy = true;
        assert_eq!(
            decide(&p, &mut st, &obs, secs(0)),
            Decision::Hold(Hold::Unhealthy {
                member: "n3".into()
            })
        );
    }

    #[test]
    fn the_floor_is_never_below_the_clusters_own_n() {
        // A policy written for N = 3 against a cluster that runs N = 5.
        let p = policy("");
        let mut st = ControllerState::default();
        let mut obs = load(5, 0.0);
        obs.cluster_n = Some(5);
        let ds = run(&p, &mut st, &obs, 0, 100, 5);
        assert!(
            ds.iter().all(|(_, d)| matches!(d, Decision::Hold(_))),
            "{ds:?}"
        );
        obs.members.pop();
        assert!(matches!(
            decide(&p, &mut ControllerState::default(), &obs, secs(0)),
            Decision::ScaleUp { from: 4, to: 5, .. }
        ));
    }

    #[test]
    fn low_load_scales_down_after_its_window_one_step_at_a_time() {
        let p = policy("");
        let mut st = ControllerState::default();
        let obs = load(5, 5.0 * 10.0);
        let ds = run(&p, &mut st, &obs, 0, 25, 5);
        assert!(
            ds.iter()
                .all(|(_, d)| matches!(d, Decision::Hold(Hold::Waiting { up: false, .. }))),
            "{ds:?}"
        );
        assert!(matches!(
            decide(&p, &mut st, &obs, secs(30)),
            Decision::ScaleDown { from: 5, to: 4, .. }
        ));
        // The next step only after the cooldown, and after a fresh window (which may run
        // during the cooldown: those observations already show the new size).
        let obs = load(4, 40.0);
        assert!(matches!(
            decide(&p, &mut st, &obs, secs(65)),
            Decision::Hold(Hold::Cooldown { .. })
        ));
        assert!(matches!(
            decide(&p, &mut st, &obs, secs(89)),
            Decision::Hold(Hold::Cooldown { .. })
        ));
        assert!(matches!(
            decide(&p, &mut st, &obs, secs(90)),
            Decision::Hold(Hold::Waiting { up: false, .. })
        ));
        assert!(matches!(
            decide(&p, &mut st, &obs, secs(95)),
            Decision::ScaleDown { from: 4, to: 3, .. }
        ));
    }

    #[test]
    fn no_scale_down_while_a_change_is_in_progress_or_a_node_is_unwell() {
        let p = policy("");
        for (what, tweak) in [
            (
                "joining",
                (|m: &mut MemberObs| m.status = Status::Joining) as fn(&mut MemberObs),
            ),
            ("leaving", |m| m.status = Status::Leaving),
            ("unknown", |m| m.status = Status::Unknown),
            ("down", |m| m.unhealthy = true),
            ("unscraped", |m| {
                m.scraped = false;
            }),
        ] {
            let mut st = ControllerState::default();
            let mut obs = load(5, 0.0);
            tweak(&mut obs.members[4]);
            let ds = run(&p, &mut st, &obs, 0, 300, 5);
            assert!(
                ds.iter().all(|(_, d)| matches!(d, Decision::Hold(_))),
                "{what}: {ds:?}"
            );
        }
        // A change in progress also holds scale-up (one step at a time) ...
        let mut st = ControllerState::default();
        let mut obs = load(4, 4000.0);
        obs.members[3].status = Status::Joining;
        let ds = run(&p, &mut st, &obs, 0, 300, 5);
        assert!(
            ds.iter()
                .all(|(_, d)| matches!(d, Decision::Hold(Hold::InProgress { .. }))),
            "{ds:?}"
        );
        // ... but a down node does not: more capacity is still welcome.
        let mut st = ControllerState::default();
        let mut obs = load(4, 4000.0);
        obs.members[3].unhealthy = true;
        obs.members[3].ops_per_sec = None;
        assert!(matches!(
            decide(&p, &mut st, &obs, secs(0)),
            Decision::Hold(_)
        ));
        assert!(matches!(
            decide(&p, &mut st, &obs, secs(10)),
            Decision::ScaleUp { from: 4, to: 5, .. }
        ));
    }

    #[test]
    fn unknown_rates_hold_and_never_count_as_low() {
        let p = policy("");
        let mut st = ControllerState::default();
        // First interval: no rate anywhere.
        let first = Observation {
            members: (1..=5).map(|i| member(i, None)).collect(),
            cluster_n: Some(3),
        };
        assert_eq!(
            decide(&p, &mut st, &first, secs(0)),
            Decision::Hold(Hold::Warming)
        );
        // A new member without a rate yet: low cannot be claimed on partial figures.
        let mut partial = load(5, 0.0);
        partial.members[4].ops_per_sec = None;
        let ds = run(&p, &mut st, &partial, 0, 300, 5);
        assert!(
            ds.iter().all(|(_, d)| *d == Decision::Hold(Hold::Warming)),
            "{ds:?}"
        );
        // ... while high can: the partial sum is a lower bound.
        let mut partial = load(4, 4.0 * 300.0);
        partial.members[3].ops_per_sec = None;
        assert!(matches!(
            decide(&p, &mut st, &partial, secs(400)),
            Decision::Hold(Hold::Waiting { up: true, .. })
        ));
    }

    #[test]
    fn removing_a_node_must_not_itself_cause_the_next_scale_up() {
        // Target 100, down_fraction 0.9, N = 1. Two nodes at 60 ops/s each are under 0.9 x 100,
        // but one node would carry 120, over target: not low. Two at 45 each: one would carry
        // 90: low.
        let p = Policy {
            min_nodes: 1,
            replicas: 1,
            down_fraction: 0.9,
            ..policy("")
        };
        let mut st = ControllerState::default();
        let mut obs = load(2, 120.0);
        obs.cluster_n = Some(1);
        let ds = run(&p, &mut st, &obs, 0, 300, 5);
        assert!(
            ds.iter()
                .all(|(_, d)| *d == Decision::Hold(Hold::WithinTarget)),
            "{ds:?}"
        );
        let mut obs = load(2, 90.0);
        obs.cluster_n = Some(1);
        let mut st = ControllerState::default();
        assert!(run(&p, &mut st, &obs, 0, 30, 5)
            .iter()
            .any(|(_, d)| matches!(d, Decision::ScaleDown { from: 2, to: 1, .. })));
    }

    #[test]
    fn latency_over_bound_is_high_load() {
        let p = policy("max_p99_ms = 10\n");
        let mut st = ControllerState::default();
        let mut obs = load(3, 30.0); // low ops
        obs.members[1].p99_ms = Some(25.0);
        assert!(matches!(
            decide(&p, &mut st, &obs, secs(0)),
            Decision::Hold(Hold::Waiting { up: true, .. })
        ));
        match decide(&p, &mut st, &obs, secs(10)) {
            Decision::ScaleUp { reason, .. } => assert!(reason.contains("p99 25.0 ms"), "{reason}"),
            d => panic!("{d}"),
        }
        // Latency within bound, low ops: low (p99 alone does not block a scale-down).
        let mut obs = load(4, 0.0);
        obs.members[0].p99_ms = Some(5.0);
        let mut st = ControllerState::default();
        assert!(matches!(
            decide(&p, &mut st, &obs, secs(0)),
            Decision::Hold(Hold::Waiting { up: false, .. })
        ));
    }

    #[test]
    fn disk_over_bound_is_high_and_blocks_scale_down_when_it_would_overflow() {
        let p = policy("max_disk_fraction = 0.5\ndisk_capacity_bytes = 1000\n");
        let mut obs = load(4, 0.0);
        for m in &mut obs.members {
            m.disk_bytes = Some(300);
        }
        obs.members[2].disk_bytes = Some(600);
        let mut st = ControllerState::default();
        assert!(matches!(
            decide(&p, &mut st, &obs, secs(0)),
            Decision::Hold(Hold::Waiting { up: true, .. })
        ));
        // 400 of 1000 on the fullest of 4: 533 on 3 would pass 0.5, so no scale-down.
        obs.members[2].disk_bytes = Some(400);
        let mut st = ControllerState::default();
        let ds = run(&p, &mut st, &obs, 0, 300, 5);
        assert!(
            ds.iter()
                .all(|(_, d)| *d == Decision::Hold(Hold::WithinTarget)),
            "{ds:?}"
        );
        // 300 -> 400 on 3: fine.
        obs.members[2].disk_bytes = Some(300);
        let mut st = ControllerState::default();
        assert!(run(&p, &mut st, &obs, 0, 30, 5)
            .iter()
            .any(|(_, d)| matches!(d, Decision::ScaleDown { from: 4, to: 3, .. })));
        // A member whose disk is unknown blocks it too.
        obs.members[0].disk_bytes = None;
        let mut st = ControllerState::default();
        assert!(run(&p, &mut st, &obs, 0, 300, 5)
            .iter()
            .all(|(_, d)| matches!(d, Decision::Hold(_))));
    }

    #[test]
    fn no_members_holds_and_resets() {
        let p = policy("");
        let mut st = ControllerState {
            high_since: Some(secs(1)),
            ..Default::default()
        };
        assert_eq!(
            decide(&p, &mut st, &Observation::default(), secs(5)),
            Decision::Hold(Hold::NoMembers)
        );
        assert_eq!(st.high_since, None);
    }

    #[test]
    fn the_same_inputs_give_the_same_decisions() {
        let p = policy("max_p99_ms = 50\n");
        let script: Vec<Observation> = (0..60)
            .map(|i| {
                let nodes = 3 + (i / 20);
                let total = [50.0, 900.0, 10.0][(i / 7) % 3] * nodes as f64;
                load(nodes, total)
            })
            .collect();
        let trace = |st: &mut ControllerState| -> Vec<Decision> {
            script
                .iter()
                .enumerate()
                .map(|(i, o)| decide(&p, st, o, secs(5 * i as u64)))
                .collect()
        };
        let a = trace(&mut ControllerState::default());
        let b = trace(&mut ControllerState::default());
        assert_eq!(a, b);
        // One step at a time: every action moves by exactly one node.
        for d in &a {
            match d {
                Decision::ScaleUp { from, to, .. } => assert_eq!(*to, from + 1),
                Decision::ScaleDown { from, to, .. } => assert_eq!(*to + 1, *from),
                Decision::Hold(_) => {}
            }
        }
        assert!(a.iter().any(|d| !matches!(d, Decision::Hold(_))), "{a:?}");
    }
}
