//! The admin listener: health, readiness and metrics for probes and Prometheus, and an API to
//! list, drain and undrain nodes, behind a bearer token.
//!
//! | request | answer |
//! |---|---|
//! | `GET /healthz` | 200 while the process runs |
//! | `GET /readyz` | 200 when some node can take new sessions, else 503 |
//! | `GET /metrics` | Prometheus text |
//! | `GET /nodes` | the nodes: health, drain state, sessions, tunnels (token) |
//! | `POST /nodes/{id}/drain` | no new sessions for the node; `?close=true` also closes its sessions at `--drain-rate` (token) |
//! | `POST /nodes/{id}/undrain` | back in service (token) |

use std::sync::Arc;

use http::{Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use prometheus::{Encoder, Registry, TextEncoder};

use crate::{
    metrics::GatewayMetrics,
    nodes::{AdminState, Eligibility, NodeTable},
    proxy::{Body, DrainBudget, respond},
    route::query_param,
};

/// What the admin listener serves.
pub struct Admin {
    pub(crate) table: Arc<NodeTable>,
    pub(crate) registry: Registry,
    pub(crate) metrics: GatewayMetrics,
    pub(crate) token: Option<String>,
    pub(crate) drain_budget: Arc<DrainBudget>,
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin").finish()
    }
}

fn json(status: StatusCode, value: serde_json::Value) -> Response<Body> {
    respond(status, "application/json", value.to_string())
}

impl Admin {
    /// Answers one admin request.
    pub async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        let path = req.uri().path().to_owned();
        match (req.method(), path.as_str()) {
            (&Method::GET, "/healthz") => {
                respond(StatusCode::OK, "text/plain; charset=utf-8", "ok\n")
            }
            (&Method::GET, "/readyz") => self.readyz(),
            (&Method::GET, "/metrics") => self.render_metrics(),
            _ if path == "/nodes" || path.starts_with("/nodes/") => {
                if let Some(refusal) = self.authorize(&req) {
                    return refusal;
                }
                self.nodes_api(req.method(), &path, req.uri().query())
            }
            _ => respond(
                StatusCode::NOT_FOUND,
                "text/plain; charset=utf-8",
                "not found\n",
            ),
        }
    }

    /// A refusal, unless the request carries the admin token.
    fn authorize(&self, req: &Request<Incoming>) -> Option<Response<Body>> {
        let Some(expected) = &self.token else {
            return Some(json(
                StatusCode::FORBIDDEN,
                serde_json::json!({"error": "the admin API is disabled: start the gateway with --admin-token"}),
            ));
        };
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if given.is_some_and(|token| constant_time_eq(token.as_bytes(), expected.as_bytes())) {
            None
        } else {
            let mut res = json(
                StatusCode::UNAUTHORIZED,
                serde_json::json!({"error": "a valid bearer token is required"}),
            );
            res.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                http::HeaderValue::from_static("Bearer"),
            );
            Some(res)
        }
    }

    fn readyz(&self) -> Response<Body> {
        let snapshot = self.table.snapshot();
        let best = snapshot
            .nodes
            .values()
            .map(|n| n.eligibility())
            .max()
            .unwrap_or(Eligibility::No);
        let (status, state) = match best {
            Eligibility::Preferred => (StatusCode::OK, "ready"),
            Eligibility::Fallback => (StatusCode::OK, "degraded"),
            Eligibility::No => (StatusCode::SERVICE_UNAVAILABLE, "no_node"),
        };
        json(
            status,
            serde_json::json!({"status": state, "nodes": snapshot.nodes.len()}),
        )
    }

    fn render_metrics(&self) -> Response<Body> {
        let snapshot = self.table.snapshot();
        let mut counts = [0usize; 3];
        for node in snapshot.nodes.values() {
            counts[node.eligibility() as usize] += 1;
        }
        self.metrics.set_nodes(counts[2], counts[1], counts[0]);
        let mut out = Vec::with_capacity(8 * 1024);
        if let Err(err) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::error!(%err, "encoding metrics");
        }
        respond(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            out,
        )
    }

    fn nodes_api(&self, method: &Method, path: &str, query: Option<&str>) -> Response<Body> {
        let snapshot = self.table.snapshot();
        if path == "/nodes" && method == Method::GET {
            let nodes: Vec<_> = snapshot.nodes.values().map(|n| n.view()).collect();
            return json(StatusCode::OK, serde_json::json!(nodes));
        }
        let rest = path.trim_start_matches("/nodes/");
        let Some((id, action)) = rest.split_once('/') else {
            return respond(
                StatusCode::NOT_FOUND,
                "text/plain; charset=utf-8",
                "not found\n",
            );
        };
        let Some(node) = snapshot.nodes.get(id) else {
            return json(
                StatusCode::NOT_FOUND,
                serde_json::json!({"error": format!("no node {id:?}")}),
            );
        };
        let state = match (method, action) {
            (&Method::POST, "drain") if query_param(query, "close") == Some("true") => {
                AdminState::Closing
            }
            (&Method::POST, "drain") => AdminState::Drained,
            (&Method::POST, "undrain") => AdminState::Active,
            _ => {
                return respond(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "text/plain; charset=utf-8",
                    "use POST /nodes/{id}/drain or /undrain\n",
                );
            }
        };
        node.set_admin(state);
        tracing::info!(node = id, ?state, "admin changed a node's drain state");
        if state == AdminState::Closing {
            tokio::spawn(close_tunnels(node.clone(), self.drain_budget.clone()));
        }
        json(StatusCode::OK, serde_json::json!(node.view()))
    }
}

/// Closes `node`'s WebSocket tunnels within the drain budget while it stays in `close` mode.
async fn close_tunnels(node: Arc<crate::nodes::Node>, budget: Arc<DrainBudget>) {
    let pause = std::time::Duration::from_secs(1) / budget.rate.max(1);
    // No tunnel to a closing node opens after this point (its upgrades are refused), so the
    // loop ends once every tunnel is closed, or when the operator changes their mind.
    while node.admin_state() == AdminState::Closing {
        if !budget.take() {
            tokio::time::sleep(pause).await;
        } else if node.tunnels.close(1) == 0 {
            return;
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
