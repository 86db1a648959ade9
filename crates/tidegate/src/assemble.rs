//! Building each crate's settings and domain objects from the loaded [`Settings`]: loading and
//! validating the files and the environment is `configuration`'s job; turning the result into a
//! partner registry, a poll worker, a mailer, store and API settings is this module's.

use std::time::Duration;

use secrecy::ExposeSecret;

use crate::configuration::{ConfigError, Settings, invalid};

impl Settings {
    pub fn db_settings(&self) -> store::DbSettings {
        store::DbSettings {
            max_connections: self.database.max_connections,
            acquire_timeout: Duration::from_secs(self.database.acquire_timeout_secs),
            statement_timeout: Duration::from_secs(self.database.statement_timeout_secs),
        }
    }

    pub fn http_settings(&self) -> api::HttpSettings {
        api::HttpSettings {
            body_limit_bytes: self.http.body_limit_bytes,
            request_timeout: Duration::from_secs(self.http.request_timeout_secs),
            connect_limit: api::RateLimit {
                per_minute: self.http.connect_rate_per_minute,
                burst: self.http.connect_burst,
            },
            // Checked when the settings were loaded; an entry broken since then trusts nothing.
            trusted_proxies: api::TrustedProxies::new(
                self.http.trusted_proxies.iter().filter_map(|p| p.parse().ok()).collect(),
            ),
        }
    }

    pub fn auth_settings(&self) -> Result<api::AuthSettings, ConfigError> {
        use jsonwebtoken::Algorithm;
        let keys = match (self.auth.algorithm.as_str(), &self.auth.jwks_url, &self.auth.public_key_pem) {
            ("HS256", _, _) => api::KeySource::Hs256(
                self.auth.jwt_secret.clone().ok_or_else(|| invalid("auth.jwt_secret", "missing"))?,
            ),
            (_, Some(url), _) => api::KeySource::Jwks {
                url: url.clone(),
                ttl: Duration::from_secs(self.auth.jwks_ttl_secs),
                min_refetch: Duration::from_secs(self.auth.jwks_min_refetch_secs),
            },
            (alg, None, Some(pem)) => api::KeySource::PublicPem {
                algorithm: if alg == "RS256" { Algorithm::RS256 } else { Algorithm::ES256 },
                pem: pem.clone(),
            },
            _ => return Err(invalid("auth.public_key_pem", "missing")),
        };
        Ok(api::AuthSettings {
            keys,
            issuer: self.auth.issuer.clone(),
            audience: self.auth.audience.clone(),
            leeway: Duration::from_secs(self.auth.leeway_secs),
        })
    }

    /// The token key ring; required by every role that touches tokens.
    pub fn key_ring(&self) -> Result<store::KeyRing, ConfigError> {
        let spec = self
            .token_keys
            .as_ref()
            .ok_or_else(|| invalid("token_keys", "missing: set TIDEGATE_TOKEN_KEYS to kid:base64(32 bytes)"))?;
        store::KeyRing::parse(spec).map_err(|e| invalid("token_keys", e.to_string()))
    }

    pub fn connect_options(&self) -> Result<sqlx::postgres::PgConnectOptions, ConfigError> {
        self.database.url.expose_secret().parse().map_err(|_| invalid("database.url", "is not a valid postgres:// URL"))
    }

    /// The partner registry this configuration describes.
    pub fn registry(&self) -> Result<partners::Registry, ConfigError> {
        partners::Registry::new(&self.partners, &self.public_url).map_err(|e| invalid("partners", e.to_string()))
    }

    pub fn outbox_settings(&self) -> scheduler::OutboxSettings {
        scheduler::OutboxSettings {
            batch: 50,
            lease: chrono::Duration::seconds(self.outbox.lease_secs),
            base_backoff: chrono::Duration::seconds(self.outbox.base_backoff_secs),
            max_backoff: chrono::Duration::seconds(self.outbox.max_backoff_secs),
            idle: Duration::from_millis(self.outbox.idle_ms),
            partner_names: self.partners.iter().map(|(k, p)| (k.clone(), p.display_name.clone())).collect(),
        }
    }

    /// Connections the polls may hold at once: `worker.poll_connections`, or the pool less a
    /// quarter of it (at least 2) for everything else.
    pub fn poll_connections(&self) -> usize {
        let pool = self.database.max_connections as usize;
        self.worker.poll_connections.unwrap_or_else(|| pool.saturating_sub((pool / 4).max(2)).max(1))
    }

    /// A warning when the in-flight limit is far beyond what the poll connections serve: polls
    /// then queue for connections (they wait, they do not fail, but they slow down).
    pub fn pool_warning(&self) -> Option<String> {
        let slots = self.poll_connections();
        (self.worker.max_in_flight > 4 * slots).then(|| {
            format!(
                "worker.max_in_flight = {} is more than 4 × the {slots} connections its polls may hold \
                 (database.max_connections = {}): polls will queue for connections; raise \
                 database.max_connections or lower worker.max_in_flight",
                self.worker.max_in_flight, self.database.max_connections
            )
        })
    }

