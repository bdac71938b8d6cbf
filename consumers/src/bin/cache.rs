//! The cache consumer: keeps Redis equal to the captured tables
//! (see `siphon_consumers::cache` and docs/consumers.md).

use clap::Parser;
use siphon_consumers::{CommonArgs, cache::Cache};

#[derive(Parser)]
#[command(about = "siphon events → a Redis cache (one key per row)")]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    /// Redis URL.
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    redis_url: String,
    /// Prefix of every key written.
    #[arg(long, env = "KEY_PREFIX", default_value = "siphon:")]
    key_prefix: String,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut cache = Cache::connect(&args.redis_url, &args.key_prefix)?;
    siphon_consumers::run(&args.common, &mut cache)
}
