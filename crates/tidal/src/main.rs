//! The `tidal` command: parses the command line and hands each subcommand to its module.

mod agent;
mod apply;
mod bench;
mod cli;
mod doctor;
mod exit;
mod restore_cmd;
mod run;
mod status;

use clap::Parser;
use cli::{Cli, Command};

fn main() {
    let cli = Cli::parse();
    exit::init_logging(cli.global.verbose, matches!(cli.command, Command::Run(_)));
    let code = match &cli.command {
        Command::Run(a) => run::main(&cli.global, a),
        Command::Doctor(a) => doctor::main(&cli.global, a),
        Command::Restore(a) => restore_cmd::main(&cli.global, a),
        Command::Apply(a) => apply::main(&cli.global, a),
        Command::Agent(a) => agent::main(&cli.global, a),
        Command::Status(a) => status::main(&cli.global, a),
        Command::Bench(a) => bench::main(&cli.global, a),
        Command::Worker(a) => bench::worker::main(a),
    };
    std::process::exit(code);
}
