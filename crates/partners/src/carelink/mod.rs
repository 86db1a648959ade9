//! Medtronic CareLink: discovery (v13, Auth0) and the account behind a token — role, username,
//! and for care partners the patients they follow (never guessed: several and none chosen is an
//! error the person resolves).

use crate::driver::{BoxFuture, Call, Cursor, Identity, PartnerDriver, PollRequest, Saved};
use crate::error::PartnerError;
use crate::fetch::Batch;
use crate::http::get_json;
use crate::wire::read;
use chrono::{DateTime, Utc};
use model::{AccountChoice, UserId};

/// The CareLink driver.
#[derive(Debug, Clone, Copy, Default)]
pub struct Carelink;

/// CareLink serves the last 24 h on every call: the cursor only says when.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct PollCursor {
    #[serde(default)]
    polled_at: Option<DateTime<Utc>>,
}

impl PartnerDriver for Carelink {
    /// A MiniMed pump with its Guardian CGM (sensor glucose, boluses, basal, meter readings).
    fn devices(&self) -> crate::driver::Devices {
        crate::driver::Devices { manufacturers: &["Medtronic"], tags: &["insulin-pump", "cgm", "bgm"] }
    }

    fn identify<'a>(&'a self, call: Call<'a>, _user: &'a UserId) -> BoxFuture<'a, Result<Identity, PartnerError>> {
        Box::pin(async move {
            let web = call.region.web_base_url.as_deref().unwrap_or_default();
            let account = account(call.http, web, call.access_token).await?;
            Ok(account.identity())
        })
    }

    fn poll<'a>(
        &'a self,
        call: Call<'a>,
        req: PollRequest<'a>,
    ) -> BoxFuture<'a, Result<(Batch, Cursor), PartnerError>> {
        Box::pin(async move {
            let follow = fetch::Follow::parse(req.account_id)?;
            let batch = fetch::poll(call.http, &call.region.api_base_url, call.access_token, req.user, &follow).await?;
            Ok((batch, Cursor::write(&PollCursor { polled_at: Some(req.now) })))
        })
    }

    /// A `display/message` answer (with or without its `{metadata, patientData}` envelope).
    fn map_saved(&self, user: &UserId, saved: Saved<'_>, batch: &mut Batch) -> Result<String, PartnerError> {
        if let Some(e) = saved.endpoint {
            return Err(PartnerError::Protocol(format!(
                "CareLink has one data endpoint (display/message); {e:?} does not apply"
            )));
        }
        let generation =
            map::map_payload(user, saved.document, batch).map_err(|e| PartnerError::Protocol(e.to_string()))?;
        Ok(format!("carelink {generation:?}"))
    }
}

/// Endpoints and client parameters found through discovery.
#[derive(Debug, Clone)]
pub struct Discovered {
    pub authorize_url: String,
    pub token_url: String,
    pub revocation_url: Option<String>,
    pub client_id: String,
    pub scopes: Vec<String>,
    pub audience: Option<String>,
    pub redirect_uri: String,
    /// `baseUrlCumulus` (display/message lives under it).
    pub cloud_base_url: String,
    /// `baseUrlCareLink` (users/me, profile, linked patients).
    pub web_base_url: String,
}

/// A field discovery or the account documents must have (non-empty).
fn required(v: Option<&str>, what: &str) -> Result<String, PartnerError> {
    v.filter(|s| !s.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| PartnerError::Protocol(format!("discovery: {what} missing")))
}

