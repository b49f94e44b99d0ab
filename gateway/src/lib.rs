//! # corral-gateway
//!
//! **Not built yet.** This crate will hold the gateway of a Corral cluster: a hyper reverse
//! proxy that pins every Engine.IO session to one worker node (by an authenticated session
//! token, an affinity cookie, or a consistent hash of the client's address), tunnels WebSocket
//! upgrades, and needs no shared state between replicas. `docs/architecture.md` describes the
//! design; until the crate is filled in, `corral` has no `gateway` subcommand.
