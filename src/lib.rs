//! hactl's library: the command line, the engine and the lab.

pub mod cli;
pub mod inventory;
pub mod lab;
pub mod modules;
pub mod render;
pub mod secrets;
