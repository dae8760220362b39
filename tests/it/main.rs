//! Integration tests: the real `holdfast` binary on temporary stores.

// tests read the real clock and the environment the test runner sets
#![allow(clippy::disallowed_methods)]

mod access;
mod audit;
mod aws_kms;
mod backfill;
mod byok;
mod catalog;
mod common;
mod crash;
mod dictionaries;
mod discovery;
mod docs;
mod durability;
mod exit;
mod export;
mod help;
mod hooks;
mod intake;
mod keys;
mod pipeline;
mod query;
mod readers;
mod retention;
mod s3;
mod serve;
mod sql;
mod stores;
mod table;
mod tamper;
mod transit;
