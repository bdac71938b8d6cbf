//! The cache pattern: a Redis key per row, kept equal to the table.
//!
//! Layout, for a key prefix `P` (default `siphon:`) and table `T`
//! (`schema.table`), a row key `K` (the event key as canonical JSON):
//!
//! - `P{T}:K` — the row as JSON (set on `c`/`u`/`r`, deleted on `d`);
//! - `P{T}:positions` — hash `K` → position of the last change applied to
//!   `K`, kept after a delete so an older change can never resurrect it;
//! - `P{T}:truncated` — position of the table's last truncate: changes at
//!   or before it are ignored, and applying it deletes every row whose last
//!   change is older.
//!
//! Each change is one Lua script (atomic in Redis): compare positions,
//! write the row and the position together. So a replay after a crash (the
//! consumer applied, then died before committing offsets) changes nothing,
//! and neither does a truncate seen before changes of another partition
//! that are older than it. The `{T}` hash tag keeps a table's keys in one
//! Redis Cluster slot.

use anyhow::{Context, Result};
use redis::Script;

use crate::decode::{Change, ChangeKind};
use crate::source::Store;

const APPLY: &str = r"
-- Byte-wise a <= b (Lua's own string order follows Redis's locale).
local function le(a, b)
  if a == b then return true end
  for i = 1, math.min(#a, #b) do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x < y end
  end
  return #a < #b
end
local truncated = redis.call('GET', KEYS[3])
if truncated and le(ARGV[2], truncated) then return 0 end
local last = redis.call('HGET', KEYS[2], ARGV[1])
if last and le(ARGV[2], last) then return 0 end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
if ARGV[3] == 'set' then
  redis.call('SET', KEYS[1], ARGV[4])
else
  redis.call('DEL', KEYS[1])
end
return 1
";

const TRUNCATE: &str = r"
-- Byte-wise a <= b (Lua's own string order follows Redis's locale).
local function le(a, b)
  if a == b then return true end
  for i = 1, math.min(#a, #b) do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x < y end
  end
  return #a < #b
end
local truncated = redis.call('GET', KEYS[2])
if truncated and le(ARGV[1], truncated) then return 0 end
redis.call('SET', KEYS[2], ARGV[1])
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  if not le(ARGV[1], all[i + 1]) then
    redis.call('DEL', ARGV[2] .. all[i])
    redis.call('HDEL', KEYS[1], all[i])
  end
end
return 1
";

pub struct Cache {
    con: redis::Connection,
    prefix: String,
    apply: Script,
    truncate: Script,
}

impl Cache {
    pub fn connect(url: &str, prefix: &str) -> Result<Cache> {
        let client = redis::Client::open(url).with_context(|| format!("redis url {url}"))?;
        let con = client
            .get_connection()
            .with_context(|| format!("connecting to redis at {url}"))?;
        Ok(Cache {
            con,
            prefix: prefix.to_owned(),
            apply: Script::new(APPLY),
            truncate: Script::new(TRUNCATE),
        })
    }

    /// `P{T}:` — every key of table `table` starts with it.
    pub fn table_prefix(prefix: &str, table: &str) -> String {
        format!("{prefix}{{{table}}}:")
    }
}

impl Store for Cache {
    fn apply(&mut self, batch: &[Change]) -> Result<usize> {
        let mut applied = 0;
        for c in batch {
            let t = Cache::table_prefix(&self.prefix, &c.table);
            let positions = format!("{t}positions");
            let truncated = format!("{t}truncated");
            let done: i64 = match &c.kind {
                ChangeKind::Tombstone => 0,
                ChangeKind::Truncate => self
                    .truncate
                    .key(&positions)
                    .key(&truncated)
                    .arg(&c.position)
                    .arg(&t)
                    .invoke(&mut self.con)?,
                ChangeKind::Upsert { .. } | ChangeKind::Delete => {
                    let (what, row) = match &c.kind {
                        ChangeKind::Upsert { row } => ("set", row.to_string()),
                        _ => ("del", String::new()),
                    };
                    self.apply
                        .key(format!("{t}{}", c.key))
                        .key(&positions)
                        .key(&truncated)
                        .arg(&c.key)
                        .arg(&c.position)
                        .arg(what)
                        .arg(row)
                        .invoke(&mut self.con)?
                }
            };
            applied += usize::from(done == 1);
        }
        Ok(applied)
    }

    /// Every script already ran in Redis (durable as Redis is configured:
    /// use `appendonly yes` for a cache that must survive Redis restarts).
    fn flush(&mut self) -> Result<()> {
        Ok(())
    }
}
