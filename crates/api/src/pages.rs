//! Small, accessible HTML pages for the people who click through a connect flow. Every page
//! carries a strict CSP, `frame-ancestors 'none'`, `Referrer-Policy: no-referrer` and no caching,
//! and says what happened and what to do next.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

pub const CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Escape text for HTML.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Add the security headers every page and redirect of the flow carries.
pub fn secure(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// A page. `body` is trusted HTML built by the caller from escaped parts.
pub fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{t} · tidegate</title><style>\
         body{{font-family:system-ui,-apple-system,sans-serif;line-height:1.5;max-width:36rem;margin:0 auto;padding:1.5rem 1rem;color:#1b1b1b}}\
         h1{{font-size:1.5rem}} a.button,button{{display:inline-block;font-size:1rem;padding:.7rem 1.2rem;margin:.3rem 0;border-radius:.4rem;border:1px solid #0b5cad;background:#0b5cad;color:#fff;text-decoration:none;cursor:pointer}}\
         input[type=url],input[type=text]{{width:100%;font-size:1rem;padding:.6rem;box-sizing:border-box}} .note{{color:#555;font-size:.95rem}} ol li{{margin:.4rem 0}} code{{overflow-wrap:anywhere}}\
         </style></head><body><main><h1>{t}</h1>{body}</main></body></html>",
        t = esc(title)
    );
    secure((status, [(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response())
}

/// A refusal page: what went wrong and what to do.
pub fn problem(status: StatusCode, title: &str, what: &str, next: &str) -> Response {
    page(status, title, &format!("<p>{}</p><p>{}</p>", esc(what), esc(next)))
}

/// A 303 redirect carrying the security headers.
pub fn see_other(location: &str) -> Response {
    let mut resp = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    secure(resp)
}
