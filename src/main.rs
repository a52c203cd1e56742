//! The `sluice` binary: a thin shell over the library.

mod cli;
mod mount_cmd;
mod streams_file;

use clap::Parser;

fn main() {
    let cli = cli::Cli::parse();
    let code = cli::run(cli);
    std::process::exit(code);
}