/// Discovery document → region entry → Auth0 SSO configuration.
pub async fn discover(http: &reqwest::Client, discovery_url: &str, region: &str) -> Result<Discovered, PartnerError> {
    let doc: wire::Discovery = read(&get_json(http, discovery_url, None).await?);
    let cp = doc
        .regions
        .unwrap_or_default()
        .into_iter()
        .find(|c| c.region.as_deref() == Some(region))
        .ok_or_else(|| PartnerError::Protocol(format!("discovery: no CP entry for region {region}")))?;
    let sso_url = required(cp.sso_configuration.as_deref(), "Auth0SSOConfiguration")?;
    let sso: wire::SsoConfiguration = read(&get_json(http, &sso_url, None).await?);
    // The SSO server is addressed by host, port and prefix; it uses the scheme the discovery
    // document was served with (https in production).
    let scheme = if discovery_url.starts_with("http://") { "http" } else { "https" };
    let server = sso.server.unwrap_or_default();
    let host = required(server.hostname.as_deref(), "server.hostname")?;
    let port = server.port;
    let prefix = server.prefix.map(|p| format!("/{}", p.trim_matches('/'))).unwrap_or_default();
    let authority = match port {
        Some(443) if scheme == "https" => host,
        Some(80) if scheme == "http" => host,
        Some(p) => format!("{host}:{p}"),
        None => host,
    };
    let root = format!("{scheme}://{authority}{prefix}");
    let endpoints = sso.system_endpoints.unwrap_or_default();
    let path = |p: Option<String>| p.map(|p| format!("{root}{p}"));
    let client = sso.client.unwrap_or_default();
    Ok(Discovered {
        authorize_url: path(endpoints.authorization_endpoint_path)
            .ok_or_else(|| PartnerError::Protocol("discovery: authorization endpoint missing".into()))?,
        token_url: path(endpoints.token_endpoint_path)
            .ok_or_else(|| PartnerError::Protocol("discovery: token endpoint missing".into()))?,
        revocation_url: path(endpoints.revocation_endpoint_path),
        client_id: required(client.client_id.as_deref(), "client.client_id")?,
        scopes: client.scope.map(|s| s.split_whitespace().map(str::to_owned).collect()).unwrap_or_default(),
        audience: client.audience,
        redirect_uri: required(client.redirect_uri.as_deref(), "client.redirect_uri")?,
        cloud_base_url: required(cp.cloud_base_url.as_deref(), "baseUrlCumulus")?,
        web_base_url: required(cp.web_base_url.as_deref(), "baseUrlCareLink")?,
    })
}

/// A CareLink account's role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    Patient,
    CarePartner,
}

/// Who signed in, and whose data they can see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub username: String,
    pub role: Role,
    /// `PATIENT`, `CARE_PARTNER_OUS`, … as CareLink spells it.
    pub role_name: String,
    /// For care partners: the usernames/ids of the patients they follow.
    pub patients: Vec<String>,
}

impl Account {
    /// The stable id of the partner account a data source follows:
    /// `username/role[/patient]`.
    pub fn account_id(&self, patient: Option<&str>) -> String {
        match (&self.role, patient) {
            (Role::CarePartner, Some(p)) => format!("{}/carepartner/{p}", self.username),
            (Role::CarePartner, None) => format!("{}/carepartner", self.username),
            (Role::Patient, _) => format!("{}/patient", self.username),
        }
    }

    /// Whose data this sign-in can import: a patient their own; a care partner the one patient
    /// they follow, or the person chooses (never guessed); none followed is unusable.
    pub fn identity(&self) -> Identity {
        match (&self.role, self.patients.as_slice()) {
            (Role::Patient, _) => Identity::Account(self.account_id(None)),
            (Role::CarePartner, [one]) => Identity::Account(self.account_id(Some(one))),
            (Role::CarePartner, []) => Identity::Unusable {
                title: "No patient to follow".into(),
                detail: "This CareLink care-partner account does not follow any patient yet.".into(),
                remedy: "Link the patient to this account in the CareLink app, then open your link again.".into(),
            },
            (Role::CarePartner, several) => Identity::Choose(
                several
                    .iter()
                    .map(|p| AccountChoice { label: p.clone(), account_id: self.account_id(Some(p)) })
                    .collect(),
            ),
        }
    }
}

/// `users/me` (role) → `users/me/profile` (username) → care partners: `m2m/links/patients`.
pub async fn account(http: &reqwest::Client, web_base_url: &str, access_token: &str) -> Result<Account, PartnerError> {
    let base = web_base_url.trim_end_matches('/');
    let me: wire::Me = read(&get_json(http, &format!("{base}/users/me"), Some(access_token)).await?);
    let role_name = required(me.role.as_deref(), "users/me role")?;
    let role = match role_name.as_str() {
        "PATIENT" | "PATIENT_OUS" => Role::Patient,
        "CARE_PARTNER" | "CARE_PARTNER_OUS" => Role::CarePartner,
        other => return Err(PartnerError::Protocol(format!("unknown CareLink role {other:?}"))),
    };
    let profile: wire::Profile = read(&get_json(http, &format!("{base}/users/me/profile"), Some(access_token)).await?);
    let username = required(profile.username.as_deref(), "profile username")?;
    let patients = if role == Role::CarePartner {
        let links = get_json(http, &format!("{base}/m2m/links/patients"), Some(access_token)).await?;
        let links: Vec<wire::LinkedPatient> =
            links.as_array().map(|a| a.iter().map(read).collect()).unwrap_or_default();
        links.iter().filter_map(|p| p.id().map(str::to_owned)).collect()
    } else {
        Vec::new()
    };
    Ok(Account { username, role, role_name, patients })
}

pub mod fetch;
pub mod map;
mod wire;
