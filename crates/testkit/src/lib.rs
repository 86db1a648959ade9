//! Test support shared by every crate's tests: a fresh database per test on a real Postgres
//! (`TEST_DATABASE_URL`, else `DATABASE_URL`, else `postgres://postgres@127.0.0.1:5432/postgres`;
//! with the `testcontainers` feature, Postgres 16 in a container when no server answers and a
//! Docker engine is available), a throwaway server a test may restart and a TCP proxy a test can
//! cut. (Validation against Tidepool's published schemas lives in `sandbox::tidepool`: the
//! data-service stand-in uses it too.)

pub mod cluster;
pub mod db;
pub mod proxy;

pub use cluster::{Cluster, Restart};
pub use db::{TestDb, server_url, with_database};
pub use proxy::Proxy;
