//! The engine against the real WeChat simulator (`wechat-sim`): single flight,
//! compare-and-refresh, short lifetimes, faults, restarts, clusters, tickets and log hygiene.

mod common;
mod drop_in;
mod faults;
mod lifetimes;
mod logs;
mod metric_names;
mod restart;
mod single_flight;
mod tickets;
