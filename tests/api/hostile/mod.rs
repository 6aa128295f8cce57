//! What an attacker with one org's keys or one customer's portal link tried, over real
//! sockets: each test failed before its fix (the security review of December 2026).

mod connections;
mod data;
mod fanout;
mod limits;
mod schema;
mod streams;
