//! Where a request goes: the routing policy, separate from the mechanics of forwarding.
//!
//! Requests of an existing session follow their token (see [`crate::token`]); new sessions
//! (and requests that are not Engine.IO at all) go where the `--affinity` rules say, in order:
//! the affinity cookie's node, then the ring's node for the client's key; with no rule left, or
//! `--affinity none`, the least loaded of two random ready nodes (or round robin). A node that
//! is not ready is skipped; degraded nodes are used only when no node is ready.

use std::{
    cell::Cell,
    collections::hash_map::RandomState,
    hash::{BuildHasher, Hasher},
    net::IpAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};

use http::{HeaderMap, header};
use ipnet::IpNet;

use crate::{
    config::{Affinity, Balance, GatewayConfig, HashKey},
    nodes::{Eligibility, Node, Snapshot},
    token::Tokens,
};

/// The node picked for a new session, and why (a metric label).
#[derive(Debug, Clone)]
pub struct Choice {
    /// The node.
    pub node: Arc<Node>,
    /// The rule that picked it.
    pub reason: &'static str,
}

/// The routing policy of a gateway.
#[derive(Debug)]
pub struct Router {
    affinity: Vec<Affinity>,
    hash_key: HashKey,
    trusted: Vec<IpNet>,
    balance: Balance,
    cookie_name: String,
    tokens: Tokens,
    turn: AtomicUsize,
}

impl Router {
    /// The policy `config` describes, signing with `tokens`.
    pub fn new(config: &GatewayConfig, tokens: Tokens) -> Router {
        Router {
            affinity: config.affinity.clone(),
            hash_key: config.hash_key.clone(),
            trusted: config.trusted_proxies.clone(),
            balance: config.balance,
            cookie_name: config.affinity_cookie.clone(),
            tokens,
            turn: AtomicUsize::new(0),
        }
    }

    /// The tokens this router signs with.
    pub fn tokens(&self) -> &Tokens {
        &self.tokens
    }

    /// Whether handshake responses set the affinity cookie.
    pub fn sets_cookie(&self) -> bool {
        self.affinity.contains(&Affinity::Cookie)
    }

    /// The name of the affinity cookie.
    pub fn cookie_name(&self) -> &str {
        &self.cookie_name
    }

    /// The client's address: the peer, or, when the peer is a trusted proxy, the first address
    /// from the right of `X-Forwarded-For` (else `Forwarded`) that is not a trusted proxy.
    pub fn client_ip(&self, headers: &HeaderMap, peer: IpAddr) -> IpAddr {
        if !self.is_trusted(peer) {
            return peer;
        }
        let mut chain = forwarded_for(headers);
        // Right to left: the nearest hop first.
        chain.reverse();
        chain
            .iter()
            .copied()
            .find(|ip| !self.is_trusted(*ip))
            .or_else(|| chain.last().copied())
            .unwrap_or(peer)
    }

    /// Whether `ip` is one of the `--trusted-proxy` networks: only such peers may set the
    /// client address or continue their own trace.
    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|net| net.contains(&ip))
    }

    /// Picks the node of a new session, or `None` when no node can take one.
    pub fn choose(
        &self,
        snapshot: &Snapshot,
        headers: &HeaderMap,
        query: Option<&str>,
        peer: IpAddr,
    ) -> Option<Choice> {
        let best = snapshot.nodes.values().map(|n| n.eligibility()).max()?;
        if best == Eligibility::No {
            return None;
        }
        let usable = |node: &Node| node.eligibility() == best;
        for rule in &self.affinity {
            match rule {
                Affinity::Cookie => {
                    let node = cookie(headers, &self.cookie_name)
                        .and_then(|value| self.tokens.open_cookie(value))
                        .and_then(|id| snapshot.nodes.get(id))
                        .filter(|node| usable(node));
                    if let Some(node) = node {
                        return Some(Choice {
                            node: node.clone(),
                            reason: "cookie",
                        });
                    }
                }
                Affinity::Address => {
                    let (key, reason) = match &self.hash_key {
                        HashKey::Address => {
                            (Some(self.client_ip(headers, peer).to_string()), "address")
                        }
                        HashKey::Header(name) => (
                            headers
                                .get(name)
                                .and_then(|v| v.to_str().ok())
                                .map(str::to_owned),
                            "header",
                        ),
                        HashKey::Query(name) => {
                            (query_param(query, name).map(str::to_owned), "query")
                        }
                    };
                    let Some(key) = key else { continue };
                    let node = snapshot
                        .ring
                        .candidates(&key)
                        .filter_map(|id| snapshot.nodes.get(id))
                        .find(|node| usable(node));
                    if let Some(node) = node {
                        return Some(Choice {
                            node: node.clone(),
                            reason: if best == Eligibility::Preferred {
                                reason
                            } else {
                                "fallback"
                            },
                        });
                    }
                }
                Affinity::None => break,
            }
        }
        let candidates: Vec<&Arc<Node>> = snapshot.nodes.values().filter(|n| usable(n)).collect();
        let node = match self.balance {
            Balance::P2c => {
                // Two distinct nodes (when there are two), the less loaded wins.
                let n = candidates.len();
                let i = random_below(n);
                let j = if n > 1 {
                    (i + 1 + random_below(n - 1)) % n
                } else {
                    i
                };
                let (a, b) = (candidates[i], candidates[j]);
                if b.load() < a.load() { b } else { a }
            }
            Balance::RoundRobin => {
                candidates[self.turn.fetch_add(1, Ordering::Relaxed) % candidates.len()]
            }
        };
        let reason = match (best, self.balance) {
            (Eligibility::Preferred, Balance::P2c) => "p2c",
            (Eligibility::Preferred, Balance::RoundRobin) => "round_robin",
            _ => "fallback",
        };
        Some(Choice {
            node: node.clone(),
            reason,
        })
    }
}

