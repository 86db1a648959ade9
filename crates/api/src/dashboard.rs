//! The operator dashboard on the ops listener (`/admin`, loopback by default, optionally behind
//! a bearer token): server-rendered HTML (`maud`), no scripts. Sources by partner and state, due polls
//! and schedule lag, recent poll outcomes and failures, partner budget use, the clinic outbox,
//! and per user an SVG chart of the last 24 h of `cbg` with bolus and food markers.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use axum::routing::get;
use chrono::{DateTime, Duration, Utc};
use model::{SharedClock, UserId};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use store::Store;

use maud::{DOCTYPE, Markup, PreEscaped};

use crate::pages::respond;

/// What the dashboard reads, and who may see it.
#[derive(Clone)]
pub struct Dashboard {
    pub store: Store,
    pub clock: SharedClock,
    /// When set, requests must carry `Authorization: Bearer <token>`.
    pub token: Option<SecretString>,
    /// Partner names and their hourly call budgets (when they have one).
    pub budgets: Vec<(String, Option<i64>)>,
}

impl std::fmt::Debug for Dashboard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dashboard").field("token", &self.token.as_ref().map(|_| "[redacted]")).finish()
    }
}

pub fn router(d: Dashboard) -> Router {
    Router::new().route("/admin", get(overview)).route("/admin/users/{userId}", get(user)).with_state(d)
}

fn allowed(d: &Dashboard, headers: &HeaderMap) -> bool {
    let Some(token) = &d.token else { return true };
    let given =
        headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    // Constant-time compare of equal-length strings.
    given.is_some_and(|g| {
        let want = token.expose_secret().as_bytes();
        g.len() == want.len() && g.bytes().zip(want).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
    })
}

const DASHBOARD_CSS: &str = "body{font:15px/1.45 system-ui,sans-serif;margin:1.2rem;color:#1d2330;max-width:68rem}\
h1{font-size:1.4rem}h2{font-size:1.1rem;margin-top:1.6rem}table{border-collapse:collapse;width:100%}\
td,th{text-align:left;padding:.25rem .5rem;border-bottom:1px solid #e3e6ec;vertical-align:top}\
th{background:#f3f5f8}.num{text-align:right;font-variant-numeric:tabular-nums}\
.bad{color:#a4161a}.muted{color:#6b7280}svg{max-width:100%;height:auto;border:1px solid #e3e6ec}\
.scroll{overflow-x:auto}";

fn html(status: StatusCode, title: &str, body: Markup) -> Response {
    respond(
        status,
        maud::html! {
            (DOCTYPE)
            html lang="en" {
                head {
                    meta charset="utf-8";
                    meta name="viewport" content="width=device-width, initial-scale=1";
                    title { (title) }
                    style { (PreEscaped(DASHBOARD_CSS)) }
                }
                body { (body) }
            }
        },
    )
}

fn unauthorized() -> Response {
    let mut r = html(
        StatusCode::UNAUTHORIZED,
        "Unauthorized",
        maud::html! { h1 { "Unauthorized" } p { "This dashboard needs its bearer token." } },
    );
    r.headers_mut().insert(header::WWW_AUTHENTICATE, axum::http::HeaderValue::from_static("Bearer"));
    r
}

fn unavailable(e: &store::StoreError) -> Response {
    tracing::warn!(error = %e, "dashboard query failed");
    let body = if e.is_pool_busy() {
        maud::html! {
            h1 { "Database busy" }
            p { "No database connection came free in time (the pool is busy, the database is up). Try again shortly." }
        }
    } else {
        maud::html! { h1 { "Database unavailable" } p { "Try again shortly." } }
    };
    html(StatusCode::SERVICE_UNAVAILABLE, "Unavailable", body)
}

fn ago(now: DateTime<Utc>, t: DateTime<Utc>) -> String {
    let s = (now - t).num_seconds();
    let (v, unit) = if s.abs() < 120 {
        (s, "s")
    } else if s.abs() < 7200 {
        (s / 60, "min")
    } else {
        (s / 3600, "h")
    };
    if v >= 0 { format!("{v} {unit} ago") } else { format!("in {} {unit}", -v) }
}

async fn overview(State(d): State<Dashboard>, headers: HeaderMap) -> Response {
    if !allowed(&d, &headers) {
        return unauthorized();
    }
    match render_overview(&d).await {
        Ok(body) => html(StatusCode::OK, "tidegate — operations", body),
        Err(e) => unavailable(&e),
    }
}

