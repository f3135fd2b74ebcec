//! The `countersign` binary: parse the command line, set up the system log,
//! dispatch. Errors print as one line on stderr and exit 1.

use clap::Parser;

/// mimalloc: fewer cycles per call than glibc malloc on the proxy's many
/// small, short-lived allocations (measured in docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay`, from the C header of the version
/// the sys crate builds (the crate does not name it; a test below checks
/// that the option the crate names after it still follows it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Return freed memory to the system at once rather than after mimalloc's
/// purge delay (up to a second, and only on later allocator activity).
/// A proxy holding many calls frees and reuses memory in waves; with the
/// delay, 10,000 held calls measured 203–208 MB, without it 181–187 MB,
/// and CPU per call did not differ beyond the noise (docs/benchmarks.md).
/// An operator's own `MIMALLOC_PURGE_DELAY` is left in force.
fn purge_freed_memory_at_once() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets one integer option of the allocator; mimalloc reads
        // it on its next purge, and any value is valid.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0) };
    }
}

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
    purge_freed_memory_at_once();
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

#[cfg(test)]
mod tests {
    #[test]
    fn the_purge_delay_option_is_the_one_between_its_neighbours() {
        // mimalloc.h: ..., mi_option_eager_commit_delay (deprecated in v3,
        // and not named by the sys crate then), mi_option_purge_delay,
        // mi_option_use_numa_nodes, ...
        assert_eq!(
            libmimalloc_sys::mi_option_use_numa_nodes - 1,
            super::MI_OPTION_PURGE_DELAY
        );
        super::purge_freed_memory_at_once();
        // SAFETY: reads one integer option.
        let now = unsafe { libmimalloc_sys::mi_option_get(super::MI_OPTION_PURGE_DELAY) };
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            assert_eq!(now, 0);
        }
    }
}
