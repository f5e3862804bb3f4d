//! hactl's library: the command line, the engine and the lab.

pub mod cli;
pub mod lab;