/// `class` for a cell that is bad when `bad`.
fn bad(bad: bool) -> Option<&'static str> {
    bad.then_some("bad")
}

fn when(now: DateTime<Utc>, t: Option<DateTime<Utc>>) -> String {
    t.map(|t| ago(now, t)).unwrap_or_else(|| "—".into())
}

async fn render_overview(d: &Dashboard) -> store::Result<Markup> {
    let now = d.clock.now();
    let mut conn = d.store.acquire().await?;
    let states = store::data_sources::count_by_state(&mut conn).await?;
    let backlog = store::poll_schedule::backlog(&mut conn, now).await?;
    let upcoming = store::poll_schedule::upcoming(&mut conn, 15).await?;
    let lag = store::poll_runs::lag_since(&mut conn, now - Duration::hours(1)).await?;
    let outcomes = d.store.poll_outcomes_since(now - Duration::hours(1)).await?;
    let failures = store::poll_runs::recent_failures(&mut conn, 15).await?;
    let outbox = store::outbox::stats(&mut conn).await?;
    drop(conn);
    let deliveries = d.store.delivery_overview(15).await?;
    let mut conn = d.store.acquire().await?;
    let window = store::partner_budget::window_of(now);
    let mut budgets = Vec::with_capacity(d.budgets.len());
    for (p, cap) in &d.budgets {
        let used = store::partner_budget::used(&mut conn, p, window).await?;
        let (cap, pct) = match cap {
            Some(c) if *c > 0 => (c.to_string(), format!("{:.1} %", used as f64 * 100.0 / *c as f64)),
            _ => ("no limit".into(), "—".into()),
        };
        budgets.push((p.as_str(), used, cap, pct));
    }
    let mut partners: Vec<&str> = d.budgets.iter().map(|(p, _)| p.as_str()).collect();
    partners.sort();
    let schedule: Vec<_> = partners
        .iter()
        .map(|p| {
            let (due, oldest) = backlog.iter().find(|(x, _, _)| x == p).map(|(_, n, o)| (*n, *o)).unwrap_or((0, None));
            let (n, p50, p99) =
                lag.iter().find(|(x, ..)| x == p).map(|(_, n, a, b)| (*n, *a, *b)).unwrap_or((0, 0.0, 0.0));
            (*p, due, when(now, oldest), n, format!("{p50:.1} s"), format!("{p99:.1} s"))
        })
        .collect();
    let busy: i64 = outcomes.iter().filter(|(_, o, _)| o == "pool_busy").map(|(_, _, n)| *n).sum();
    Ok(maud::html! {
        h1 { "tidegate — operations" }
        p.muted { "As of " (now.format("%Y-%m-%d %H:%M:%S")) " UTC." }

        h2 { "Data sources" }
        table {
            tr { th { "partner" } th { "state" } th.num { "sources" } }
            @for (p, s, n) in &states { tr { td { (p) } td class=[bad(s == "error")] { (s) } td.num { (n) } } }
            @if states.is_empty() { tr { td.muted colspan="3" { "No data sources yet." } } }
        }

        h2 { "Schedule" }
        table {
            tr {
                th { "partner" } th.num { "due now" } th { "oldest due" } th.num { "polls (1 h)" }
                th.num { "lag p50" } th.num { "lag p99" }
            }
            @for (p, due, oldest, n, p50, p99) in &schedule {
                tr { td { (p) } td.num { (due) } td { (oldest) } td.num { (n) } td.num { (p50) } td.num { (p99) } }
            }
        }

        h2 { "Next polls" }
        div.scroll { table {
            tr { th { "due" } th { "partner" } th { "user" } th { "why" } th { "last error" } }
            @for u in &upcoming {
                tr {
                    td { (ago(now, u.next_run_at)) @if u.leased { " (running)" } }
                    td { (u.provider) }
                    td { a href={ "/admin/users/" (u.user_id) } { (u.user_id) } }
                    td { (u.next_kind) }
                    td.bad { (u.last_error.as_deref().unwrap_or("")) }
                }
            }
        } }

        h2 { "Poll outcomes (last hour)" }
        table {
            tr { th { "partner" } th { "outcome" } th.num { "polls" } }
            @for (p, o, n) in &outcomes { tr { td { (p) } td class=[bad(o != "success")] { (o) } td.num { (n) } } }
            @if outcomes.is_empty() { tr { td.muted colspan="3" { "No polls in the last hour." } } }
        }
        @if busy > 0 {
            p.bad {
                (busy) " poll" @if busy != 1 { "s" } " waited too long for a database connection ("
                code { "pool_busy" } "): our own contention, not a database outage. Raise "
                code { "database.max_connections" } " (and the server's limit) or lower "
                code { "worker.max_in_flight" } "."
            }
        }

        h2 { "Recent failures" }
        div.scroll { table {
            tr { th { "when" } th { "partner" } th { "source" } th { "outcome" } th { "error" } }
            @for f in &failures {
                tr {
                    td { (ago(now, f.started_at)) } td { (f.provider) } td { (f.data_source_id) } td { (f.outcome) }
                    td.bad { (f.error.as_deref().unwrap_or("")) }
                }
            }
            @if failures.is_empty() { tr { td.muted colspan="5" { "None recorded." } } }
        } }

        h2 { "Partner budgets (this hour)" }
        table {
            tr { th { "partner" } th.num { "calls reserved" } th.num { "per hour" } th.num { "used" } }
            @for (p, used, cap, pct) in &budgets {
                tr { td { (p) } td.num { (used) } td.num { (cap) } td.num { (pct) } }
            }
        }

        h2 { "Outbox" }
        table {
            tr { th { "kind" } th.num { "waiting" } th { "oldest" } th.num { "parked" } }
            @for (kind, depth, oldest, parked) in &outbox {
                tr {
                    td { (kind) } td.num { (depth) } td { (when(now, *oldest)) }
                    td class={ "num" @if *parked > 0 { " bad" } } { (parked) }
                }
            }
            @if outbox.is_empty() { tr { td.muted colspan="4" { "Nothing queued." } } }
        }
        h2 { "Platform delivery" }
        div.scroll { table #deliveries {
            tr {
                th { "user" } th { "partner" } th { "data set" } th { "delivered up to" } th.num { "backlog" }
                th.num { "rejected" } th.num { "deletions" }
            }
            @for s in &deliveries {
                tr {
                    td { a href={ "/admin/users/" (s.user_id) } { (s.user_id) } }
                    td { (s.provider) }
                    td { (s.data_set_id.as_deref().unwrap_or("—")) }
                    td { (when(now, s.delivered_time)) }
                    td class={ "num" @if s.backlog > 0 { " bad" } } { (s.backlog) }
                    td class={ "num" @if s.rejected > 0 { " bad" } } { (s.rejected) }
                    td.num { (s.deletions) }
                }
            }
            @if deliveries.is_empty() { tr { td.muted colspan="7" { "No source has data for the platform yet." } } }
        } }
        p.muted { "Sources with a backlog first. Without the tidepool sink every source's data stays local (its backlog is what a sink switched on would deliver first)." }
        p.muted { "A user's glucose chart: /admin/users/{userId}." }
    })
}

