//! The search consumer: keeps a tantivy index equal to the captured
//! tables (see `siphon_consumers::search` and docs/consumers.md); with
//! `--query`, searches the index instead and prints the matching rows.

use std::path::PathBuf;

use clap::Parser;
use siphon_consumers::CommonArgs;
use siphon_consumers::search::{SearchIndex, search};

#[derive(Parser)]
#[command(about = "siphon events → a tantivy full-text index (one document per row)")]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    /// Directory of the index (created when missing).
    #[arg(long, env = "INDEX_DIR", default_value = "search-index")]
    index_dir: PathBuf,
    /// Search instead of consuming: prints `table<TAB>row JSON` per match.
    #[arg(long)]
    query: Option<String>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(q) = &args.query {
        for (table, row) in search(&args.index_dir, q, 20)? {
            println!("{table}\t{row}");
        }
        return Ok(());
    }
    let mut index = SearchIndex::open(&args.index_dir)?;
    siphon_consumers::run(&args.common, &mut index)
}
