//! One file per `cargo xtask` command; a command imports the layers below it, never another command.

pub mod baseline;
pub mod bench;
pub mod build_all;
pub mod ci;
pub mod compare;
pub mod docker;
pub mod fuzz;
pub mod gate;
pub mod lint;
pub mod merge;
pub mod micro;
pub mod report;
pub mod setup;
