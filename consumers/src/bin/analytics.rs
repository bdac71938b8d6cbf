//! The analytics consumer: an append-only Parquet change log plus a
//! current-state view (see `siphon_consumers::analytics` and
//! docs/consumers.md).

use std::path::PathBuf;

use clap::Parser;
use siphon_consumers::CommonArgs;
use siphon_consumers::analytics::Analytics;

#[derive(Parser)]
#[command(about = "siphon events → Parquet files (change log and current state)")]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    /// Output directory (log/ and state.parquet).
    #[arg(long, env = "OUT_DIR", default_value = "analytics")]
    out_dir: PathBuf,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut store = Analytics::open(&args.out_dir)?;
    siphon_consumers::run(&args.common, &mut store)
}
