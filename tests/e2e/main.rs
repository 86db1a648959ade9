//! End-to-end tests: the real app over real HTTP on a fresh database per test.

mod api_fuzz;
mod auth;
mod browser;
mod compose;
mod config;
mod connect;
mod dashboard;
mod data;
mod data_sources;
mod demo;
mod faults;
mod health;
mod limits;
mod metrics;
mod openapi;
mod outbox;
mod platform;
mod poll;
mod polling;
mod store_intents;
mod tenants;
mod tokens_at_rest;
mod workers;
