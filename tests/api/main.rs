//! The one integration-test binary: real HTTP against real servers.

mod delivery;
mod engine;
mod helpers;
mod process;
mod receiver;
mod smoke;
