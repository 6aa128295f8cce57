//! posthorn: a self-hosted webhook sender whose management API is wire-compatible with
//! Fullstory's Webhooks API v1. See `docs/ARCHITECTURE.md` for the map.

pub mod app;
pub mod bootstrap;
pub mod cli;
pub mod client;
pub mod config;
pub mod crypto;
pub mod delivery;
pub mod domain;
pub mod error;
pub mod fan_out;
pub mod http;
pub mod listen;
pub mod publisher;
pub mod server;
pub mod store;
pub mod telemetry;
pub mod web;