async fn user(State(d): State<Dashboard>, headers: HeaderMap, Path(user): Path<String>) -> Response {
    if !allowed(&d, &headers) {
        return unauthorized();
    }
    let Ok(user) = UserId::parse(&user) else {
        return html(
            StatusCode::BAD_REQUEST,
            "Bad user id",
            maud::html! { h1 { "Not a user id" } p { "User ids are 10 hex characters or a UUID." } },
        );
    };
    let now = d.clock.now();
    let types = ["cbg".to_owned(), "bolus".to_owned(), "food".to_owned()];
    let q = store::datums::PageQuery {
        user: &user,
        types: &types,
        start: Some(now - Duration::hours(24)),
        end: Some(now + Duration::minutes(1)),
        after: None,
        limit: 5_000,
    };
    let (datums, sources) = match (d.store.datum_page(&q).await, d.store.list_data_sources(&user).await) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => return unavailable(&e),
    };
    let bodies: Vec<&Value> = datums.iter().map(|x| &x.body).collect();
    let count = |t: &str| bodies.iter().filter(|v| v["type"] == t).count();
    let body = maud::html! {
        h1 { "User " (user.as_str()) }
        p { a href="/admin" { "← operations" } }
        table #sources {
            tr { th { "partner" } th { "state" } th { "latest data" } th { "last import" } }
            @for s in &sources {
                tr {
                    td { (s.provider.as_str()) } td { (s.state.to_string()) }
                    td { (when(now, s.latest_data_time)) } td { (when(now, s.last_import_time)) }
                }
            }
        }
        h2 { "Last 24 hours" }
        (chart(&bodies, now))
        p.muted #chart-counts data-cbg=(count("cbg")) {
            (count("cbg")) " glucose readings, " (count("bolus")) " boluses (▲ at the bottom), "
            (count("food")) " meals (● at the top)."
        }
    };
    html(StatusCode::OK, &format!("tidegate — user {user}"), body)
}

