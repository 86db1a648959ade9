//! Patient messages by e-mail: the clinic service knows the address, the link is opened from its
//! sealed form only now. Without an SMTP transport a message is only logged (dev); an expired
//! request, a patient without an address or a link that cannot be opened is parked.

use std::collections::BTreeMap;

use model::{SharedClock, UserId};
use partners::clinic::ClinicDirectory;
use secrecy::ExposeSecret;
use store::Store;
use store::outbox::{Kind, Message, Outcome, PatientMessage, PatientMessageKind, Row};

use super::{Backoff, BoxFuture, Deliveries, Destination};
use crate::mail::Mailer;

#[derive(Debug)]
pub struct PatientMessages {
    store: Store,
    clock: SharedClock,
    clinic: Option<ClinicDirectory>,
    mailer: Option<Mailer>,
    /// What people call each partner ("Dexcom"), by provider name.
    partner_names: BTreeMap<String, String>,
    backoff: Backoff,
}

impl PatientMessages {
    pub fn new(
        store: Store,
        clock: SharedClock,
        clinic: Option<ClinicDirectory>,
        mailer: Option<Mailer>,
        partner_names: BTreeMap<String, String>,
        backoff: Backoff,
    ) -> Self {
        Self { store, clock, clinic, mailer, partner_names, backoff }
    }

    async fn send(&self, user: &UserId, message: &PatientMessage, attempts: i32) -> Outcome {
        let now = self.clock.now();
        let Some(mailer) = &self.mailer else {
            tracing::info!(user = %user, kind = ?message.kind, "patient message stored (no SMTP transport configured)");
            return Outcome::Delivered;
        };
        if message.expiration_time <= now {
            return Outcome::Parked { error: "the request expired before it could be sent".into() };
        }
        let (Some(clinic), Some(clinic_id)) = (&self.clinic, &message.clinic_id) else {
            return Outcome::Parked { error: "no clinic service to find the patient's address".into() };
        };
        let email = match clinic.patient_email(clinic_id, user).await {
            Ok(Some(e)) => e,
            Ok(None) => return Outcome::Parked { error: "the clinic has no e-mail address for this patient".into() },
            Err(e) => return self.backoff.retry(attempts, e.to_string()),
        };
        let link = match self.store.open_message_link(user, message) {
            Ok(l) => l,
            Err(e) => return Outcome::Parked { error: format!("the message link cannot be opened: {e}") },
        };
        let p = message.provider.as_str();
        let provider = self.partner_names.get(p).map(String::as_str).unwrap_or(p);
        let (subject, intro) = match message.kind {
            PatientMessageKind::ReconnectNeeded => (
                format!("Your {provider} account needs to be reconnected"),
                format!(
                    "We can no longer read your {provider} data: the connection was ended or expired. Reconnect so your data keeps arriving."
                ),
            ),
            PatientMessageKind::ReconnectRequest => (
                format!("Please reconnect your {provider} account"),
                format!("Your clinic asks you to reconnect your {provider} account so your data keeps arriving."),
            ),
            PatientMessageKind::ConnectionRequest => (
                format!("Your clinic asks you to connect your {provider} account"),
                format!("Your clinic asks you to connect your {provider} account so they can see your data."),
            ),
        };
        let until = message.expiration_time.format("%Y-%m-%d");
        let body = format!(
            "{intro}\n\nOpen this link to connect (it works until {until}):\n\n{}\n\nIf you did not expect this message, you can ignore it.\n",
            link.expose_secret()
        );
        match mailer.send(&email, &subject, body).await {
            Ok(()) => Outcome::Delivered,
            Err(e) => self.backoff.retry(attempts, e.to_string()),
        }
    }
}

impl Destination for PatientMessages {
    fn kind(&self) -> Kind {
        Kind::PatientMessage
    }

    fn deliver<'a>(&'a self, user: &'a UserId, rows: &'a [Row]) -> BoxFuture<'a, store::Result<Deliveries>> {
        Box::pin(async move {
            let mut out = Vec::new();
            for row in rows {
                let outcome = match &row.message {
                    Ok(Message::Patient(m)) => self.send(user, m, row.attempts).await,
                    Ok(other) => Outcome::Parked { error: format!("not a patient message: {:?}", other.kind()) },
                    Err(e) => Outcome::Parked { error: e.clone() },
                };
                out.push((vec![row.id], outcome));
            }
            Ok(out)
        })
    }
}
