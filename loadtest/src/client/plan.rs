//! Spreading sessions: which transport each one uses ([`TransportMix`]) and which local
//! address it connects from ([`SourceIps`]). Both are deterministic functions of the session
//! index, so a run can be repeated exactly.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    str::FromStr,
};

/// How a session reaches the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TransportMode {
    /// HTTP long-polling only.
    Polling,
    /// WebSocket only (no polling handshake).
    WebSocket,
    /// Polling first, then upgraded to WebSocket (what browsers do).
    Upgrade,
}

impl TransportMode {
    /// `polling`, `websocket` or `upgrade`.
    pub fn as_str(self) -> &'static str {
        match self {
            TransportMode::Polling => "polling",
            TransportMode::WebSocket => "websocket",
            TransportMode::Upgrade => "upgrade",
        }
    }
}

impl fmt::Display for TransportMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TransportMode {
    type Err = MixError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "polling" => Ok(TransportMode::Polling),
            "websocket" | "ws" => Ok(TransportMode::WebSocket),
            "upgrade" => Ok(TransportMode::Upgrade),
            other => Err(MixError(format!(
                "unknown transport {other:?} (polling, websocket, upgrade)"
            ))),
        }
    }
}

/// A bad `--transports` mix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("transport mix: {0}")]
pub struct MixError(String);

/// Proportions of transports over the sessions of a run, e.g. `polling=20,upgrade=50,websocket=30`
/// (weights, not necessarily percentages; a bare `websocket` means all of them).
///
/// [`pick`](TransportMix::pick) is a fixed, interleaved sequence (smooth weighted
/// round-robin): after any number `n` of sessions each transport has had its share of `n`
/// within one session, and exactly its share whenever `n` is a multiple of the reduced weights'
/// sum (10 for the example above).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportMix {
    weights: Vec<(TransportMode, u32)>,
    cycle: Vec<TransportMode>,
}

/// The longest cycle a mix may have (the sum of its weights divided by their GCD).
const MAX_CYCLE: u64 = 1_000_000;

impl TransportMix {
    /// Every session on `mode`.
    pub fn single(mode: TransportMode) -> TransportMix {
        TransportMix {
            weights: vec![(mode, 1)],
            cycle: vec![mode],
        }
    }

    /// A mix from `(transport, weight)` pairs; zero weights are dropped.
    pub fn new(weights: &[(TransportMode, u32)]) -> Result<TransportMix, MixError> {
        let mut kept: Vec<(TransportMode, u32)> = Vec::new();
        for &(mode, weight) in weights {
            if kept.iter().any(|(m, _)| *m == mode) {
                return Err(MixError(format!("{mode} is given twice")));
            }
            if weight > 0 {
                kept.push((mode, weight));
            }
        }
        if kept.is_empty() {
            return Err(MixError("no transport has a weight above zero".into()));
        }
        let divisor = kept.iter().fold(0, |g, &(_, w)| gcd(g, w));
        let reduced: Vec<(TransportMode, u64)> = kept
            .iter()
            .map(|&(m, w)| (m, u64::from(w / divisor)))
            .collect();
        let total: u64 = reduced.iter().map(|(_, w)| w).sum();
        if total > MAX_CYCLE {
            return Err(MixError(format!(
                "weights too fine-grained (a cycle of {total} sessions); use smaller numbers"
            )));
        }
        // Smooth weighted round-robin: each step every transport gains its weight, the one
        // with the most credit is chosen and pays the total.
        let mut credit = vec![0i64; reduced.len()];
        let mut cycle = Vec::with_capacity(total as usize);
        for _ in 0..total {
            let mut best = 0;
            for (i, (_, w)) in reduced.iter().enumerate() {
                credit[i] += *w as i64;
                if credit[i] > credit[best] {
                    best = i;
                }
            }
            credit[best] -= total as i64;
            cycle.push(reduced[best].0);
        }
        Ok(TransportMix {
            weights: kept,
            cycle,
        })
    }

    /// The transport of session number `index` (0-based).
    pub fn pick(&self, index: usize) -> TransportMode {
        self.cycle[index % self.cycle.len()]
    }

    /// How many of `sessions` sessions get each transport, in the order of the mix.
    pub fn counts(&self, sessions: usize) -> Vec<(TransportMode, usize)> {
        let full = sessions / self.cycle.len();
        let rest = &self.cycle[..sessions % self.cycle.len()];
        self.weights
            .iter()
            .map(|&(mode, _)| {
                let per_cycle = self.cycle.iter().filter(|m| **m == mode).count();
                (
                    mode,
                    full * per_cycle + rest.iter().filter(|m| **m == mode).count(),
                )
            })
            .collect()
    }

    /// The weights as given (zero weights dropped).
    pub fn weights(&self) -> &[(TransportMode, u32)] {
        &self.weights
    }
}

impl Default for TransportMix {
    fn default() -> Self {
        TransportMix::single(TransportMode::WebSocket)
    }
}

impl FromStr for TransportMix {
    type Err = MixError;

    /// `websocket`, or `polling=20,upgrade=50,websocket=30`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut weights = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part.split_once('=') {
                Some((name, weight)) => {
                    let weight = weight.trim().parse::<u32>().map_err(|_| {
                        MixError(format!(
                            "weight of {name:?} must be a whole number, got {weight:?}"
                        ))
                    })?;
                    weights.push((name.parse()?, weight));
                }
                None => weights.push((part.parse()?, 1)),
            }
        }
        if weights.is_empty() {
            return Err(MixError("empty".into()));
        }
        TransportMix::new(&weights)
    }
}

