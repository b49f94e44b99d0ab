//! # corral-loadtest
//!
//! **Not built yet.** This crate will hold `corral loadtest`: a lean Socket.IO v5 client that
//! holds many sessions and measures connect times, latency percentiles, throughput and delivery
//! completeness against any server speaking the bench protocol (`docs/loadtest.md`), which the
//! node's `bench` app already implements.
