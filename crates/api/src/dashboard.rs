//! The operator dashboard on the ops listener (`/admin`, loopback by default, optionally behind
//! a bearer token): server-rendered HTML, no scripts. Sources by partner and state, due polls
//! and schedule lag, recent poll outcomes and failures, partner budget use, the clinic outbox,
//! and per user an SVG chart of the last 24 h of `cbg` with bolus and food markers.

use std::fmt::Write as _;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::{DateTime, Duration, Utc};
use model::{SharedClock, UserId};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use store::Store;

use crate::pages::{esc, secure};

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

fn html(status: StatusCode, title: &str, body: &str) -> Response {
    let doc = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{}</title>\
         <style>body{{font:15px/1.45 system-ui,sans-serif;margin:1.2rem;color:#1d2330;max-width:68rem}}\
         h1{{font-size:1.4rem}}h2{{font-size:1.1rem;margin-top:1.6rem}}table{{border-collapse:collapse;width:100%}}\
         td,th{{text-align:left;padding:.25rem .5rem;border-bottom:1px solid #e3e6ec;vertical-align:top}}\
         th{{background:#f3f5f8}}.num{{text-align:right;font-variant-numeric:tabular-nums}}\
         .bad{{color:#a4161a}}.muted{{color:#6b7280}}svg{{max-width:100%;height:auto;border:1px solid #e3e6ec}}\
         .scroll{{overflow-x:auto}}</style></head><body>{body}</body></html>",
        esc(title)
    );
    secure((status, [(header::CONTENT_TYPE, "text/html; charset=utf-8")], doc).into_response())
}

fn unauthorized() -> Response {
    let mut r = html(
        StatusCode::UNAUTHORIZED,
        "Unauthorized",
        "<h1>Unauthorized</h1><p>This dashboard needs its bearer token.</p>",
    );
    r.headers_mut().insert(header::WWW_AUTHENTICATE, axum::http::HeaderValue::from_static("Bearer"));
    r
}

fn unavailable(e: &store::StoreError) -> Response {
    tracing::warn!(error = %e, "dashboard query failed");
    let body = if e.is_pool_busy() {
        "<h1>Database busy</h1><p>No database connection came free in time (the pool is busy, the database is up). Try again shortly.</p>"
    } else {
        "<h1>Database unavailable</h1><p>Try again shortly.</p>"
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
        Ok(body) => html(StatusCode::OK, "tidegate — operations", &body),
        Err(e) => unavailable(&e),
    }
}

async fn render_overview(d: &Dashboard) -> store::Result<String> {
    let now = d.clock.now();
    let mut conn = d.store.acquire().await?;
    let states = store::data_sources::count_by_state(&mut conn).await?;
    let backlog = store::poll_schedule::backlog(&mut conn, now).await?;
    let upcoming = store::poll_schedule::upcoming(&mut conn, 15).await?;
    let lag = store::poll_runs::lag_since(&mut conn, now - Duration::hours(1)).await?;
    let outcomes = d.store.poll_outcomes_since(now - Duration::hours(1)).await?;
    let failures = store::poll_runs::recent_failures(&mut conn, 15).await?;
    let outbox = store::outbox::stats(&mut conn).await?;
    let window = store::partner_budget::window_of(now);
    let mut b = String::new();
    let _ = write!(
        b,
        "<h1>tidegate — operations</h1><p class=\"muted\">As of {} UTC.</p>",
        now.format("%Y-%m-%d %H:%M:%S")
    );

    b.push_str("<h2>Data sources</h2><table><tr><th>partner</th><th>state</th><th class=\"num\">sources</th></tr>");
    for (p, s, n) in &states {
        let class = if s == "error" { " class=\"bad\"" } else { "" };
        let _ = write!(b, "<tr><td>{}</td><td{class}>{}</td><td class=\"num\">{n}</td></tr>", esc(p), esc(s));
    }
    if states.is_empty() {
        b.push_str("<tr><td colspan=\"3\" class=\"muted\">No data sources yet.</td></tr>");
    }
    b.push_str("</table>");

    b.push_str("<h2>Schedule</h2><table><tr><th>partner</th><th class=\"num\">due now</th><th>oldest due</th><th class=\"num\">polls (1 h)</th><th class=\"num\">lag p50</th><th class=\"num\">lag p99</th></tr>");
    let mut partners: Vec<&str> = d.budgets.iter().map(|(p, _)| p.as_str()).collect();
    partners.sort();
    for p in &partners {
        let (due, oldest) = backlog.iter().find(|(x, _, _)| x == p).map(|(_, n, o)| (*n, *o)).unwrap_or((0, None));
        let (n, p50, p99) = lag.iter().find(|(x, ..)| x == p).map(|(_, n, a, b)| (*n, *a, *b)).unwrap_or((0, 0.0, 0.0));
        let _ = write!(
            b,
            "<tr><td>{}</td><td class=\"num\">{due}</td><td>{}</td><td class=\"num\">{n}</td><td class=\"num\">{p50:.1} s</td><td class=\"num\">{p99:.1} s</td></tr>",
            esc(p),
            oldest.map(|t| ago(now, t)).unwrap_or_else(|| "—".into())
        );
    }
    b.push_str("</table>");

    b.push_str("<h2>Next polls</h2><div class=\"scroll\"><table><tr><th>due</th><th>partner</th><th>user</th><th>why</th><th>last error</th></tr>");
    for u in &upcoming {
        let _ = write!(
            b,
            "<tr><td>{}{}</td><td>{}</td><td><a href=\"/admin/users/{uid}\">{uid}</a></td><td>{}</td><td class=\"bad\">{}</td></tr>",
            ago(now, u.next_run_at),
            if u.leased { " (running)" } else { "" },
            esc(&u.provider),
            esc(&u.next_kind),
            esc(u.last_error.as_deref().unwrap_or("")),
            uid = esc(&u.user_id),
        );
    }
    b.push_str("</table></div>");

    b.push_str("<h2>Poll outcomes (last hour)</h2><table><tr><th>partner</th><th>outcome</th><th class=\"num\">polls</th></tr>");
    for (p, o, n) in &outcomes {
        let class = if o == "success" { "" } else { " class=\"bad\"" };
        let _ = write!(b, "<tr><td>{}</td><td{class}>{}</td><td class=\"num\">{n}</td></tr>", esc(p), esc(o));
    }
    if outcomes.is_empty() {
        b.push_str("<tr><td colspan=\"3\" class=\"muted\">No polls in the last hour.</td></tr>");
    }
    b.push_str("</table>");
    let busy: i64 = outcomes.iter().filter(|(_, o, _)| o == "pool_busy").map(|(_, _, n)| *n).sum();
    if busy > 0 {
        let _ = write!(
            b,
            "<p class=\"bad\">{busy} poll{} waited too long for a database connection (<code>pool_busy</code>): \
             our own contention, not a database outage. Raise <code>database.max_connections</code> (and \
             the server's limit) or lower <code>worker.max_in_flight</code>.</p>",
            if busy == 1 { "" } else { "s" }
        );
    }

    b.push_str("<h2>Recent failures</h2><div class=\"scroll\"><table><tr><th>when</th><th>partner</th><th>source</th><th>outcome</th><th>error</th></tr>");
    for f in &failures {
        let _ = write!(
            b,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"bad\">{}</td></tr>",
            ago(now, f.started_at),
            esc(&f.provider),
            esc(&f.data_source_id),
            esc(&f.outcome),
            esc(f.error.as_deref().unwrap_or(""))
        );
    }
    if failures.is_empty() {
        b.push_str("<tr><td colspan=\"5\" class=\"muted\">None recorded.</td></tr>");
    }
    b.push_str("</table></div>");

    b.push_str("<h2>Partner budgets (this hour)</h2><table><tr><th>partner</th><th class=\"num\">calls reserved</th><th class=\"num\">per hour</th><th class=\"num\">used</th></tr>");
    for (p, cap) in &d.budgets {
        let used = store::partner_budget::used(&mut conn, p, window).await?;
        let (cap_s, pct) = match cap {
            Some(c) if *c > 0 => (c.to_string(), format!("{:.1} %", used as f64 * 100.0 / *c as f64)),
            _ => ("no limit".into(), "—".into()),
        };
        let _ = write!(
            b,
            "<tr><td>{}</td><td class=\"num\">{used}</td><td class=\"num\">{cap_s}</td><td class=\"num\">{pct}</td></tr>",
            esc(p)
        );
    }
    b.push_str("</table>");

    b.push_str("<h2>Outbox</h2><table><tr><th>kind</th><th class=\"num\">waiting</th><th>oldest</th><th class=\"num\">parked</th></tr>");
    for (kind, depth, oldest, parked) in &outbox {
        let class = if *parked > 0 { " class=\"num bad\"" } else { " class=\"num\"" };
        let _ = write!(
            b,
            "<tr><td>{}</td><td class=\"num\">{depth}</td><td>{}</td><td{class}>{parked}</td></tr>",
            esc(kind),
            oldest.map(|t| ago(now, t)).unwrap_or_else(|| "—".into())
        );
    }
    if outbox.is_empty() {
        b.push_str("<tr><td colspan=\"4\" class=\"muted\">Nothing queued.</td></tr>");
    }
    b.push_str("</table><p class=\"muted\">A user's glucose chart: /admin/users/{userId}.</p>");
    Ok(b)
}

async fn user(State(d): State<Dashboard>, headers: HeaderMap, Path(user): Path<String>) -> Response {
    if !allowed(&d, &headers) {
        return unauthorized();
    }
    let Ok(user) = UserId::parse(&user) else {
        return html(
            StatusCode::BAD_REQUEST,
            "Bad user id",
            "<h1>Not a user id</h1><p>User ids are 10 hex characters or a UUID.</p>",
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
    let mut b = format!("<h1>User {}</h1><p><a href=\"/admin\">← operations</a></p>", esc(user.as_str()));
    b.push_str("<table id=\"sources\"><tr><th>partner</th><th>state</th><th>latest data</th><th>last import</th></tr>");
    for s in &sources {
        let _ = write!(
            b,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(s.provider.as_str()),
            esc(&s.state.to_string()),
            s.latest_data_time.map(|t| ago(now, t)).unwrap_or_else(|| "—".into()),
            s.last_import_time.map(|t| ago(now, t)).unwrap_or_else(|| "—".into())
        );
    }
    b.push_str("</table><h2>Last 24 hours</h2>");
    b.push_str(&chart(&bodies, now));
    let count = |t: &str| bodies.iter().filter(|v| v["type"] == t).count();
    let _ = write!(
        b,
        "<p class=\"muted\" id=\"chart-counts\" data-cbg=\"{0}\">{0} glucose readings, {1} boluses (▲ at the bottom), {2} meals (● at the top).</p>",
        count("cbg"),
        count("bolus"),
        count("food")
    );
    html(StatusCode::OK, &format!("tidegate — user {user}"), &b)
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

/// An SVG chart: glucose 40–400 mg/dL over the 24 h before `now`, the 70–180 range shaded,
/// boluses and meals as markers with their amounts in tooltips.
pub fn chart(bodies: &[&Value], now: DateTime<Utc>) -> String {
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
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {W} {H}\" width=\"{W}\" height=\"{H}\" role=\"img\" aria-label=\"Glucose, last 24 hours\">"
    );
    let _ = write!(
        s,
        "<rect x=\"0\" y=\"{:.1}\" width=\"{W}\" height=\"{:.1}\" fill=\"#e8f5e9\"/>",
        y(180.0),
        y(70.0) - y(180.0)
    );
    for g in [70.0, 180.0, 250.0] {
        let _ = write!(
            s,
            "<line x1=\"0\" x2=\"{W}\" y1=\"{0:.1}\" y2=\"{0:.1}\" stroke=\"#cfd6df\" stroke-dasharray=\"3 3\"/><text x=\"2\" y=\"{1:.1}\" font-size=\"10\" fill=\"#6b7280\">{g}</text>",
            y(g),
            y(g) - 2.0
        );
    }
    for h in (0..=24).step_by(6) {
        let xx = h as f64 / 24.0 * W;
        let label = (start + Duration::hours(h)).format("%H:%M");
        let _ = write!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\" fill=\"#6b7280\">{label}</text>",
            (xx - 14.0).clamp(0.0, W - 30.0),
            H - 4.0
        );
    }
    let mut points: Vec<(f64, f64)> =
        bodies.iter().filter(|v| v["type"] == "cbg").filter_map(|v| Some((x(time(v)?), y(mgdl(v)?)))).collect();
    points.sort_by(|a, b| a.0.total_cmp(&b.0));
    if !points.is_empty() {
        let pts: Vec<String> = points.iter().map(|(a, b)| format!("{a:.1},{b:.1}")).collect();
        let _ =
            write!(s, "<polyline fill=\"none\" stroke=\"#1565c0\" stroke-width=\"1.6\" points=\"{}\"/>", pts.join(" "));
    }
    for v in bodies.iter().filter(|v| v["type"] == "bolus") {
        let Some(t) = time(v) else { continue };
        let units = v["normal"].as_f64().unwrap_or(0.0) + v["extended"].as_f64().unwrap_or(0.0);
        let xx = x(t);
        let _ = write!(
            s,
            "<path d=\"M{:.1} {:.1} l5 9 h-10 z\" fill=\"#6a1b9a\"><title>bolus {units:.2} U at {}</title></path>",
            xx,
            H - BOTTOM - 10.0,
            t.format("%H:%M")
        );
    }
    for v in bodies.iter().filter(|v| v["type"] == "food") {
        let Some(t) = time(v) else { continue };
        let grams = v["nutrition"]["carbohydrate"]["net"].as_f64().unwrap_or(0.0);
        let _ = write!(
            s,
            "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"5\" fill=\"#ef6c00\"><title>meal {grams:.0} g at {}</title></circle>",
            x(t),
            TOP - 12.0,
            t.format("%H:%M")
        );
    }
    s.push_str("</svg>");
    s
}
