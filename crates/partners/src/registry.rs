//! The partners this deployment serves, built from configuration.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use model::ProviderName;
use tokio::sync::Mutex;

use crate::carelink::{self, Discovered};
use crate::config::{PartnerSettings, RedirectMode, RegionSettings};
use crate::driver::{OAuthOnly, PartnerDriver};
use crate::error::PartnerError;
use crate::oauth::OAuthEndpoints;
use crate::schedule::Policy;

/// How long a discovery answer is trusted.
const DISCOVERY_TTL: Duration = Duration::from_secs(3600);

/// The partners we read data from, by configured name: one line per partner. Any other
/// configured partner is connected through OAuth and not polled.
static DRIVERS: &[(&str, &dyn PartnerDriver)] =
    &[("dexcom", &crate::dexcom::Dexcom), ("carelink", &carelink::Carelink)];

/// The data driver of a partner name (`None`: no driver reads this partner's data).
pub fn data_driver(name: &str) -> Option<&'static dyn PartnerDriver> {
    DRIVERS.iter().find(|(n, _)| *n == name).map(|(_, d)| *d)
}

/// The partner names that have a data driver.
pub fn data_drivers() -> impl Iterator<Item = &'static str> {
    DRIVERS.iter().map(|(n, _)| *n)
}

#[derive(Debug)]
pub struct Partner {
    pub name: ProviderName,
    pub settings: PartnerSettings,
    /// What knows the partner's account identity and data.
    pub driver: &'static dyn PartnerDriver,
    /// When to poll (first poll, intervals, blackouts, backoffs), parsed from `settings.schedule`.
    pub schedule: Policy,
    pub http: reqwest::Client,
    callback_url: String,
    discovered: Mutex<BTreeMap<String, (Instant, Discovered)>>,
}

/// The endpoints of one partner region, resolved (discovery fetched when needed).
#[derive(Debug, Clone)]
pub struct ResolvedRegion {
    pub region: String,
    pub oauth: OAuthEndpoints,
    /// Base URL of the data API.
    pub api_base_url: String,
    /// CareLink: the web API base (roles, profile, linked patients).
    pub web_base_url: Option<String>,
}

