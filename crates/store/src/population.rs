//! Bulk seeding for benchmarks and scale checks (`tidegate bench poll --population`): connected
//! data sources with their provider sessions (tokens sealed exactly as `connect` seals them) and
//! poll schedule rows, written with `COPY … FROM STDIN` in chunks. Never used by the service.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use model::{DataSourceId, UserId};
use sqlx::PgConnection;

use crate::crypto::{KeyRing, aad};

/// One source to seed.
#[derive(Debug, Clone)]
pub struct SeedSource {
    pub id: DataSourceId,
    pub user: UserId,
    pub provider: String,
    pub region: Option<String>,
    pub partner_account_id: String,
    pub access_token: String,
    pub refresh_token: String,
    pub access_expires_at: DateTime<Utc>,
    pub next_run_at: DateTime<Utc>,
}

fn ts(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

fn bytea(b: &[u8]) -> String {
    let mut s = String::with_capacity(3 + b.len() * 2);
    s.push_str("\\\\x");
    for byte in b {
        let _ = write!(s, "{byte:02x}");
    }
    s
}

/// Text-format COPY value (no tabs, newlines or backslashes may appear in our ids and names).
fn text(v: &str) -> &str {
    debug_assert!(!v.contains(['\t', '\n', '\\']));
    v
}

async fn copy(conn: &mut PgConnection, statement: &str, rows: String) -> crate::Result<u64> {
    let mut copy = conn.copy_in_raw(statement).await?;
    copy.send(rows.into_bytes()).await?;
    Ok(copy.finish().await?)
}

impl crate::Store {
    /// Insert `sources` as connected data sources with sealed tokens and schedule rows, then
    /// refresh the planner's statistics. Returns how many schedule rows were written.
    pub async fn seed_population(&self, sources: &[SeedSource], now: DateTime<Utc>) -> crate::Result<u64> {
        let mut conn = self.acquire().await?;
        let n = copy_connected(&mut conn, &self.keys, sources, now).await?;
        sqlx::query("ANALYZE").execute(&mut *conn).await?;
        Ok(n)
    }
}

/// Insert `sources` as connected data sources with sealed tokens and schedule rows. Returns how
/// many schedule rows were written.
pub(crate) async fn copy_connected(
    conn: &mut PgConnection,
    keys: &KeyRing,
    sources: &[SeedSource],
    now: DateTime<Utc>,
) -> crate::Result<u64> {
    let now_s = ts(&now);
    let (mut ds, mut ps, mut sched) = (String::new(), String::new(), String::new());
    for s in sources {
        let id = s.id.as_str();
        let region = s.region.as_deref().map(text).unwrap_or("\\N");
        let _ = writeln!(
            ds,
            "{id}\t{}\t{}\tconnected\t{region}\tt\t{now_s}\t{now_s}",
            text(s.user.as_str()),
            text(&s.provider)
        );
        let access = keys.seal(s.access_token.as_bytes(), &aad("provider_sessions", id, "access_token"));
        let refresh = keys.seal(s.refresh_token.as_bytes(), &aad("provider_sessions", id, "refresh_token"));
        let _ = writeln!(
            ps,
            "{id}\t{}\t{}\t{region}\t{}\t{}\t{}\t{}\t{}\t{now_s}\t{now_s}",
            text(s.user.as_str()),
            text(&s.provider),
            text(&s.partner_account_id),
            text(&access.key_id),
            bytea(&access.bytes),
            bytea(&refresh.bytes),
            ts(&s.access_expires_at)
        );
        let _ = writeln!(
            sched,
            "{id}\t{}\t{}\t{}\tregular\t{now_s}\t{now_s}",
            text(s.user.as_str()),
            text(&s.provider),
            ts(&s.next_run_at)
        );
    }
    copy(
        conn,
        "COPY data_sources (id, user_id, provider, state, region, ever_connected, created_time, modified_time) FROM STDIN",
        ds,
    )
    .await?;
    copy(
        conn,
        "COPY provider_sessions (data_source_id, user_id, provider, region, partner_account_id, key_id, access_token, refresh_token, access_expires_at, created_time, modified_time) FROM STDIN",
        ps,
    )
    .await?;
    copy(
        conn,
        "COPY poll_schedule (data_source_id, user_id, provider, next_run_at, next_kind, created_time, modified_time) FROM STDIN",
        sched,
    )
    .await
}