    pub fn worker_settings(&self) -> scheduler::WorkerSettings {
        let w = &self.worker;
        scheduler::WorkerSettings {
            lease: chrono::Duration::seconds(w.lease_secs),
            batch: w.batch,
            max_in_flight: w.max_in_flight,
            poll_connections: self.poll_connections(),
            // A poll's database phase waits up to a quarter of its lease for a connection.
            connection_wait: std::time::Duration::from_secs(
                w.connection_wait_secs.unwrap_or((w.lease_secs / 4).max(1) as u64),
            ),
            idle: std::time::Duration::from_millis(w.idle_ms),
            shutdown_grace: std::time::Duration::from_secs(w.shutdown_grace_secs),
            history: chrono::Duration::hours(w.history_hours),
            breaker_threshold: w.breaker_threshold,
            breaker_min_cooldown: chrono::Duration::seconds(w.breaker_min_cooldown_secs),
            breaker_max_cooldown: chrono::Duration::seconds(w.breaker_max_cooldown_secs),
            public_url: self.public_url.clone(),
            reconnect_link_ttl: chrono::Duration::days(self.oauth.connection_request_ttl_days),
            rng_seed: w.rng_seed,
        }
    }

    /// The poll worker for this configuration (fails on an invalid partner configuration).
    pub fn poll_worker(
        &self,
        store: store::Store,
        clock: model::SharedClock,
    ) -> Result<scheduler::PollWorker, ConfigError> {
        if let Some(warning) = self.pool_warning() {
            tracing::warn!("{warning}");
        }
        let partners = self.registry()?;
        let poller = scheduler::Poller::new(store.clone(), partners.clone(), clock.clone(), self.poll_settings());
        Ok(scheduler::PollWorker::new(store, poller, partners, clock, self.worker_settings()))
    }

    pub fn poll_settings(&self) -> scheduler::PollSettings {
        let p = &self.poll;
        scheduler::PollSettings {
            fetch: partners::fetch::FetchSettings {
                backfill: chrono::Duration::days(p.backfill_days.max(0)),
                look_back: chrono::Duration::minutes(p.look_back_minutes.max(0)),
                devices_every: chrono::Duration::hours(p.devices_every_hours.max(1)),
            },
            refresh_skew: chrono::Duration::seconds(p.refresh_skew_secs.max(0)),
        }
    }

    pub fn mailer(&self) -> Result<Option<scheduler::Mailer>, ConfigError> {
        let Some(url) = &self.messages.smtp_url else { return Ok(None) };
        let from = self.messages.from.clone().unwrap_or_default();
        scheduler::Mailer::new(&scheduler::MailSettings { smtp_url: url.clone(), from })
            .map(Some)
            .map_err(|e| invalid("messages.smtp_url", e.to_string()))
    }

    /// Table upkeep: partitions ahead of the data; pruning past retention with a platform sink.
    pub fn upkeep(&self, store: store::Store, clock: model::SharedClock) -> scheduler::Upkeep {
        scheduler::Upkeep::new(
            store,
            clock,
            scheduler::UpkeepSettings {
                every: Duration::from_secs(600),
                behind: chrono::Duration::days(self.poll.backfill_days + 7),
                ahead: chrono::Duration::weeks(4),
                retention: self.sinks.tidepool().then(|| chrono::Duration::days(self.sinks.retention_days)),
            },
        )
    }

    /// The platform sink, when `sinks.enabled` names `tidepool`.
    pub fn platform_sink(&self) -> Result<Option<scheduler::outbox::platform_data::PlatformSink>, ConfigError> {
        if !self.sinks.tidepool() {
            return Ok(None);
        }
        let t = &self.sinks.tidepool;
        let (Some(url), Some(secret)) = (&t.url, &t.server_secret) else {
            return Err(invalid("sinks.tidepool", "url and server_secret are required"));
        };
        let registry = self.registry()?;
        let devices = registry.iter().map(|p| (p.name.as_str().to_owned(), p.driver.devices())).collect();
        Ok(Some(scheduler::outbox::platform_data::PlatformSink {
            service: partners::platform::DataService::new(partners::platform::DataServiceSettings {
                base_url: url.clone(),
                server_name: t.server_name.clone(),
                server_secret: secret.clone(),
                timeout: Duration::from_secs(t.timeout_secs),
            }),
            devices,
            batch: t.batch.min(partners::platform::MAX_BATCH),
            concurrency: t.concurrency,
        }))
    }

    /// The outbox deliverer: clinic reports, patient messages and, with the `tidepool` sink,
    /// platform deliveries.
    pub fn outbox_worker(
        &self,
        store: store::Store,
        clock: model::SharedClock,
    ) -> Result<scheduler::OutboxWorker, ConfigError> {
        Ok(scheduler::OutboxWorker::new(
            store,
            clock,
            self.clinic_directory(),
            self.mailer()?,
            self.platform_sink()?,
            self.outbox_settings(),
        ))
    }

    pub fn clinic_directory(&self) -> Option<partners::clinic::ClinicDirectory> {
        match (&self.clinic.url, &self.clinic.server_token) {
            (Some(url), Some(token)) => Some(partners::clinic::ClinicDirectory::new(
                url,
                token.clone(),
                Duration::from_secs(self.clinic.timeout_secs),
            )),
            _ => None,
        }
    }
}
