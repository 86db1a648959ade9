//! Small, accessible HTML pages for the people who click through a connect flow. Every page
//! carries a strict CSP, `frame-ancestors 'none'`, `Referrer-Policy: no-referrer` and no caching,
//! and says what happened and what to do next. Rendered with `maud` (every interpolation is
//! escaped).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use maud::{DOCTYPE, Markup, PreEscaped, html};

pub const CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

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

const PAGE_CSS: &str = "body{font-family:system-ui,-apple-system,sans-serif;line-height:1.5;max-width:36rem;margin:0 auto;padding:1.5rem 1rem;color:#1b1b1b}\
h1{font-size:1.5rem} a.button,button{display:inline-block;font-size:1rem;padding:.7rem 1.2rem;margin:.3rem 0;border-radius:.4rem;border:1px solid #0b5cad;background:#0b5cad;color:#fff;text-decoration:none;cursor:pointer}\
input[type=url],input[type=text]{width:100%;font-size:1rem;padding:.6rem;box-sizing:border-box} .note{color:#555;font-size:.95rem} ol li{margin:.4rem 0} code{overflow-wrap:anywhere}";

/// An HTML document as a response, with the security headers.
pub fn respond(status: StatusCode, doc: Markup) -> Response {
    secure((status, [(header::CONTENT_TYPE, "text/html; charset=utf-8")], doc.into_string()).into_response())
}

/// A page of the connect flow: its title as heading, then `body`.
pub fn page(status: StatusCode, title: &str, body: Markup) -> Response {
    respond(
        status,
        html! {
            (DOCTYPE)
            html lang="en" {
                head {
                    meta charset="utf-8";
                    meta name="viewport" content="width=device-width, initial-scale=1";
                    title { (title) " · tidegate" }
                    style { (PreEscaped(PAGE_CSS)) }
                }
                body { main { h1 { (title) } (body) } }
            }
        },
    )
}

/// A refusal page: what went wrong and what to do.
pub fn problem(status: StatusCode, title: &str, what: &str, next: &str) -> Response {
    page(status, title, html! { p { (what) } p { (next) } })
}

/// Which of a partner's regions the account is in (one link per region).
pub fn region_choice(partner: &str, regions: &[(String, String)]) -> Markup {
    html! {
        p { "Where is your " (partner) " account registered?" }
        ul { @for (href, label) in regions { li { a.button href=(href) { (label) } } } }
    }
}

/// A partner that redirects only to its own app: sign in there, paste the address back here.
/// `target`: the partner's registered redirect URI; `form_action`: our redirect route.
pub fn paste(partner: &str, sign_in_url: &str, target: &str, form_action: &str) -> Markup {
    html! {
        p { (partner) " only sends people back to its own phone app, so connecting takes one extra step." }
        ol {
            li {
                a.button #partner-link href=(sign_in_url) target="_blank" rel="noopener noreferrer" { "Sign in to " (partner) }
                br;
                "Use your " (partner) " care-partner (follower) account."
            }
            li {
                "After you sign in, your browser tries to open an address that starts with "
                code { (target) "?code=" }
                " and shows an error or an empty page. Copy that whole address from the address bar."
            }
            li { "Paste it here and press Connect." }
        }
        form method="post" action=(form_action) {
            label for="url" { "Address from " (partner) }
            input type="text" #url name="url" required autocomplete="off" spellcheck="false"
                placeholder={ (target) "?code=…&state=…" };
            button type="submit" #connect { "Connect" }
        }
        p.note { "We never see or store your " (partner) " password. This page works for 10 minutes." }
    }
}

/// The connection is made.
pub fn connected(partner: &str) -> Markup {
    html! {
        p #result data-result="connected" {
            "Your " (partner) " data will start arriving within a few minutes and is then kept up to date automatically."
        }
        p { "You can close this page. You can disconnect at any time in the app." }
    }
}

/// The person said no at the partner.
pub fn declined(partner: &str) -> Markup {
    html! {
        p #result data-result="declined" { "You chose not to share your " (partner) " data. Nothing was changed." }
        p { "If that was a mistake, open your link again: it still works." }
    }
}

/// A care partner following several people chooses whose data this is.
pub fn choose(partner: &str, form_action: &str, authorization: &str, labels: &[&str]) -> Markup {
    html! {
        p { "Your " (partner) " account follows several people. Choose the one whose data belongs to this account." }
        form method="post" action=(form_action) {
            input type="hidden" name="authorization" value=(authorization);
            @for (i, label) in labels.iter().enumerate() {
                p {
                    input type="radio" name="patient" id={ "p" (i) } value=(label) required;
                    " "
                    label for={ "p" (i) } { (label) }
                }
            }
            button type="submit" #choose { "Connect" }
        }
    }
}

/// A 303 redirect carrying the security headers.
pub fn see_other(location: &str) -> Response {
    let mut resp = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    secure(resp)
}