/// The value of `key` in a URL query string, undecoded.
pub fn query_param<'q>(query: Option<&'q str>, key: &str) -> Option<&'q str> {
    query?
        .split('&')
        .find_map(|pair| pair.strip_prefix(key)?.strip_prefix('='))
}

/// The value of cookie `name`.
fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k == name).then_some(v)
        })
}

/// The addresses of `X-Forwarded-For`, or of `Forwarded`'s `for=` parameters, left to right.
fn forwarded_for(headers: &HeaderMap) -> Vec<IpAddr> {
    let xff: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|ip| ip.trim().parse().ok())
        .collect();
    if !xff.is_empty() {
        return xff;
    }
    headers
        .get_all(header::FORWARDED)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split([',', ';']))
        .filter_map(|param| {
            let (key, value) = param.trim().split_once('=')?;
            if !key.eq_ignore_ascii_case("for") {
                return None;
            }
            let value = value.trim_matches('"');
            // `[2001:db8::1]:4711`, `192.0.2.60:4711` or a bare address.
            let host = match value.strip_prefix('[') {
                Some(v6) => v6.split(']').next()?,
                None => value
                    .rsplit_once(':')
                    .filter(|(h, _)| !h.contains(':'))
                    .map_or(value, |(h, _)| h),
            };
            host.parse().ok()
        })
        .collect()
}

