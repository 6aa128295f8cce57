//! The one integration-test binary: real HTTP against real servers.

mod auth;
mod catalog;
mod cli;
mod endpoints;
mod errors;
mod helpers;
mod ops;
mod smoke;
mod subscriptions;