impl Partner {
    /// A call to this partner in `region` with `access_token`.
    pub fn call<'a>(&'a self, region: &'a ResolvedRegion, access_token: &'a str) -> crate::driver::Call<'a> {
        crate::driver::Call { http: &self.http, region, access_token }
    }

    pub fn display_name(&self) -> &str {
        &self.settings.display_name
    }

    pub fn redirect_mode(&self) -> RedirectMode {
        self.settings.redirect_mode
    }

    /// Region names, in configuration order.
    pub fn regions(&self) -> Vec<String> {
        self.settings.regions.keys().cloned().collect()
    }

    pub fn region_label(&self, region: &str) -> String {
        self.settings.regions.get(region).and_then(|r| r.display_name.clone()).unwrap_or_else(|| region.to_uppercase())
    }

    /// The region to use when the person did not choose: the configured default, or the only one.
    pub fn implied_region(&self) -> Option<String> {
        self.settings.default_region.clone().filter(|_| self.settings.regions.len() == 1).or_else(|| {
            (self.settings.regions.len() == 1).then(|| self.settings.regions.keys().next().cloned()).flatten()
        })
    }

    /// Resolve a region's endpoints (fetching and caching discovery documents).
    pub async fn resolve(&self, region: &str) -> Result<ResolvedRegion, PartnerError> {
        let r = self
            .settings
            .regions
            .get(region)
            .ok_or_else(|| PartnerError::Config(format!("unknown region {region:?}")))?;
        if r.discovery_url.is_some() {
            let d = self.discover(region, r).await?;
            return Ok(ResolvedRegion {
                region: region.to_owned(),
                oauth: OAuthEndpoints {
                    authorize_url: d.authorize_url,
                    token_url: d.token_url,
                    revocation_url: d.revocation_url,
                    client_id: self.settings.client_id.clone().unwrap_or(d.client_id),
                    client_secret: self.settings.client_secret.clone(),
                    client_auth: self.settings.client_auth,
                    scopes: if self.settings.scopes.is_empty() { d.scopes } else { self.settings.scopes.clone() },
                    pkce: self.settings.pkce,
                    redirect_uri: d.redirect_uri,
                    authorize_params: {
                        let mut p = self.settings.authorize_params.clone();
                        if let Some(aud) = d.audience {
                            p.entry("audience".into()).or_insert(aud);
                        }
                        p
                    },
                    expected_issuer: self.settings.expected_issuer.clone(),
                },
                api_base_url: d.cloud_base_url,
                web_base_url: Some(d.web_base_url),
            });
        }
        let need = |v: &Option<String>, what: &str| {
            v.clone().ok_or_else(|| {
                PartnerError::Config(format!("partners.{}.regions.{region}.{what} is missing", self.name))
            })
        };
        Ok(ResolvedRegion {
            region: region.to_owned(),
            oauth: OAuthEndpoints {
                authorize_url: need(&r.authorize_url, "authorize_url")?,
                token_url: need(&r.token_url, "token_url")?,
                revocation_url: r.revocation_url.clone(),
                client_id: self
                    .settings
                    .client_id
                    .clone()
                    .ok_or_else(|| PartnerError::Config(format!("partners.{}.client_id is missing", self.name)))?,
                client_secret: self.settings.client_secret.clone(),
                client_auth: self.settings.client_auth,
                scopes: self.settings.scopes.clone(),
                pkce: self.settings.pkce,
                redirect_uri: self.callback_url.clone(),
                authorize_params: self.settings.authorize_params.clone(),
                expected_issuer: self.settings.expected_issuer.clone(),
            },
            api_base_url: need(&r.api_base_url, "api_base_url")?,
            web_base_url: None,
        })
    }

    async fn discover(&self, region: &str, r: &RegionSettings) -> Result<Discovered, PartnerError> {
        let mut cache = self.discovered.lock().await;
        if let Some((at, d)) = cache.get(region)
            && at.elapsed() < DISCOVERY_TTL
        {
            return Ok(d.clone());
        }
        let url = r.discovery_url.as_deref().unwrap_or_default();
        let key = r.discovery_region.clone().unwrap_or_else(|| region.to_uppercase());
        let d = carelink::discover(&self.http, url, &key).await?;
        cache.insert(region.to_owned(), (Instant::now(), d.clone()));
        Ok(d)
    }
}

/// Every configured partner.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    partners: Arc<BTreeMap<ProviderName, Partner>>,
}

impl Registry {
    /// Build from configuration; `public_url` is where our callback is reachable
    /// (`{public_url}/v1/oauth/{provider}/redirect`).
    pub fn new(settings: &BTreeMap<String, PartnerSettings>, public_url: &str) -> Result<Self, PartnerError> {
        let mut partners = BTreeMap::new();
        for (name, s) in settings {
            let provider =
                ProviderName::parse(name).map_err(|e| PartnerError::Config(format!("partners.{name}: {e}")))?;
            let driver = data_driver(name).unwrap_or(&OAuthOnly);
            let schedule = Policy::parse(&s.schedule)
                .map_err(|e| PartnerError::Config(format!("partners.{name}.schedule: {e}")))?;
            let http = crate::http::client(s.user_agent.as_deref(), Duration::from_secs(s.timeout_secs));
            let callback_url = model::paths::callback_url(public_url, &provider);
            partners.insert(
                provider.clone(),
                Partner {
                    name: provider,
                    settings: s.clone(),
                    driver,
                    schedule,
                    http,
                    callback_url,
                    discovered: Mutex::new(BTreeMap::new()),
                },
            );
        }
        Ok(Self { partners: Arc::new(partners) })
    }

    pub fn get(&self, name: &ProviderName) -> Option<&Partner> {
        self.partners.get(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &ProviderName> {
        self.partners.keys()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Partner> {
        self.partners.values()
    }

    pub fn contains(&self, name: &ProviderName) -> bool {
        self.partners.contains_key(name)
    }
}
