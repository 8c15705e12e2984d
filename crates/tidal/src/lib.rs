//! The `tidal` command as a library: the CLI ([`cli`]) and one module per subcommand. The agent
//! ([`agent`]) is a value with a `tick`; its `main` only wires it to signals, the HTTP server and the
//! clock. The benchmark lives in its own crate (`tidal-bench`).

pub mod agent;
pub mod apply;
pub mod cli;
pub mod doctor;
pub mod exit;
pub mod release;
pub mod restore_cmd;
pub mod run;
pub mod status;

use clap::Parser;
use cli::{Cli, Command};

/// Parses the command line, runs the subcommand and returns the exit code.
pub fn run() -> i32 {
    let cli = Cli::parse();
    exit::init_logging(cli.global.verbose, matches!(cli.command, Command::Run(_)));
    match &cli.command {
        Command::Run(a) => run::main(&cli.global, a),
        Command::Doctor(a) => doctor::main(&cli.global, a),
        Command::Restore(a) => restore_cmd::main(&cli.global, a),
        Command::Apply(a) => apply::main(&cli.global, a),
        Command::Agent(a) => agent::main(&cli.global, a),
        Command::Status(a) => status::main(&cli.global, a),
        Command::Release(a) => release::main(&cli.global, a),
        Command::Bench(a) => tidal_bench::main(&cli.global.bench(), a),
        Command::Worker(a) => tidal_bench::run_worker(a),
    }
}