/// mg/dL of a `cbg` body (mmol/L converted with Tidepool's constant).
fn mgdl(v: &Value) -> Option<f64> {
    let value = v["value"].as_f64()?;
    match v["units"].as_str()? {
        "mg/dL" => Some(value),
        "mmol/L" => Some(model::datum::mmoll_to_mgdl(value)),
        _ => None,
    }
}

/// One decimal, as the chart's coordinates are written.
fn px(v: f64) -> String {
    format!("{v:.1}")
}

/// An SVG chart: glucose 40–400 mg/dL over the 24 h before `now`, the 70–180 range shaded,
/// boluses and meals as markers with their amounts in tooltips.
pub fn chart(bodies: &[&Value], now: DateTime<Utc>) -> Markup {
    const W: f64 = 720.0;
    const H: f64 = 260.0;
    const TOP: f64 = 24.0;
    const BOTTOM: f64 = 24.0;
    let start = now - Duration::hours(24);
    let x = |t: DateTime<Utc>| ((t - start).num_seconds() as f64 / 86_400.0 * W).clamp(0.0, W);
    let y = |g: f64| {
        let g = g.clamp(40.0, 400.0);
        TOP + (400.0 - g) / 360.0 * (H - TOP - BOTTOM)
    };
    let time = |v: &Value| v["time"].as_str().and_then(|t| DateTime::parse_from_rfc3339(t).ok()).map(|t| t.to_utc());
    let mut points: Vec<(f64, f64)> =
        bodies.iter().filter(|v| v["type"] == "cbg").filter_map(|v| Some((x(time(v)?), y(mgdl(v)?)))).collect();
    points.sort_by(|a, b| a.0.total_cmp(&b.0));
    let line: Vec<String> = points.iter().map(|(a, b)| format!("{a:.1},{b:.1}")).collect();
    let boluses: Vec<(f64, f64, String)> = bodies
        .iter()
        .filter(|v| v["type"] == "bolus")
        .filter_map(|v| {
            let t = time(v)?;
            let units = v["normal"].as_f64().unwrap_or(0.0) + v["extended"].as_f64().unwrap_or(0.0);
            Some((x(t), units, t.format("%H:%M").to_string()))
        })
        .collect();
    let meals: Vec<(f64, f64, String)> = bodies
        .iter()
        .filter(|v| v["type"] == "food")
        .filter_map(|v| {
            let t = time(v)?;
            let grams = v["nutrition"]["carbohydrate"]["net"].as_f64().unwrap_or(0.0);
            Some((x(t), grams, t.format("%H:%M").to_string()))
        })
        .collect();
    maud::html! {
        svg xmlns="http://www.w3.org/2000/svg" viewBox={ "0 0 " (W) " " (H) } width=(W) height=(H) role="img"
            aria-label="Glucose, last 24 hours" {
            rect x="0" y=(px(y(180.0))) width=(W) height=(px(y(70.0) - y(180.0))) fill="#e8f5e9" {}
            @for g in [70.0, 180.0, 250.0] {
                line x1="0" x2=(W) y1=(px(y(g))) y2=(px(y(g))) stroke="#cfd6df" stroke-dasharray="3 3" {}
                text x="2" y=(px(y(g) - 2.0)) font-size="10" fill="#6b7280" { (g) }
            }
            @for h in (0..=24).step_by(6) {
                text x=(px((h as f64 / 24.0 * W - 14.0).clamp(0.0, W - 30.0))) y=(px(H - 4.0)) font-size="10"
                    fill="#6b7280" { ((start + Duration::hours(h)).format("%H:%M")) }
            }
            @if !line.is_empty() {
                polyline fill="none" stroke="#1565c0" stroke-width="1.6" points=(line.join(" ")) {}
            }
            @for (xx, units, at) in &boluses {
                path d={ "M" (px(*xx)) " " (px(H - BOTTOM - 10.0)) " l5 9 h-10 z" } fill="#6a1b9a" {
                    title { "bolus " (format!("{units:.2}")) " U at " (at) }
                }
            }
            @for (xx, grams, at) in &meals {
                circle cx=(px(*xx)) cy=(px(TOP - 12.0)) r="5" fill="#ef6c00" {
                    title { "meal " (format!("{grams:.0}")) " g at " (at) }
                }
            }
        }
    }
}
