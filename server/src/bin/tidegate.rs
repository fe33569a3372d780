//! The operator CLI. See [`tidegate_server::cli`].

use std::process::ExitCode;

use clap::Parser;
use tidegate_server::cli::{self, Cli};

fn main() -> ExitCode {
    cli::run(Cli::parse())
}
