//! The `countersign` binary: parse the command line, set up the system log,
//! dispatch. Errors print as one line on stderr and exit 1.

use clap::Parser;

/// mimalloc: fewer cycles per call than glibc malloc on the proxy's many
/// small, short-lived allocations (measured in docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use countersign::cli::{Cli, Command};
use countersign::config::{Config, LogFormat};

fn init_logging(format: LogFormat, level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("COUNTERSIGN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    // Colour only on a terminal: a file or a pipe gets plain text.
    use std::io::IsTerminal as _;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
}

fn serve(config: &std::path::Path) -> anyhow::Result<()> {
    let config = Config::load(config)?;
    init_logging(config.log.format, &config.log.level);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(countersign::app::serve(config))
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(c) => serve(&c.config),
        other => countersign::cli::run(other),
    };
    if let Err(e) = result {
        // `{:#}` prints the context chain on one line: "file: field: cause".
        eprintln!("countersign: {e:#}");
        std::process::exit(1);
    }
}
