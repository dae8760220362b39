//! Integration tests: the real `holdfast` binary on temporary stores.

mod access;
mod audit;
mod common;
mod crash;
mod discovery;
mod durability;
mod hooks;
mod intake;
mod pipeline;
mod query;
mod readers;
mod retention;
mod sql;
mod tamper;
