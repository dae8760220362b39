//! Integration tests: the real `holdfast` binary on temporary stores.

mod common;
mod crash;
mod pipeline;
mod readers;
mod tamper;
