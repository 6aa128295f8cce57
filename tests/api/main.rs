//! The one integration-test binary: real HTTP against real servers.

mod auth;
mod catalog;
mod cli;
mod delivery;
mod endpoints;
mod engine;
mod errors;
mod helpers;
mod ops;
mod process;
mod receiver;
mod smoke;
mod subscriptions;
