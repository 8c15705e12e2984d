//! The `tidal` command: thin wiring from the command line to the subcommands in the library.

fn main() {
    std::process::exit(tidal::run());
}