impl fmt::Display for TransportMix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (mode, weight)) in self.weights.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{mode}={weight}")?;
        }
        Ok(())
    }
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// A bad `--source-ip` list.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("source addresses: {0}")]
pub struct SourceIpError(String);

/// Local addresses to spread sessions over (`--source-ip 127.0.0.2-127.0.0.20,10.0.0.5`):
/// single addresses and inclusive `A-B` ranges, comma separated, IPv4 or IPv6.
///
/// Each source address gives a session its own range of ephemeral ports, so more sources
/// mean more connections to one server address than the ~28 000 ports of one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceIps(Vec<IpAddr>);

/// Addresses one list may expand to.
const MAX_SOURCE_IPS: u128 = 65_536;

impl SourceIps {
    /// Every address, in the order given.
    pub fn addrs(&self) -> &[IpAddr] {
        &self.0
    }

    /// The address of session number `index` (round-robin).
    pub fn pick(&self, index: usize) -> IpAddr {
        self.0[index % self.0.len()]
    }

    /// How many addresses.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Never true for a parsed list.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl FromStr for SourceIps {
    type Err = SourceIpError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut addrs = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let parse = |text: &str| {
                text.trim()
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse::<IpAddr>()
                    .map_err(|_| SourceIpError(format!("{:?} is not an IP address", text.trim())))
            };
            let (first, last) = match part.split_once('-') {
                Some((a, b)) => (parse(a)?, parse(b)?),
                None => {
                    let ip = parse(part)?;
                    (ip, ip)
                }
            };
            let (start, end, v4) = match (first, last) {
                (IpAddr::V4(a), IpAddr::V4(b)) => {
                    (u128::from(u32::from(a)), u128::from(u32::from(b)), true)
                }
                (IpAddr::V6(a), IpAddr::V6(b)) => (u128::from(a), u128::from(b), false),
                _ => {
                    return Err(SourceIpError(format!("{part:?} mixes IPv4 and IPv6")));
                }
            };
            if end < start {
                return Err(SourceIpError(format!("{part:?} ends before it starts")));
            }
            if (end - start + 1) + addrs.len() as u128 > MAX_SOURCE_IPS {
                return Err(SourceIpError(format!(
                    "more than {MAX_SOURCE_IPS} addresses"
                )));
            }
            for n in start..=end {
                addrs.push(if v4 {
                    IpAddr::V4(Ipv4Addr::from(n as u32))
                } else {
                    IpAddr::V6(Ipv6Addr::from(n))
                });
            }
        }
        if addrs.is_empty() {
            return Err(SourceIpError("no address given".into()));
        }
        Ok(SourceIps(addrs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mixes_are_exact_per_cycle_and_interleaved() {
        let mix: TransportMix = "polling=20,upgrade=50,websocket=30".parse().unwrap();
        assert_eq!(
            mix.counts(100),
            vec![
                (TransportMode::Polling, 20),
                (TransportMode::Upgrade, 50),
                (TransportMode::WebSocket, 30)
            ]
        );
        // Interleaved: the first 10 sessions already hold the proportions.
        let first: Vec<_> = (0..10).map(|i| mix.pick(i)).collect();
        assert_eq!(
            first
                .iter()
                .filter(|m| **m == TransportMode::Upgrade)
                .count(),
            5
        );
        // Any prefix is within one of its share.
        for n in 0..200 {
            for (mode, count) in mix.counts(n) {
                let weight = mix.weights().iter().find(|(m, _)| *m == mode).unwrap().1;
                let share = n as f64 * f64::from(weight) / 100.0;
                assert!((count as f64 - share).abs() < 1.0, "{n} {mode} {count}");
                let picked = (0..n).filter(|&i| mix.pick(i) == mode).count();
                assert_eq!(picked, count);
            }
        }
        assert_eq!(mix.to_string(), "polling=20,upgrade=50,websocket=30");
    }

    #[test]
    fn mix_errors() {
        assert_eq!(
            "ws".parse::<TransportMix>().unwrap().pick(7),
            TransportMode::WebSocket
        );
        assert_eq!(
            "polling=0,upgrade=3"
                .parse::<TransportMix>()
                .unwrap()
                .counts(5),
            vec![(TransportMode::Upgrade, 5)]
        );
        for bad in [
            "",
            "polling=0",
            "carrier=1",
            "polling=x",
            "polling=1,polling=2",
            "polling=-1",
        ] {
            assert!(bad.parse::<TransportMix>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn source_ranges() {
        let ips: SourceIps = "127.0.0.2-127.0.0.4, 10.0.0.1".parse().unwrap();
        let v4 = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            ips.addrs(),
            &[
                v4("127.0.0.2"),
                v4("127.0.0.3"),
                v4("127.0.0.4"),
                v4("10.0.0.1")
            ]
        );
        assert_eq!(ips.pick(5), v4("127.0.0.3"));
        let ips: SourceIps = "fd00::fe-fd00::101,[::1]".parse().unwrap();
        assert_eq!(ips.len(), 5);
        assert_eq!(ips.addrs()[2], v4("fd00::100"));
        assert_eq!(ips.addrs()[4], v4("::1"));
        let ips: SourceIps = "10.0.0.255-10.0.1.0".parse().unwrap();
        assert_eq!(ips.addrs(), &[v4("10.0.0.255"), v4("10.0.1.0")]);
        for bad in [
            "",
            "1.2.3",
            "10.0.0.5-10.0.0.1",
            "10.0.0.1-::2",
            "::-::ffff:ffff",
            "a-b",
        ] {
            assert!(bad.parse::<SourceIps>().is_err(), "{bad:?}");
        }
    }
}
