//! # corral-adapter-nats
//!
//! **Not built yet.** This crate will hold a socketioxide adapter that shares rooms, broadcasts,
//! acks and remote socket operations between Corral nodes, written once over a small `Driver`
//! trait with a NATS driver and an in-memory driver. Until it lands, every node is a standalone
//! Socket.IO server (socketioxide's local adapter). `docs/architecture.md` describes the design.
