//! `ringload`: the load generator and benchmark origin that ships with ringway.
//! Filled in by the ringload issue; for now it only parses its command line.

use clap::Parser;

/// ringload: load generator and benchmark origin for ringway.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {}

fn main() -> anyhow::Result<()> {
    let _args = Args::parse();
    eprintln!("ringload: not built yet; see the ringload issue");
    Ok(())
}
