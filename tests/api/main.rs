//! The one integration-test binary: real HTTP against real servers.

mod helpers;
mod smoke;
