//! The drivers this crate ships.

pub mod memory;
pub mod nats;