/// A number below `n` (n > 0), from a per-thread generator seeded by the OS.
fn random_below(n: usize) -> usize {
    thread_local! {
        static STATE: Cell<u64> = Cell::new(RandomState::new().build_hasher().finish() | 1);
    }
    STATE.with(|state| {
        let mut x = state.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        state.set(x);
        (x % n as u64) as usize
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use clap::Parser;
    use http::HeaderValue;

    use super::*;
    use crate::nodes::{Member, NodeTable, Source};

    fn config(args: &[&str]) -> GatewayConfig {
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            config: GatewayConfig,
        }
        let mut argv = vec!["gateway", "--node", "x=http://127.0.0.1:1"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv).unwrap().config
    }

    fn table(ids: &[&str]) -> NodeTable {
        let table = NodeTable::default();
        let members = ids
            .iter()
            .enumerate()
            .map(|(i, id)| Member {
                id: (*id).into(),
                address: format!("127.0.0.1:{}", 1000 + i),
                draining: false,
            })
            .collect();
        table.update(Source::Static, members);
        table
    }

    fn ready(table: &NodeTable) {
        for node in table.snapshot().nodes.values() {
            node.checked_for_test();
        }
    }

    const PEER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 1, 2, 3));

    #[test]
    fn address_affinity_is_stable_and_skips_nodes_that_cannot_take_sessions() {
        let router = Router::new(&config(&["--affinity", "address"]), Tokens::new(b"k"));
        let table = table(&["a", "b", "c"]);
        ready(&table);
        let snapshot = table.snapshot();
        let first = router
            .choose(&snapshot, &HeaderMap::new(), None, PEER)
            .unwrap();
        assert_eq!(first.reason, "address");
        for _ in 0..10 {
            assert_eq!(
                router
                    .choose(&snapshot, &HeaderMap::new(), None, PEER)
                    .unwrap()
                    .node
                    .id,
                first.node.id
            );
        }
        first.node.eject();
        let next = router
            .choose(&snapshot, &HeaderMap::new(), None, PEER)
            .unwrap();
        assert_ne!(next.node.id, first.node.id, "an ejected node is skipped");
    }

    #[test]
    fn a_valid_cookie_wins_and_a_forged_one_is_ignored() {
        let tokens = Tokens::new(b"k");
        let router = Router::new(&config(&[]), tokens.clone());
        let table = table(&["a", "b", "c"]);
        ready(&table);
        let snapshot = table.snapshot();
        for id in ["a", "b", "c"] {
            let mut headers = HeaderMap::new();
            let value = format!("other=1; corral_node={}", tokens.cookie(id));
            headers.insert(header::COOKIE, HeaderValue::from_str(&value).unwrap());
            let choice = router.choose(&snapshot, &headers, None, PEER).unwrap();
            assert_eq!((choice.node.id.as_str(), choice.reason), (id, "cookie"));
        }
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("corral_node=a.forged"),
        );
        assert_eq!(
            router
                .choose(&snapshot, &headers, None, PEER)
                .unwrap()
                .reason,
            "address"
        );
    }

    #[test]
    fn forwarded_addresses_count_only_behind_trusted_proxies() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-forwarded-for",
            HeaderValue::from_static("203.0.113.7, 10.0.0.9"),
        );
        let untrusting = Router::new(&config(&[]), Tokens::new(b"k"));
        assert_eq!(
            untrusting.client_ip(&headers, PEER),
            PEER,
            "an untrusted peer's header is ignored"
        );
        let trusting = Router::new(
            &config(&["--trusted-proxy", "10.0.0.0/8"]),
            Tokens::new(b"k"),
        );
        assert_eq!(
            trusting.client_ip(&headers, PEER),
            "203.0.113.7".parse::<IpAddr>().unwrap()
        );

        let mut forwarded = HeaderMap::new();
        forwarded.insert(
            header::FORWARDED,
            HeaderValue::from_static(r#"for="[2001:db8::1]:4711";proto=https, for=10.0.0.9"#),
        );
        assert_eq!(
            trusting.client_ip(&forwarded, PEER),
            "2001:db8::1".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn without_affinity_p2c_spreads_sessions_over_every_ready_node() {
        let router = Router::new(&config(&["--affinity", "none"]), Tokens::new(b"k"));
        let table = table(&["a", "b", "c"]);
        ready(&table);
        let snapshot = table.snapshot();
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for _ in 0..3000 {
            let choice = router
                .choose(&snapshot, &HeaderMap::new(), None, PEER)
                .unwrap();
            assert_eq!(choice.reason, "p2c");
            choice.node.assigned();
            *counts.entry(choice.node.id.clone()).or_default() += 1;
        }
        let (min, max) = (
            counts.values().min().unwrap(),
            counts.values().max().unwrap(),
        );
        assert_eq!(counts.len(), 3);
        assert!(
            max - min <= 30,
            "p2c over live counts keeps loads close: {counts:?}"
        );
    }

    #[test]
    fn no_ready_node_falls_back_to_degraded_ones_and_none_at_all_is_none() {
        let router = Router::new(
            &config(&["--affinity", "none", "--balance", "round-robin"]),
            Tokens::new(b"k"),
        );
        let table = table(&["a", "b"]);
        let snapshot = table.snapshot();
        // Unchecked nodes are a fallback only.
        assert_eq!(
            router
                .choose(&snapshot, &HeaderMap::new(), None, PEER)
                .unwrap()
                .reason,
            "fallback"
        );
        for node in snapshot.nodes.values() {
            node.eject();
        }
        assert!(
            router
                .choose(&snapshot, &HeaderMap::new(), None, PEER)
                .is_none()
        );
    }

    #[test]
    fn header_and_query_keys_pin_sessions_by_their_value() {
        let router = Router::new(
            &config(&["--affinity", "address", "--hash-key", "query:room"]),
            Tokens::new(b"k"),
        );
        let table = table(&["a", "b", "c", "d"]);
        ready(&table);
        let snapshot = table.snapshot();
        let pick = |q: &str| {
            router
                .choose(&snapshot, &HeaderMap::new(), Some(q), PEER)
                .unwrap()
        };
        assert_eq!(
            pick("EIO=4&room=r1").node.id,
            pick("room=r1&transport=polling").node.id
        );
        assert_eq!(pick("room=r1").reason, "query");
        assert_eq!(pick("EIO=4").reason, "p2c", "no key: balanced");
    }
}
