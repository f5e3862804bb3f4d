//! hactl's library: the command line, the engine and the lab.

pub mod cli;
pub mod commands;
pub mod engine;
pub mod fsutil;
pub mod inputs;
pub mod inventory;
pub mod journal;
pub mod lab;
pub mod modules;
pub mod outcome;
pub mod pki;
pub mod playbook;
pub mod quote;
pub mod render;
pub mod report;
pub mod saved_plan;
pub mod secrets;
pub mod ssh;
pub mod stack;
pub mod workspace;
