#![forbid(unsafe_code)]

use clap::Parser;
use remora_proxy::cli::Cli;

fn main() -> anyhow::Result<()> {
    let _cli = Cli::parse();
    Ok(())
}
