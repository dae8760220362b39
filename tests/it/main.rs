//! Integration tests: the real `holdfast` binary on temporary stores.

mod access;
mod audit;
mod common;
mod crash;
mod discovery;
mod hooks;
mod pipeline;
mod readers;
mod retention;
mod sql;
mod tamper;
