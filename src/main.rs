//! The `sluice` binary: a thin shell over the library.

mod cli;
mod mount_cmd;
mod streams_file;

use clap::Parser;

/// Warnings from library code (the mount's refresh, for instance) as `sluice: warning: ...`.
struct StderrLog;

impl log::Log for StderrLog {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.level() <= log::Level::Warn
    }
    fn log(&self, r: &log::Record) {
        if self.enabled(r.metadata()) {
            use std::io::Write;
            let _ = writeln!(std::io::stderr(), "sluice: warning: {}", r.args());
        }
    }
    fn flush(&self) {}
}

static LOGGER: StderrLog = StderrLog;

fn main() {
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(log::LevelFilter::Warn);
    let cli = cli::Cli::parse();
    let code = cli::run(cli);
    std::process::exit(code);
}
