//! The simulator's rules, each checked over real HTTP against `start_on("127.0.0.1:0", …)`.
//!
//! One test binary with modules, so the workspace links it once.

mod binary;
mod business;
mod classic;
mod common;
mod component;
mod control;
mod faults;
mod open_platform;
mod stable;
mod tickets;
